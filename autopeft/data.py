"""Tokenise once, batch with dynamic padding.

Tokenised splits are cached in memory and on disk (``<studies dir>/.cache``), keyed by the
tokenizer, the max length and a hash of the text, so every trial of a study, and a resumed
study, reuses them. Training batches are length-grouped: shuffled, then sorted by length
within chunks of 50 batches, so padding stays small without losing randomness.
"""
from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from autopeft.tasks import Rows, Task


@dataclass
class Encoded:
    """One tokenised split: unpadded ids per example, optional segment ids, labels."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))


_MEMORY: dict[str, Encoded] = {}


def _key(tokenizer: Any, task: Task, rows: Rows, max_length: int) -> str:
    h = hashlib.sha256()
    h.update(f"{type(tokenizer).__name__}|{getattr(tokenizer, 'name_or_path', '')}|"
             f"{len(tokenizer)}|{max_length}|{task.name}".encode())
    for col in task.text_columns:
        h.update("\x00".join(rows[col]).encode())
    h.update(np.asarray(rows[task.label_column]).tobytes())
    return h.hexdigest()[:24]


def _save(path: str, enc: Encoded) -> None:
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    arrays = {"ids": np.concatenate(enc.input_ids), "lens": enc.lengths(), "labels": enc.labels}
    if enc.token_type_ids is not None:
        arrays["tt"] = np.concatenate(enc.token_type_ids)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache


def _load(path: str) -> Encoded:
    with np.load(path) as z:
        splits = np.cumsum(z["lens"])[:-1]
        ids = np.split(z["ids"], splits)
        tt = np.split(z["tt"], splits) if "tt" in z else None
        return Encoded(ids, tt, z["labels"])


def encode(tokenizer: Any, task: Task, rows: Rows, max_length: int,
           cache_dir: str | None = None) -> Encoded:
    """Tokenise ``rows`` (truncated to ``max_length``), reusing the memory or disk cache."""
    key = _key(tokenizer, task, rows, max_length)
    if key in _MEMORY:
        return _MEMORY[key]
    path = os.path.join(cache_dir, f"tokens-{key}.npz") if cache_dir else None
    if path and os.path.isfile(path):
        enc = _load(path)
    else:
        texts = [rows[c] for c in task.text_columns]
        out = tokenizer(*texts, truncation=True, max_length=max_length)
        ids = [np.asarray(x, dtype=np.int64) for x in out["input_ids"]]
        tt = out.get("token_type_ids")
        tt = [np.asarray(x, dtype=np.int64) for x in tt] if tt is not None else None
        enc = Encoded(ids, tt, np.asarray(rows[task.label_column]))
        if path:
            os.makedirs(cache_dir, exist_ok=True)
            _save(path, enc)
    _MEMORY[key] = enc
    return enc


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
    labels = enc.labels[batch]  # float for regression (MSE loss), class indices otherwise
    labels = labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64)
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
           "labels": torch.from_numpy(labels)}
    if enc.token_type_ids is not None:
        tt = np.zeros((len(seqs), width), dtype=np.int64)
        for row, i in enumerate(batch):
            tt[row, :len(enc.token_type_ids[i])] = enc.token_type_ids[i]
        out["token_type_ids"] = torch.from_numpy(tt)
    return out
