"""One trial, start to end: predict, skip if certainly infeasible, train through the rungs,
stop early when the pruner or the budget says so, and tell the study what happened.

Every outcome is recorded on the trial (user attributes) before ``study.tell``:

* complete: the measurements (``record``) and, with limits, ``trial.set_constraint``;
* skipped: state PRUNED, ``skipped: true``, ``prune_reason`` naming the broken limit, no
  training (the exact parameter count or the memory lower bound already broke it);
* pruned at a rung: state PRUNED, ``pruned_at_rung`` (1-based), ``pruned_at_step``,
  ``prune_reason`` and the ``rung_decisions`` that led there;
* not learning: state PRUNED, ``not_learning: true``, ``pruned_at_step`` (the loss check's
  step, ``search/losscheck.py``), ``pruned_at_rung`` (the rungs it completed) and
  ``prune_reason`` (``not learning: loss ...``); a rung before the loss has moved off its
  start is scored but decides nothing (``rung_decisions`` says so);
* stopped by the budget: state PRUNED, ``stopped_by_budget: true``, ``pruned_at_rung`` is
  the last rung it completed (0: none); its ``rung_scores`` keep what it reached, and its
  checkpoint stays, so a later trial of the same candidate continues it;
* a duplicate: state PRUNED, ``duplicate_of`` (a complete or running trial with the same
  candidate and seed: the same score, so it is not trained again);
* failed: state FAIL, ``fail_reason``.

How long a trial trains and where its rungs are come from the study's plan
(``search/plan.py``); the warm-start recipes go through the same rungs as every trial.
Each trial keeps its run's checkpoint at its latest rung (``search/continuation.py``) and
records ``steps`` (the fidelity reached) and ``steps_trained`` (the steps it ran itself:
fewer when it continued an earlier trial's checkpoint, ``continued_from``).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft.candidate import Candidate
from autopeft.checkpoint import checkpoint_bytes
from autopeft.devices import cuda_broken
from autopeft.errors import UserError
from autopeft.protocols import Reporter, Trainer
from autopeft.results import (CANDIDATE, CHECKPOINT_DROPPED, CONTINUED_FROM, CONTINUES,
                              DUPLICATE_OF, FAIL_REASON, INTERRUPTED, NOT_STARTED, PAUSED,
                              PREDICTED_MEMORY, PROMOTES, RUNG_DECISIONS, RUNG_SCORES,
                              SCORING_SECONDS, SETUP_SECONDS, STEPS, STEPS_TRAINED,
                              STOPPED_BY_BUDGET, dropped_checkpoints, never_trained)
from autopeft.runner import Fidelity, Outcome
from autopeft.search.budget import Phase, predict_part, predict_seconds
from autopeft.search.constraints import Limits, Prediction, predict
from autopeft.search.continuation import Checkpoints, drop_superseded, make_room
from autopeft.search.losscheck import LossCheck, chance_loss
from autopeft.search.plan import (SEPARATION_TRIALS, Plan, candidate_seconds,
                                   continuation_seconds, lengthened, refit_shortfall, separates)
from autopeft.search.pruner import Pruner, decide_from_storage, rung_table
from autopeft.search.storage import disk_problem
from autopeft.train import maybe_bf16_base

if TYPE_CHECKING:
    from optuna.trial import Trial
    from optuna import Study  # only for annotations: optuna stays a lazy import


def out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, Python's MemoryError, or torch's CPU allocator giving up."""
    import torch

    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or any(
        s in str(exc) for s in ("out of memory", "can't allocate memory"))


def free_memory() -> None:
    """Give memory back before the next trial. Call it after the ``except`` block: inside it
    the traceback still holds the failed trial's frames, and with them its model."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# Out-of-memory failures that block a larger candidate: one alone may be a neighbour's doing
# on a shared GPU or the allocator's fragmentation, so it blocks nothing by itself.
OOM_REPEATS = 2


ONE_RUN_GRACE = 0.25  # of the budget: how far the only run of a one-run plan may overrun it


class StopTrial(Exception):
    """Raised from the training callbacks to end a trial at a rung (pruner) or now (budget)."""

    def __init__(self, reason: str, rung: int, step: int, by_budget: bool = False,
                 paused: bool = False):
        super().__init__(reason)
        self.reason, self.rung, self.step, self.by_budget = reason, rung, step, by_budget
        self.paused = paused  # its checkpoint is kept: a later rung table may promote it

    @property
    def keep_checkpoint(self) -> bool:
        """``train.train`` saves the run's checkpoint at the step that raised this."""
        return self.paused


