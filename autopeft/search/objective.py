"""One trial, start to end: predict, skip if certainly infeasible, train through the rungs,
stop early when the pruner or the budget says so, and tell the study what happened.

Every outcome is recorded on the trial (user attributes) before ``study.tell``:

* complete: the measurements (``record``) and, with limits, ``trial.set_constraint``;
* skipped: state PRUNED, ``skipped: true``, ``prune_reason`` naming the broken limit, no
  training (the exact parameter count or the memory lower bound already broke it);
* pruned at a rung: state PRUNED, ``pruned_at_rung`` (1-based), ``pruned_at_step``,
  ``prune_reason`` and the ``rung_decisions`` that led there;
* stopped by the budget: state PRUNED, ``stopped_by_budget: true``, ``pruned_at_rung`` is
  the last rung it completed (0: none); its ``rung_scores`` keep what it reached;
* failed: state FAIL, ``fail_reason``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from autopeft.candidate import Candidate
from autopeft.runner import Bench, Outcome
from autopeft.search.budget import Budget, predict_seconds
from autopeft.search.constraints import Limits, Prediction, predict
from autopeft.search.pruner import decide_from_storage, rung_steps
from autopeft.train import total_steps


def out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, Python's MemoryError, or torch's CPU allocator giving up."""
    import torch

    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or any(
        s in str(exc) for s in ("out of memory", "can't allocate memory"))


