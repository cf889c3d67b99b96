"""One worker's bench: the base model and tokenised data loaded once, a candidate trained
on a fresh copy each time. Used by the search, by ``export --train`` and by benchmarks.
No optuna here."""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from autopeft.build import build, count_stored, count_total, count_trainable
from autopeft.candidate import Candidate
from autopeft.checkpoint import Checkpoint, Writer, load, settings_dict
from autopeft.checks import at_least, check_max_length, check_types
from autopeft.data import CacheWarning, Encoded, encode
from autopeft.models import BaseModel, load_base
from autopeft.settings import DataSettings  # noqa: F401  (re-exported)
from autopeft.tasks import Rows, Task, load_task
from autopeft.evaluation import make_evaluator
from autopeft.memory import build_peak
from autopeft.train import (TrainResult, TrainSettings, bf16_base, resolve_device, scored,
                            total_steps, train)


def _timed(evaluator: Callable[[Any], dict[str, float]],
           spent: list[float]) -> Callable[[Any], dict[str, float]]:
    """``evaluator``, adding its seconds to ``spent[0]``. Why: a run continued for n more
    steps pays n steps and one scoring, so the budget needs a trial's scoring apart from its
    steps (a 45-step trial on MiniLM/SST-2 spent 1.8 of its 4.7 s scoring)."""
    def run(model: Any) -> dict[str, float]:
        start = time.perf_counter()
        try:
            return evaluator(model)
        finally:
            spent[0] += time.perf_counter() - start
    return run


@dataclass(frozen=True)
class Fidelity:
    """How long one run trains and what its rungs score (the search's plan decides).

    ``schedule_steps``: the learning-rate schedule's length (None: the data's epochs);
    ``stop_at``: stop after this many steps (None: the schedule's end); ``rung_rows``: score
    the rungs before the end on this many validation rows (a fixed seeded subset; None: all).
    """

    schedule_steps: int | None = None
    stop_at: int | None = None
    rung_rows: int | None = None
    # What the run's checkpoints may do (``checkpoint.save``): keep one at the run's end
    # (only a refit reads it), and the bytes the checkpoint folder may hold (None: no cap).
    keep_end: bool = True
    checkpoint_space: int | None = None

    def __post_init__(self) -> None:
        check_types(self)
        at_least(self, 1, ["schedule_steps", "stop_at", "rung_rows"])


def seeded_subset(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``k`` of ``range(n)``, the same for every process and trial (sorted)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(k, n), replace=False))


@dataclass
class Outcome:
    result: TrainResult
    trainable: int  # the parameter objective: parameters stored (``build.count_stored``)
    total: int
    model: Any  # the trained model, for export
    trained: int | None = None  # parameters that train (``build.count_trainable``)
    rung_scores: dict[int, float] = field(default_factory=dict)  # step -> score, the end's too