def record(trial: Trial, outcome: Outcome) -> None:
    """``trainable_params`` is the parameter objective: what a user stores
    (``build.count_stored``, = ``stored_params``); ``trained_params`` what trains."""
    r = outcome.result
    for key, value in {
        "trainable_params": outcome.trainable, "total_params": outcome.total,
        "trained_params": outcome.trained, "stored_params": outcome.trainable,
        "trainable_fraction": outcome.trainable / max(1, outcome.total),
        "peak_memory_bytes": r.peak_memory, "memory_method": r.memory_method,
        "scoring_peak_memory_bytes": r.scoring_peak_memory,
        "wall_seconds": round(r.seconds, 3), SCORING_SECONDS: r.scoring_seconds,
        SETUP_SECONDS: r.setup_seconds,
        STEPS: r.steps, "samples": r.samples,
        STEPS_TRAINED: r.steps - r.resumed_from, CONTINUED_FROM: r.resumed_from,
        "final_loss": r.final_loss, RUNG_SCORES: {str(k): v for k, v in outcome.rung_scores.items()},
        "metrics": r.metrics,
    }.items():
        trial.set_user_attr(key, value)


@dataclass
class TrialRunner:
    """What every trial of one search shares."""

    study: Study
    bench: Trainer  # runner.Bench, or isolation.IsolatedBench (a child process)
    skeleton: Any  # the base model on the meta device, for predictions
    pruner: Pruner
    limits: Limits
    budget: Phase  # the search phase: no trial starts, and none trains, past its end
    reporter: Reporter
    plan: Plan
    rung_noise: float = 0.0  # scores at an intermediate rung closer than this are ties
    checkpoints: Checkpoints | None = None  # None: runs keep no checkpoint, none continues
    loss_check: bool = True  # stop a candidate whose training loss has not moved (losscheck)
    eta: int = 3  # the ladder's factor: a plan that lengthens goes one rung up
    # The complete trials whose checkpoints the refit continues (its front): the others'
    # are deleted as each trial completes. None: nothing reads a complete trial's.
    refit_readers: Callable[[Study], set[int]] | None = None

    @property
    def rungs(self) -> list[int]:
        # Without a pruner nothing is decided at rungs: score once, at the end.
        return list(self.plan.rungs) if self.pruner.prunes else [self.plan.trial_steps]

    @property
    def fidelity(self) -> Fidelity:
        return Fidelity(schedule_steps=self.plan.schedule_steps, stop_at=self.plan.trial_steps,
                        rung_rows=self.plan.rung_eval_rows, keep_end=self._refit_reads(),
                        checkpoint_space=self.checkpoints.space if self.checkpoints else None)

    def _refit_reads(self) -> bool:
        """Whether the refit continues complete trials' checkpoints (it trains longer)."""
        return self.refit_readers is not None and self.plan.refit_steps > self.plan.trial_steps

    @property
    def _schedule(self) -> int:
        return int(self.plan.schedule_steps or self.plan.trial_steps)

    def _trained(self) -> list[dict[str, Any]]:
        return [t.user_attrs for t in self.study.get_trials(deepcopy=False)
                if t.state.name in ("COMPLETE", "PRUNED")]

    def _probe_rate(self) -> float | None:
        """Seconds a step of a whole trial costs by the probe's measurements (the plan's rung
        scorings included; on a busy slot, at the slot's speed): ``predict_seconds``'s prior."""
        plan = self.plan
        if plan.costs is None or not plan.trial_steps:
            return None
        alone = candidate_seconds(plan.trial_steps, 1, plan.costs, rungs=plan.rungs)
        return alone / plan.trial_steps / (plan.throughput.speed if plan.throughput else 1.0)

    def predicted_seconds(self, trained: list[dict[str, Any]] | None = None,
                          candidate: Candidate | None = None) -> float | None:
        """How long the next full trial should take (None: nothing measured yet), from
        ``trained`` (default: the study's trained trials); of ``candidate`` once sampled."""
        costs = self.plan.costs
        return predict_seconds(self._trained() if trained is None else trained,
                               self.plan.trial_steps, self._probe_rate(),
                               row_tokens=costs.row_tokens if costs else 0.0,
                               label=candidate.label if candidate else None,
                               input_tokens=candidate.input_tokens if candidate else 0)

    def time_needed(self, candidate: Candidate | None = None) -> float | None:
        """What starting another trial costs the search phase: the trial, plus whatever the
        refit's members need beyond the share the plan kept for them, at the measured rate
        (``plan.refit_shortfall``). Why: the plan's share comes from the probe's costs; where
        trials run slower than it said, a search that fills its phase leaves the refit too
        little to continue even its first member (MiniLM/SST-2 at R = 3: a fourth trial
        fitted its phase, and the refit that needed 23 s found 19). The member's time is the
        refit's own estimate (``plan.continuation_seconds``: its steps at the trials' rate,
        their setup left out), of a typical trial; the trial, ``candidate``'s once it is
        sampled (``predict_seconds``)."""
        plan, trained = self.plan, self._trained()
        trial = self.predicted_seconds(trained, candidate)
        if trial is None or plan.refit_steps <= plan.trial_steps:
            return trial
        typical = self.predicted_seconds(trained) if candidate is not None else trial
        if typical is None:  # a first candidate, from the probe: nothing to size members by
            return trial
        member = continuation_seconds(typical, predict_part(trained), plan.trial_steps,
                                      plan.refit_steps - plan.trial_steps,
                                      predict_part(trained, SETUP_SECONDS))
        return trial + refit_shortfall(plan, member)

    def promote(self) -> int | None:
        """Queue the continuation of one paused trial that its rung's table, grown since it
        paused, now keeps (``decide_from_storage`` again at its rung); returns its number.
        Asynchronous successive halving in promotion mode (ASHA, Li et al. 2020; Syne Tune's
        promotion type): a trial stopped on a thin table comes back when it ranks, so the
        decisions do not depend on the order trials arrived in. The queued trial samples the
        same candidate and continues the paused one's checkpoint (``_continuation``); the
        earliest-paused first. A trial the loss check stopped never comes back."""
        trials = self.study.get_trials(deepcopy=False)
        later: dict[str, int] = {}  # candidate -> the last trial that took it up
        for t in trials:
            if CANDIDATE in t.user_attrs and not never_trained(t.user_attrs):
                later[repr(t.user_attrs[CANDIDATE])] = t.number
        taken = {t.user_attrs.get(PROMOTES) for t in trials if not never_trained(t.user_attrs)}
        paused_at = {t.number: t.user_attrs.get("pruned_at_step") for t in trials}
        dropped = dropped_checkpoints(self.study.user_attrs)
        tables: dict[int, list] = {}  # one read of the storage, one table per rung
        for t in trials:
            a = t.user_attrs
            if (t.state.name != "PRUNED" or not a.get(PAUSED) or t.number in taken
                    or later.get(repr(a.get(CANDIDATE))) != t.number):  # taken up since
                continue
            if t.number in dropped:  # its checkpoint went under the disk cap: never promoted
                continue
            step = int(a["pruned_at_step"])
            if a.get(PROMOTES) is not None and paused_at.get(a[PROMOTES]) == step:
                continue  # promoted from this rung once and stopped at it again: at most once
            if step not in tables:
                tables[step] = rung_table(trials, step)
            decision = self.pruner.decide(tables[step], t.number, self.rung_noise)
            if decision.keep:
                self.study.enqueue_trial(dict(t.params), user_attrs={
                    PROMOTES: t.number, CONTINUES: t.number}, skip_if_exists=False)
                self.reporter.note(f"trial {t.number} ({a.get('label', '?')}) promoted at step "
                                   f"{a['pruned_at_step']}: {decision.reason}")
                return t.number
        return None

    def check_separation(self) -> None:
        """Once a study holds ``SEPARATION_TRIALS`` scores at its plan's first rung, judge
        whether that rung tells candidates apart (``plan.separates``, against the rung
        noise); where it does not, the plan moves to fewer, longer trials
        (``plan.lengthened``), stored with the study and said in a note, rather than spend
        the budget ranking noise. Once per study; a plan the user set (``--rungs``,
        ``--trial-steps``) is kept."""
        plan, attrs = self.plan, self.study.user_attrs
        if plan.source == "override" or "separation" in attrs or plan.trial_steps >= plan.max_steps:
            return
        first = plan.rungs[0]
        scores = [float(s) for a in self._trained()
                  if (s := (a.get(RUNG_SCORES) or {}).get(str(first))) is not None]
        if len(scores) < SEPARATION_TRIALS:
            return
        verdict = {"rung": first, "trials": len(scores), "low": min(scores), "high": max(scores),
                   "noise": self.rung_noise, "separated": separates(scores, self.rung_noise)}
        self.study.set_user_attr("separation", verdict)
        if verdict["separated"]:
            return
        why = (f"the first rung (step {first}) did not separate {len(scores)} trials (scores "
               f"{min(scores):.3f}-{max(scores):.3f}, within twice the rung noise "
               f"{self.rung_noise:.3f})")
        longer = lengthened(plan, self.eta, why)
        if longer is not None:
            self.plan = longer
            self.study.set_user_attr("plan", longer.to_dict())
            self.reporter.note(longer.notes[-1])

    def duplicate_of(self, trial: Trial, candidate: Candidate) -> int | None:
        """A trial of this study that trained or is training the same candidate (same seed):
        it would score the same, so this one is not trained again. A trial the budget cut
        short does not count (it may get further now); of two running at once, the earlier
        one trains."""
        mine = candidate.to_dict()
        for t in self.study.get_trials(deepcopy=False):
            a = t.user_attrs
            if t.number == trial.number or a.get(CANDIDATE) != mine or a.get(DUPLICATE_OF) is not None:
                continue
            # Two processes that drew the same candidate at once: the later trial gives way.
            # A trial cut short by the budget or paused at a rung may get further now.
            if t.state.name == "COMPLETE" or (t.state.name == "RUNNING" and t.number < trial.number) or (
                    t.state.name == "PRUNED" and not a.get(STOPPED_BY_BUDGET) and not a.get(PAUSED)):
                return t.number
        return None

    def run(self, trial: Trial, candidate: Candidate) -> str:
        """Run ``trial`` (already sampled as ``candidate``) and tell the study; returns the state."""
        from optuna.trial import TrialState

        same = self.duplicate_of(trial, candidate)
        if same is not None:
            return self._duplicate(trial, same)
        try:
            pred = predict(self.skeleton, self.bench.base.model, candidate,
                           self.plan.schedule_steps, maybe_bf16_base(self.bench.settings))
        except Exception as exc:  # cannot even be built: fails alone, the study goes on
            return self._fail(trial, f"{type(exc).__name__}: {exc}"[:500])
        for key, value in {"trainable_params": pred.trainable_params,
                           "trained_params": pred.trained_params,
                           "stored_params": pred.trainable_params,
                           "total_params": pred.total_params,
                           "trainable_fraction": pred.trainable_params / max(1, pred.total_params),
                           PREDICTED_MEMORY: pred.memory_bytes}.items():
            trial.set_user_attr(key, value)
        broken = self.limits.violations(pred.trainable_params, pred.memory_bytes,
                                        "predicted memory (lower bound)")
        broken += self._ran_out_before(pred.memory_bytes)
        if broken:
            return self._skip(trial, pred, broken)
        rungs = self.rungs
        trial.set_user_attr("rungs", rungs)
        scores: dict[str, float] = {}
        decisions: dict[str, Any] = {}
        resume, keep = self._continuation(trial, candidate, rungs, scores)
        need = checkpoint_bytes(pred.trained_params, sum(
            b.numel() * b.element_size() for b in self.skeleton.buffers()))
        self._make_room(keep, need)
        # A run that continues a checkpoint sees its losses from there on only: its start is
        # not the candidate's start, so the loss check (made when it first ran) stays off.
        check_loss = self.loss_check and resume is None
        watch = LossCheck(int(self.bench.settings.warmup_ratio * self.plan.schedule_steps),
                          chance_loss(self.bench.task.num_labels), self.plan.schedule_steps)

        def out_of_time() -> bool:
            """The budget ended. The one run of a one-run plan (no refit, room for one
            candidate) may overrun it by ``ONE_RUN_GRACE`` of the budget: it is the whole
            result, and cutting it near its end would leave the search with nothing."""
            if self.budget.left() != 0:
                return False
            one_run = self.plan.expected_candidates == 1 and not self.plan.refit_share
            return not one_run or self.budget.elapsed() > (1 + ONE_RUN_GRACE) * (
                self.budget.seconds or 0.0)

        def on_step(step: int, total: int, loss: float) -> None:
            self.reporter.step(step, total, loss)
            done = [s for s in rungs if str(s) in scores]
            if out_of_time():
                raise StopTrial(f"budget ended at step {step}; kept its last completed rung "
                                f"({'step ' + str(done[-1]) if done else 'none'})",
                                len(done), step, by_budget=True)
            stuck = watch.add(step, loss)
            # A plan of one run has nothing to spend the time on instead: it trains on.
            if stuck and check_loss and step < rungs[-1] and self.plan.expected_candidates != 1:
                trial.set_user_attr("not_learning", True)
                raise StopTrial(stuck, len(done), step)

        def on_eval(step: int, score: float) -> None:
            scores[str(step)] = score
            trial.set_user_attr(RUNG_SCORES, dict(scores))  # other workers see it now
            self.reporter.rung(trial.number, step, score)
            if step < rungs[-1]:
                self._make_room(keep, need)  # for the checkpoint written after this rung
            if step >= rungs[-1] or not self.pruner.prunes:
                return
            # Every score is chance yet: a rung the plan chose decides nothing (rungs the
            # user set, --rungs, decide where they were set).
            if check_loss and self.plan.source != "override" and not watch.moved(step):
                decisions[str(step)] = {"keep": True, "reason": "deferred: the training loss "
                                        "has not moved off its start yet"}
                trial.set_user_attr(RUNG_DECISIONS, dict(decisions))
                return
            decision = decide_from_storage(self.study, self.pruner, trial.number, step,
                                           score_noise=self.rung_noise)
            decisions[str(step)] = decision.to_dict()
            trial.set_user_attr(RUNG_DECISIONS, dict(decisions))
            if not decision.keep:  # paused: its checkpoint stays, a later table may promote it
                raise StopTrial(f"paused by {self.pruner.name} at step {step}: {decision.reason}",
                                rungs.index(step) + 1, step, paused=keep is not None)

        start = time.perf_counter()
        failed: tuple[str, bool, bool] | None = None
        try:
            outcome = self.bench.run(candidate, on_step=on_step, eval_at=rungs, on_eval=on_eval,
                                     fidelity=self.fidelity, resume=resume, checkpoint=keep)
        except StopTrial as stop:
            if not stop.by_budget and not stop.paused:  # not learning: nothing will continue it
                self._discard(candidate)
            return self._stopped(trial, pred, stop, time.perf_counter() - start)
        except KeyboardInterrupt:
            self._fail(trial, INTERRUPTED)
            raise
        except Exception as exc:  # a bad candidate fails alone; the study goes on
            if disk_problem(exc):  # not the candidate's fault: storage.heartbeat ends the search
                raise
            self._discard(candidate)
            failed = (f"{type(exc).__name__}: {exc}"[:500], out_of_memory(exc), cuda_broken(exc))
        if failed is not None:  # out of the except block: the failed trial's frames are gone
            return self._failed(trial, *failed)
        record(trial, outcome)
        r = outcome.result
        self._constrain(trial, outcome.trainable, r.peak_memory)
        broken = self.limits.violations(outcome.trainable, r.peak_memory, "measured peak memory")
        if broken:
            trial.set_user_attr("infeasible_reason", "; ".join(broken))
        self.study.tell(trial, [r.score, outcome.trainable, r.peak_memory])
        self._release()
        self.reporter.trial_finished(self.study, trial.number)
        return TrialState.COMPLETE.name

    def _release(self) -> None:
        """After a trial completed: delete the checkpoints of complete trials that the refit
        will not continue (all of them where the plan has no refit to read them), so a long
        search holds only what something can read (``search/continuation.py``)."""
        if self.checkpoints is None:
            return
        kept = self.refit_readers(self.study) if self.refit_readers and self._refit_reads() else ()
        drop_superseded(self.study, self.checkpoints, self._schedule, kept)

    def _make_room(self, keep: str | None, need: int) -> None:
        """Under the disk cap, drop other checkpoints until this run's next one fits."""
        if keep is None or self.checkpoints is None or self.checkpoints.space is None:
            return
        if os.path.isfile(keep):  # its previous checkpoint: the best measure of the next
            need = os.path.getsize(keep)
        for line in make_room(self.study, self.checkpoints, self._schedule, need, keep):
            self.reporter.note(f"checkpoint of {line}")

    def _continuation(self, trial: Trial, candidate: Candidate, rungs: list[int],
                      scores: dict[str, float]) -> tuple[str | None, str | None]:
        """(the checkpoint this trial continues from, where it keeps its own): a candidate
        an earlier trial trained part-way (stopped by the budget, interrupted, its worker
        lost) goes on from that trial's last rung, keeping the rung scores it had."""
        if self.checkpoints is None:
            return None, None
        keep = self.checkpoints.path(candidate, self._schedule)
        found = self.checkpoints.find(candidate, self._schedule, self.plan.trial_steps)
        if found is None or found.step == 0:
            return None, keep
        scores.update({str(s): v for s, v in found.rung_scores.items() if s in rungs})
        trial.set_user_attr(RUNG_SCORES, dict(scores))
        trial.set_user_attr(CONTINUED_FROM, found.step)
        self.reporter.note(f"trial {trial.number} continues {candidate.label} from its "
                           f"checkpoint at step {found.step}")
        return found.path, keep

    def _discard(self, candidate: Candidate) -> None:
        if self.checkpoints is not None:
            self.checkpoints.discard(candidate, self._schedule)

    def _ran_out_before(self, predicted_memory: int) -> list[str]:
        """Without --max-memory, a candidate is not tried blindly when ``OOM_REPEATS`` trials
        predicted to need no more than it ran out of memory and no trial predicted to need at
        least as much as one of them completed after it. So one out-of-memory error (a
        neighbour on a shared GPU, fragmentation) blocks nothing alone, and a larger
        candidate's success lifts the block."""
        if self.limits.max_memory_bytes is not None:
            return []
        trials = self.study.get_trials(deepcopy=False)
        done = [(t.number, t.user_attrs.get(PREDICTED_MEMORY) or 0) for t in trials
                if t.state.name == "COMPLETE"]
        standing = [m for t in trials if t.user_attrs.get("out_of_memory")
                    and (m := t.user_attrs.get(PREDICTED_MEMORY)) and m <= predicted_memory
                    and not any(n > t.number and dm >= m for n, dm in done)]
        if len(standing) >= OOM_REPEATS:
            return [f"predicted memory {predicted_memory} B >= that of {len(standing)} trials "
                    f"that ran out of memory (from {min(standing)} B)"]
        return []

    # -- the other endings -------------------------------------------------------------
    def _constrain(self, trial: Trial, params: float, memory: float) -> None:
        for key, value in self.limits.values(params, memory).items():
            trial.set_constraint(key, value)

    def _failed(self, trial: Trial, reason: str, oom: bool, broken: bool) -> str:
        """A trial that raised: FAIL. Out of memory: the memory is given back and remembered.
        A broken CUDA context (``devices.cuda_broken``): a trial process restarts
        (``IsolatedBench``); this process cannot, so the search stops after this trial
        rather than blame every later candidate."""
        if oom:
            free_memory()
            trial.set_user_attr("out_of_memory", True)
        state = self._fail(trial, reason)
        if broken and not getattr(self.bench, "restarts_on_cuda_error", False):
            raise UserError(f"trial {trial.number} broke this process's CUDA context ({reason}); "
                            "no later trial can run here: use --isolation process (the default), "
                            "which restarts the trial process")
        return state

    def _fail(self, trial: Trial, reason: str) -> str:
        from optuna.trial import TrialState

        trial.set_user_attr(FAIL_REASON, reason)
        self.study.tell(trial, state=TrialState.FAIL)
        self.reporter.trial_failed(trial.number, reason)
        return TrialState.FAIL.name

    def _duplicate(self, trial: Trial, same: int) -> str:
        from optuna.trial import TrialState

        reason = f"same candidate as trial {same}: not trained again"
        trial.set_user_attr(DUPLICATE_OF, same)
        trial.set_user_attr("prune_reason", reason)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.reporter.trial_pruned(trial.number, reason)
        return TrialState.PRUNED.name

    def not_started(self, trial: Trial, candidate: Candidate) -> bool:
        """Whether ``trial``, sampled as ``candidate``, is left untrained because the candidate
        is predicted to take longer than the search phase has left (a prompt tuning's virtual
        tokens, a method measured slow: ``time_needed(candidate)``); then it is told FAIL,
        ``NOT_STARTED`` with the reason, and said. Why not start it: the budget would cut it
        short, most likely before its first rung. A duplicate costs nothing: never refused."""
        from optuna.trial import TrialState

        need = self.time_needed(candidate)
        if self.budget.fits(need) or self.duplicate_of(trial, candidate) is not None:
            return False
        reason = (f"{candidate.label} is predicted to take {need or 0:.0f} s, "
                  f"{self.budget.left() or 0:.0f} s are left")
        trial.set_user_attr(NOT_STARTED, reason)
        self.study.tell(trial, state=TrialState.FAIL)
        self.reporter.note(f"trial {trial.number} not started: {reason}")
        return True

    def _skip(self, trial: Trial, pred: Prediction, broken: list[str]) -> str:
        from optuna.trial import TrialState

        reason = "skipped without training, infeasible: " + "; ".join(broken)
        self._constrain(trial, pred.trainable_params, pred.memory_bytes)
        trial.set_user_attr("skipped", True)
        trial.set_user_attr("prune_reason", reason)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.reporter.trial_pruned(trial.number, reason)
        return TrialState.PRUNED.name

    def _stopped(self, trial: Trial, pred: Prediction, stop: StopTrial, seconds: float) -> str:
        from optuna.trial import TrialState

        self._constrain(trial, pred.trainable_params, pred.memory_bytes)
        continued = int(trial.user_attrs.get(CONTINUED_FROM, 0))
        for key, value in {"pruned_at_rung": stop.rung, "pruned_at_step": stop.step,
                           "prune_reason": stop.reason, STOPPED_BY_BUDGET: stop.by_budget,
                           PAUSED: stop.paused,
                           STEPS: stop.step, "wall_seconds": round(seconds, 3),
                           STEPS_TRAINED: stop.step - continued,
                           "samples": stop.step * self.bench.settings.batch_size
                           * self.bench.settings.grad_accum}.items():
            trial.set_user_attr(key, value)
        if (stop.paused and self.checkpoints is not None and self.checkpoints.space is not None
                and not os.path.isfile(self.checkpoints.path(
                    Candidate.from_dict(trial.user_attrs[CANDIDATE]), self._schedule))):
            self.study.set_user_attr(f"{CHECKPOINT_DROPPED}:{trial.number}", (
                "none written (no room under --checkpoint-space, or a method that cannot "
                "continue): it can never be promoted"))
        self.study.tell(trial, state=TrialState.PRUNED)
        self.reporter.trial_pruned(trial.number, stop.reason)
        return TrialState.PRUNED.name
