"""Tokenise once, batch with dynamic padding.

Tokenised splits are cached in memory and on disk (``<studies dir>/.cache``), keyed by the
tokenizer, the max length and a hash of the text, so every trial of a study, and a resumed
study, reuses them. The disk cache is only a speed-up: a folder that cannot be written
(read-only, disk full) means no disk cache, with a ``CacheWarning``; a damaged file
(truncated, garbage) is discarded and rebuilt. Training batches are length-grouped:
shuffled, then sorted by length within chunks of 50 batches, so padding stays small
without losing randomness.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from autopeft.kinds import answer_letter, kind_of
from autopeft.tasks import Rows, Task


@dataclass
class Encoded:
    """One tokenised split: unpadded ids per example, optional segment ids, labels.

    ``labels`` is one value per example (class, score, or the right choice), or, for
    language-model training, one array of target ids per example (-100: not scored)."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    labels: np.ndarray | list[np.ndarray]
    references: list[str] | None = None  # translation: target texts, for BLEU
    choice_ids: np.ndarray | None = None  # multiple choice: the token id of each answer letter

    @property
    def token_labels(self) -> bool:
        return isinstance(self.labels, list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, rows: np.ndarray) -> Encoded:
        """These rows only (e.g. the fixed validation subset scored at rungs)."""
        pick = [int(i) for i in rows]
        labels = ([self.labels[i] for i in pick] if isinstance(self.labels, list)
                  else self.labels[pick])
        return Encoded([self.input_ids[i] for i in pick],
                       None if self.token_type_ids is None else [self.token_type_ids[i] for i in pick],
                       labels, None if self.references is None else [self.references[i] for i in pick],
                       self.choice_ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))


_MEMORY: dict[str, Encoded] = {}


class CacheWarning(UserWarning):
    """The disk cache of tokenised data was skipped or rebuilt (the run goes on)."""


def _key(tokenizer: Any, task: Task, rows: Rows, max_length: int) -> str:
    h = hashlib.sha256()
    h.update(f"{type(tokenizer).__name__}|{getattr(tokenizer, 'name_or_path', '')}|"
             f"{len(tokenizer)}|{max_length}|{task.name}".encode())
    for col in (*task.text_columns, task.label_column):
        h.update("\x00".join(map(str, rows[col])).encode())
    return h.hexdigest()[:24]


def _save(path: str, enc: Encoded) -> None:
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    arrays = {"ids": np.concatenate(enc.input_ids), "lens": enc.lengths(), "labels": enc.labels}
    if enc.token_type_ids is not None:
        arrays["tt"] = np.concatenate(enc.token_type_ids)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _load(path: str, n_rows: int) -> Encoded | None:
    """The cached split, or None (the file was damaged: removed, to be rebuilt)."""
    try:
        with np.load(path) as z:
            lens, flat, labels = z["lens"], z["ids"], z["labels"]
            tt_flat = z["tt"] if "tt" in z else None
        if (len(lens) != n_rows or len(labels) != n_rows or int(lens.sum()) != len(flat)
                or (tt_flat is not None and len(tt_flat) != len(flat))):
            raise ValueError("sizes do not match")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(CacheWarning(f"discarded a damaged token cache file {path} "
                                   f"({type(exc).__name__}); tokenising again"), stacklevel=3)
        with contextlib.suppress(OSError):
            os.remove(path)
        return None
    splits = np.cumsum(lens)[:-1]
    tt = np.split(tt_flat, splits) if tt_flat is not None else None
    return Encoded(np.split(flat, splits), tt, labels)


def _store(cache_dir: str, path: str, enc: Encoded) -> None:
    """Write the cache file; a folder that cannot be written only costs the speed-up."""
    try:
        os.makedirs(cache_dir, exist_ok=True)
        _save(path, enc)
    except OSError as exc:
        warnings.warn(CacheWarning(f"cannot write the token cache in {cache_dir} "
                                   f"({exc.strerror or exc}); going on without a disk cache"),
                      stacklevel=3)