def free_memory() -> None:
    """Give memory back before the next trial (the failed one's tensors are unreachable now)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class StopTrial(Exception):
    """Raised from the training callbacks to end a trial at a rung (pruner) or now (budget)."""

    def __init__(self, reason: str, rung: int, step: int, by_budget: bool = False):
        super().__init__(reason)
        self.reason, self.rung, self.step, self.by_budget = reason, rung, step, by_budget


def record(trial: Any, outcome: Outcome) -> None:
    """``trainable_params`` is the parameter objective: what a user stores
    (``build.count_stored``, = ``stored_params``); ``trained_params`` what trains."""
    r = outcome.result
    for key, value in {
        "trainable_params": outcome.trainable, "total_params": outcome.total,
        "trained_params": outcome.trained, "stored_params": outcome.trainable,
        "trainable_fraction": outcome.trainable / max(1, outcome.total),
        "peak_memory_bytes": r.peak_memory, "memory_method": r.memory_method,
        "wall_seconds": round(r.seconds, 3), "steps": r.steps, "samples": r.samples,
        "final_loss": r.final_loss, "rung_scores": {str(k): v for k, v in r.rung_scores.items()},
        "metrics": r.metrics,
    }.items():
        trial.set_user_attr(key, value)


@dataclass
class TrialRunner:
    """What every trial of one search shares."""

    study: Any
    bench: Bench
    skeleton: Any  # the base model on the meta device, for predictions
    pruner: str
    eta: int
    limits: Limits
    budget: Budget
    reporter: Any

    @property
    def total_steps(self) -> int:
        return total_steps(len(self.bench.train_data), self.bench.settings)

    def predicted_seconds(self) -> float | None:
        """How long the next full trial should take (None: nothing measured yet)."""
        return predict_seconds((t.user_attrs for t in self.study.get_trials(deepcopy=False)
                                if t.state.name in ("COMPLETE", "PRUNED")), self.total_steps)

    def run(self, trial: Any, candidate: Candidate) -> str:
        """Run ``trial`` (already sampled as ``candidate``) and tell the study; returns the state."""
        from optuna.trial import TrialState

        try:
            pred = predict(self.skeleton, self.bench.base.model, candidate, self.total_steps)
        except Exception as exc:  # cannot even be built: fails alone, the study goes on
            return self._fail(trial, f"{type(exc).__name__}: {exc}"[:500])
        for key, value in {"trainable_params": pred.trainable_params,
                           "trained_params": pred.trained_params,
                           "stored_params": pred.trainable_params,
                           "total_params": pred.total_params,
                           "trainable_fraction": pred.trainable_params / max(1, pred.total_params),
                           "predicted_memory_bytes": pred.memory_bytes}.items():
            trial.set_user_attr(key, value)
        broken = self.limits.violations(pred.trainable_params, pred.memory_bytes,
                                        "predicted memory (lower bound)")
        broken += self._ran_out_before(pred.memory_bytes)
        if broken:
            return self._skip(trial, pred, broken)
        # Without a pruner nothing is decided at rungs: score once, at the end.
        rungs = ([self.total_steps] if self.pruner == "none"
                 else rung_steps(self.total_steps, self.eta))
        trial.set_user_attr("rungs", rungs)
        exempt = "warm_start" in trial.user_attrs  # the recipes always finish
        scores: dict[str, float] = {}
        decisions: dict[str, Any] = {}

        def on_step(step: int, total: int, loss: float) -> None:
            self.reporter.step(step, total, loss)
            if self.budget.left() == 0:
                done = [s for s in rungs if str(s) in scores]
                raise StopTrial(f"budget ended at step {step}; kept its last completed rung "
                                f"({'step ' + str(done[-1]) if done else 'none'})",
                                len(done), step, by_budget=True)

        def on_eval(step: int, score: float) -> None:
            scores[str(step)] = score
            trial.set_user_attr("rung_scores", dict(scores))  # other workers see it now
            self.reporter.rung(trial.number, step, score)
            if step >= rungs[-1] or exempt or self.pruner == "none":
                return
            decision = decide_from_storage(self.study, self.pruner, trial.number, step, self.eta)
            decisions[str(step)] = decision.to_dict()
            trial.set_user_attr("rung_decisions", dict(decisions))
            if not decision.keep:
                raise StopTrial(f"{self.pruner} at step {step}: {decision.reason}",
                                rungs.index(step) + 1, step)

        start = time.perf_counter()
        try:
            outcome = self.bench.run(candidate, on_step=on_step, eval_at=rungs, on_eval=on_eval)
        except StopTrial as stop:
            return self._stopped(trial, pred, stop, time.perf_counter() - start)
        except KeyboardInterrupt:
            self._fail(trial, "interrupted")
            raise
        except Exception as exc:  # a bad candidate fails alone; the study goes on
            if out_of_memory(exc):
                free_memory()
                trial.set_user_attr("out_of_memory", True)
            return self._fail(trial, f"{type(exc).__name__}: {exc}"[:500])
        record(trial, outcome)
        r = outcome.result
        self._constrain(trial, outcome.trainable, r.peak_memory)
        broken = self.limits.violations(outcome.trainable, r.peak_memory, "measured peak memory")
        if broken:
            trial.set_user_attr("infeasible_reason", "; ".join(broken))
        self.study.tell(trial, [r.score, outcome.trainable, r.peak_memory])
        self.reporter.trial_finished(self.study, trial.number)
        return TrialState.COMPLETE.name

    def _ran_out_before(self, predicted_memory: int) -> list[str]:
        """Without --max-memory, a candidate predicted to need at least as much memory as one
        that already ran out is not tried blindly again."""
        if self.limits.max_memory_bytes is not None:
            return []
        floors = [t.user_attrs.get("predicted_memory_bytes") for t in
                  self.study.get_trials(deepcopy=False) if t.user_attrs.get("out_of_memory")]
        floors = [f for f in floors if f]
        if floors and predicted_memory >= min(floors):
            return [f"predicted memory {predicted_memory} B >= that of trial(s) that ran out of "
                    f"memory ({min(floors)} B)"]
        return []

    # -- the other endings -------------------------------------------------------------
    def _constrain(self, trial: Any, params: float, memory: float) -> None:
        for key, value in self.limits.values(params, memory).items():
            trial.set_constraint(key, value)

    def _fail(self, trial: Any, reason: str) -> str:
        from optuna.trial import TrialState

        trial.set_user_attr("fail_reason", reason)
        self.study.tell(trial, state=TrialState.FAIL)
        self.reporter.trial_failed(trial.number, reason)
        return TrialState.FAIL.name

    def _skip(self, trial: Any, pred: Prediction, broken: list[str]) -> str:
        from optuna.trial import TrialState

        reason = "skipped without training, infeasible: " + "; ".join(broken)
        self._constrain(trial, pred.trainable_params, pred.memory_bytes)
        trial.set_user_attr("skipped", True)
        trial.set_user_attr("prune_reason", reason)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.reporter.trial_pruned(trial.number, reason)
        return TrialState.PRUNED.name

    def _stopped(self, trial: Any, pred: Prediction, stop: StopTrial, seconds: float) -> str:
        from optuna.trial import TrialState

        self._constrain(trial, pred.trainable_params, pred.memory_bytes)
        for key, value in {"pruned_at_rung": stop.rung, "pruned_at_step": stop.step,
                           "prune_reason": stop.reason, "stopped_by_budget": stop.by_budget,
                           "steps": stop.step, "wall_seconds": round(seconds, 3),
                           "samples": stop.step * self.bench.settings.batch_size
                           * self.bench.settings.grad_accum}.items():
            trial.set_user_attr(key, value)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.reporter.trial_pruned(trial.number, stop.reason)
        return TrialState.PRUNED.name