@dataclass
class Bench:
    base: BaseModel
    task: Task
    train_data: Encoded
    eval_data: Encoded
    settings: TrainSettings
    extra_eval: dict[str, Encoded] = field(default_factory=dict)  # e.g. MNLI mismatched
    notes: list[str] = field(default_factory=list)  # what loading the data wants said

    @classmethod
    def load(cls, model: str, data: DataSettings, settings: TrainSettings,
             cache_dir: str | None = None, trust_remote_code: bool = False) -> Bench:
        task_data = load_task(data.task, data.data_dir, data.train_samples, data.eval_samples,
                              data.subset_seed, data.own())
        base = load_base(model, task_data.task, trust_remote_code)
        check_max_length(base.tokenizer, task_data.task, settings.max_length)

        def encode_split(rows: Rows, for_training: bool = False) -> Encoded:
            return encode(base.tokenizer, task_data.task, rows, settings.max_length, cache_dir,
                          for_training)

        with warnings.catch_warnings(record=True) as caught:  # cache trouble: said, not fatal
            warnings.simplefilter("always", CacheWarning)
            bench = cls(base, task_data.task, encode_split(task_data.train, True),
                        encode_split(task_data.validation), settings,
                        {name: encode_split(rows) for name, rows in task_data.extra.items()},
                        [task_data.note] if task_data.note else [])
        for w in caught:
            if issubclass(w.category, CacheWarning) and str(w.message) not in bench.notes:
                bench.notes.append(str(w.message))
            elif not issubclass(w.category, CacheWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return bench

    def build(self, candidate: Candidate, schedule_steps: int | None = None) -> Any:
        """The candidate on a fresh copy; ``schedule_steps``: how long it will train (methods
        with schedules, e.g. AdaLoRA; default the data's epochs). On CUDA ``run`` keeps the
        base on the device, so the copy is made there (no host copy, no host-to-device
        transfer per trial); on CPU, as ever. A bf16 run copies its frozen weights in bf16
        (``build``): no fp32 copy of the whole model is made."""
        import torch

        return build(self.base.model, candidate,
                     schedule_steps or total_steps(len(self.train_data), self.settings),
                     frozen_dtype=torch.bfloat16 if bf16_base(self.settings) else None,
                     device=self.settings.device)

    def run(self, candidate: Candidate,
            on_step: Callable[[int, int, float], None] | None = None,
            eval_at: Sequence[int] = (),
            on_eval: Callable[[int, float], None] | None = None,
            fidelity: Fidelity | None = None,
            resume: str | Checkpoint | None = None,
            checkpoint: str | None = None) -> Outcome:
        """Train ``candidate`` on a fresh copy of the base model and score it (``fidelity``:
        how long, and on what the rungs in ``eval_at`` are scored). Everything random comes
        from ``candidate.seed``: the new head and the methods' tensors (``build``), dropout
        and the data order (``train``).

        ``resume`` (a checkpoint or its path) continues that run from its step instead of
        step 0: the same candidate, settings and schedule, or ``ValueError``; the rungs it
        had passed keep their scores and are not scored again. ``checkpoint`` (a path) keeps
        the run's latest checkpoint there, written at each rung in ``eval_at`` (once it has
        passed) and at the end (``fid.keep_end``), replacing the previous one, on a background
        thread (``checkpoint.Writer``: the run waits only for its last), within
        ``fid.checkpoint_space``. This is the one entry point for
        continuing a run (a promoted trial, a resumed study, the refit); the result's
        ``resumed_from`` says where it really started (0 for methods that cannot continue:
        ``checkpoint.continuable``)."""
        fid = fidelity or Fidelity()
        device = resolve_device(self.settings.device)
        if device.type == "cuda":  # the frozen base stays there: copied at device speed
            self.base.model.to(device)
        n_steps = fid.schedule_steps or total_steps(len(self.train_data), self.settings)
        end = min(n_steps, fid.stop_at or n_steps)
        start = load(resume) if isinstance(resume, str) else resume
        if start is not None:
            why = start.mismatch(candidate.to_dict(), settings_dict(self.settings), n_steps)
            if why:
                raise ValueError(f"cannot continue from checkpoint {resume}: {why}")
        with build_peak(device) as built:  # the copy and casts: part of a trial's memory
            model = self.build(candidate, fid.schedule_steps)
        stored, trained, total = count_stored(model), count_trainable(model), count_total(model)
        tok = self.base.tokenizer
        scoring = [0.0]  # seconds spent scoring (``TrainResult.scoring_seconds``)
        evaluate = _timed(make_evaluator(self.task, self.eval_data, self.settings, tok, device),
                          scoring)
        evaluate_rung = evaluate
        if fid.rung_rows and fid.rung_rows < len(self.eval_data):
            rows = seeded_subset(len(self.eval_data), fid.rung_rows)
            evaluate_rung = _timed(make_evaluator(self.task, self.eval_data.subset(rows),
                                                  self.settings, tok, device), scoring)
        passed = start.rung_scores if start else {}  # a continued run's rungs keep their scores
        rung_scores = {s: v for s, v in passed.items() if s in eval_at}

        def at_rung(step: int, model: Any) -> None:  # part-way: on the rungs' rows
            if step in eval_at:
                rung_scores[step] = scored(model, evaluate_rung)["score"]
                if on_eval:
                    on_eval(step, rung_scores[step])  # may raise: pruned, or the budget ended

        writer = Writer()  # the file is written while training goes on

        def keep(state: Checkpoint) -> None:  # what identifies the run goes with it
            writer.submit(replace(state, candidate=candidate.to_dict(),
                                  settings=settings_dict(self.settings),
                                  rung_scores=dict(rung_scores)),
                          checkpoint, fid.checkpoint_space)

        saves = {s for s in {*eval_at, end} if s < end or fid.keep_end}
        try:
            result = train(model, self.train_data, evaluate, candidate.learning_rate,
                           candidate.seed, self.settings, tok.pad_token_id, on_step,
                           fid.schedule_steps, fid.stop_at, at_rung, resume=start,
                           save_at=saves, save=keep if checkpoint else None,
                           build_bytes=built[0], after_step_at=set(eval_at))
        finally:
            writer.wait()  # a run ends with its checkpoint on disk: the next may read it
        rung_scores[result.steps] = result.score  # the end: on every validation row
        result.scoring_seconds = round(scoring[0], 3)
        if on_eval and result.steps in eval_at:
            on_eval(result.steps, result.score)
        model.eval()
        for split, enc in self.extra_eval.items():
            extra = make_evaluator(self.task, enc, self.settings, tok, device)(model)
            result.metrics.update({f"{split}/{k}": v for k, v in extra.items()})
        return Outcome(result, stored, total, model, trained, rung_scores)