def encode(tokenizer: Any, task: Task, rows: Rows, max_length: int,
           cache_dir: str | None = None, for_training: bool = True) -> Encoded:
    """Tokenise ``rows`` (truncated to ``max_length``), reusing the memory or disk cache.

    Language-model tasks are cached in memory only (their labels are sequences)."""
    if task.is_lm:
        key = f"{_key(tokenizer, task, rows, max_length)}-{for_training}"
        if key not in _MEMORY:
            _MEMORY[key] = encode_lm(tokenizer, task, rows, max_length, for_training)
        return _MEMORY[key]
    key = _key(tokenizer, task, rows, max_length)
    if key in _MEMORY:
        return _MEMORY[key]
    path = os.path.join(cache_dir, f"tokens-{key}.npz") if cache_dir else None
    enc = _load(path, len(rows[task.label_column])) if path and os.path.isfile(path) else None
    if enc is None:
        texts = [rows[c] for c in task.text_columns]
        out = tokenizer(*texts, truncation=True, max_length=max_length)
        ids = [np.asarray(x, dtype=np.int64) for x in out["input_ids"]]
        tt = out.get("token_type_ids")
        tt = [np.asarray(x, dtype=np.int64) for x in tt] if tt is not None else None
        enc = Encoded(ids, tt, np.asarray(rows[task.label_column]))
        if path:
            _store(cache_dir, path, enc)
    _MEMORY[key] = enc
    return enc


def encode_lm(tokenizer: Any, task: Task, rows: Rows, max_length: int, for_training: bool) -> Encoded:
    """Language-model encodings, by the task kind's switches (``kinds.TaskKind``).

    * seq2seq (translation): prefixed source -> target ids; references kept for BLEU.
    * otherwise the kind's prompt + answer (+ eos where ``answer_eos``, causal-lm); only the
      answer is scored (-100 elsewhere). Where ``scores_choices`` (multiple choice: the
      prompt lists the choices and ends with "Answer:", the answer is the right letter),
      evaluation keeps the prompt and the answer index, and scores the letters' next-token
      log-likelihoods.
    The prompt is cut from the left when too long, so its end (and the answer) stays."""
    ids: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    kind = kind_of(task)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if kind.seq2seq:
        src = tokenizer([task.prefix + t for t in rows[task.text_columns[0]]], truncation=True,
                        max_length=max_length)["input_ids"]
        tgt = tokenizer(text_target=rows[task.label_column], truncation=True,
                        max_length=max_length)["input_ids"]
        return Encoded([np.asarray(x, dtype=np.int64) for x in src], None,
                       [np.asarray(x, dtype=np.int64) for x in tgt], list(rows[task.label_column]))
    prompts, answers = kind.prompts_answers(task, rows)
    prompt_only = kind.scores_choices and not for_training
    end = [eos] if kind.answer_eos and eos is not None else []
    letter_ids = np.asarray([tokenizer(answer_letter(i), add_special_tokens=False)["input_ids"][-1]
                             for i in range(task.num_labels)], dtype=np.int64)
    for prompt, answer in zip(prompts, answers):
        p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if prompt_only:
            ids.append(np.asarray(p[-max_length:], dtype=np.int64))
            continue
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        a = (a + end)[:max_length - 1]
        p = p[-(max_length - len(a)):]
        ids.append(np.asarray(p + a, dtype=np.int64))
        labels.append(np.asarray([-100] * len(p) + a, dtype=np.int64))
    if prompt_only:
        return Encoded(ids, None, np.asarray(rows[task.label_column]), choice_ids=letter_ids)
    return Encoded(ids, None, labels)


def train_order(enc: Encoded, batch_size: int, seed: int) -> list[np.ndarray]:
    """Index batches for one epoch: shuffled, length-grouped within chunks, batches shuffled."""
    rng = random.Random(seed)
    idx = list(range(len(enc)))
    rng.shuffle(idx)
    lengths = enc.lengths()
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(idx), chunk):
        part = sorted(idx[start:start + chunk], key=lambda i: lengths[i])
        batches += [np.asarray(part[i:i + batch_size]) for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def eval_order(enc: Encoded, batch_size: int) -> list[np.ndarray]:
    """Index batches sorted by length: least padding, order does not matter for scoring."""
    idx = np.argsort(enc.lengths(), kind="stable")
    return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]


def collate(enc: Encoded, batch: np.ndarray, pad_id: int) -> dict[str, Any]:
    """Pad one batch to its longest example."""
    import torch

    seqs = [enc.input_ids[i] for i in batch]
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    if enc.token_labels:  # per-token targets, padded with -100 (not scored)
        seq = [enc.labels[i] for i in batch]
        labels = np.full((len(seq), max(len(s) for s in seq)), -100, dtype=np.int64)
        for row, s in enumerate(seq):
            labels[row, :len(s)] = s
    else:  # float for regression (MSE loss), class indices otherwise
        labels = enc.labels[batch]
        labels = labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64)
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
           "labels": torch.from_numpy(labels)}
    if enc.token_type_ids is not None:
        tt = np.zeros((len(seqs), width), dtype=np.int64)
        for row, i in enumerate(batch):
            tt[row, :len(enc.token_type_ids[i])] = enc.token_type_ids[i]
        out["token_type_ids"] = torch.from_numpy(tt)
    return out
