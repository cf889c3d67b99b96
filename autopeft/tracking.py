"""Experiment tracking: a search's trials in TensorBoard, MLflow or Weights & Biases
(``--report-to``, with HF Trainer's names and meaning: ``none``, ``all`` = every one that
is installed, or a comma list).

One run per trial under one parent per study: the candidate as params, the training loss
(``train/loss``) and the rung scores (``rung/score``) at their steps, then the final
objectives (``objective/score``, ``objective/trainable_params``,
``objective/peak_memory_bytes``), the trial's state (COMPLETE, PRUNED, FAIL) and reason. The
refit's re-trained trials get a run each when the search ends; the study's run its front.

* TensorBoard: one event folder per trial, ``studies/<study>/tensorboard/trial-0003``
  (the parent is the folder: ``tensorboard --logdir studies/<study>/tensorboard``), the
  candidate in the HParams view.
* MLflow: experiment ``<study>`` (or ``$MLFLOW_EXPERIMENT_NAME``), a parent run ``<study>``
  and nested trial runs; the store is ``$MLFLOW_TRACKING_URI``, else a file store in
  ``studies/<study>/mlruns``.
* W&B: one run per trial in group ``<study>`` (W&B's parent), project ``$WANDB_PROJECT``
  or ``autopeft``, in ``$WANDB_MODE`` (default ``offline``) under ``$WANDB_DIR``, else
  ``studies/<study>/wandb``; ``wandb sync`` uploads them.

Each library is imported only when its tracker starts; a tracker that is asked for but not
installed is a one-line error naming the pip package, before the search starts.
"""
from __future__ import annotations

import importlib.util
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from autopeft.errors import UserError
from autopeft.paths import studies_dir
from autopeft.protocols import NullReporter, Reporter

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import

# name (HF Trainer's) -> (module, pip package)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"),
            "mlflow": ("mlflow", "mlflow"),
            "wandb": ("wandb", "wandb")}
STATES = ("COMPLETE", "PRUNED", "FAIL")
REPORT_TO = "report_to"  # the study attribute: where its search reports (its workers too)


def installed(name: str) -> bool:
    return importlib.util.find_spec(TRACKERS[name][0]) is not None


def parse_report_to(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The trackers asked for, checked: ``None``/``"none"``: none; ``"all"``: every one
    installed; else names (a comma string or a list), each installed."""
    names = value.split(",") if isinstance(value, str) else list(value or [])
    names = [n.strip().lower() for n in names if n.strip()]
    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        return [n for n in TRACKERS if installed(n)]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise UserError(f"report_to: unknown tracker(s) {', '.join(unknown)}; use "
                        f"{', '.join(TRACKERS)}, all or none")
    for name in names:
        if not installed(name):
            raise UserError(f"report_to {name}: the {name} package is not installed; "
                            f"pip install {TRACKERS[name][1]} (or autopeft[tracking])")
    return list(dict.fromkeys(names))


def study_folder(study: str) -> Path:
    """Where a study's local files live (beside ``checkpoints/``): ``studies/<study>``."""
    return Path(studies_dir()) / study


def flat_params(candidate: dict[str, Any]) -> dict[str, Any]:
    """A candidate (``Candidate.to_dict()``) as flat params: ``method``, ``<method>.<param>``,
    ``learning_rate``, ``seed``; lists become comma strings (every tracker takes scalars)."""
    methods = candidate.get("methods", [])
    out: dict[str, Any] = {"method": "+".join(m["name"] for m in methods)}
    for m in methods:
        for key, value in sorted(m.get("params", {}).items()):
            out[f"{m['name']}.{key}"] = value
    out["learning_rate"] = candidate.get("learning_rate")
    out["seed"] = candidate.get("seed")
    return {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else
            (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in out.items()}


def trainer_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """A Trainer's log dict under HF's own names (``eval_accuracy`` -> ``eval/accuracy``,
    ``grad_norm`` -> ``train/grad_norm``); its ``loss`` is the loss trace already."""
    out = {}
    for key, value in logs.items():
        if key in ("loss", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        prefix, _, rest = key.partition("_")
        out[f"{prefix}/{rest}" if prefix in ("eval", "test") and rest else f"train/{key}"] = float(value)
    return out


class Backend(Protocol):
    """One tracking library: a parent per study, a run per trial (one open at a time)."""

    def open_study(self, name: str, owner: bool) -> None: ...
    def open_trial(self, number: int, params: dict[str, Any], tags: dict[str, str]) -> None: ...
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def close_trial(self, state: str, reason: str, final: dict[str, float], step: int) -> None: ...
    def close_study(self, metrics: dict[str, float], tags: dict[str, str], owner: bool) -> None: ...


class TensorBoard:
    """Event files through ``torch.utils.tensorboard`` (what HF Trainer writes too)."""

    def __init__(self, folder: Path):
        self.root = folder / "tensorboard"
        self.writer: Any = None
        self.params: dict[str, Any] = {}

    def open_study(self, name: str, owner: bool) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def open_trial(self, number: int, params: dict[str, Any], tags: dict[str, str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.root / f"trial-{number:04d}"))
        self.params = params

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close_trial(self, state: str, reason: str, final: dict[str, float], step: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        self.log(final, step)
        for summary in hparams({**{k: v for k, v in self.params.items() if v is not None},
                                "state": state}, final):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("state", f"{state}: {reason}" if reason else state, step)
        self.writer.close()
        self.writer = None

    def close_study(self, metrics: dict[str, float], tags: dict[str, str], owner: bool) -> None:
        pass  # the folder is the parent: nothing to close


class MLflow:
    """Runs through ``MlflowClient`` (no global active run: a notebook's own stays its own)."""

    def __init__(self, folder: Path, study: str):
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (folder / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):  # MLflow 3 keeps the file store behind this switch
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or study
        found = self.client.get_experiment_by_name(name)
        self.experiment = found.experiment_id if found else self.client.create_experiment(name)
        self.parent = ""
        self.run = ""
        self.pending: list[Any] = []

    def open_study(self, name: str, owner: bool) -> None:
        """The study's parent run: the one a resumed search or a worker finds, else a new one."""
        runs = self.client.search_runs([self.experiment], max_results=1, filter_string=(
            f"tags.`autopeft.study` = '{name}' and tags.`autopeft.role` = 'study'"))
        if runs:
            self.parent = runs[0].info.run_id
            if owner:
                self.client.update_run(self.parent, status="RUNNING")
        else:
            self.parent = self.client.create_run(self.experiment, run_name=name, tags={
                "autopeft.study": name, "autopeft.role": "study"}).info.run_id

    def open_trial(self, number: int, params: dict[str, Any], tags: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        self.run = self.client.create_run(self.experiment, run_name=f"trial-{number}", tags={
            "mlflow.parentRunId": self.parent, **tags}).info.run_id
        self.client.log_batch(self.run, params=[Param(k, str(v)) for k, v in params.items()],
                              tags=[RunTag("autopeft.state", "RUNNING")])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.pending += [Metric(k, v, stamp, step) for k, v in metrics.items()]
        if len(self.pending) >= 500:  # a batch per 500 values, not a write per step
            self._flush(self.run)

    def _flush(self, run: str) -> None:
        while self.pending:
            self.client.log_batch(run, metrics=self.pending[:1000])
            self.pending = self.pending[1000:]

    def close_trial(self, state: str, reason: str, final: dict[str, float], step: int) -> None:
        from mlflow.entities import RunTag

        self.log(final, step)
        self._flush(self.run)
        self.client.log_batch(self.run, tags=[RunTag("autopeft.state", state),
                                              RunTag("autopeft.reason", reason[:5000])])
        self.client.set_terminated(self.run, "FAILED" if state == "FAIL" else "FINISHED")

    def close_study(self, metrics: dict[str, float], tags: dict[str, str], owner: bool) -> None:
        from mlflow.entities import RunTag

        self.log(metrics, 0)
        self._flush(self.parent)
        self.client.log_batch(self.parent, tags=[RunTag(k, v) for k, v in tags.items()])
        if owner:
            self.client.set_terminated(self.parent, "FINISHED")


class WandB:
    """One W&B run per trial, grouped by study (W&B's parent), offline unless said."""

    def __init__(self, folder: Path, study: str):
        import wandb

        self.wandb, self.study = wandb, study
        self.folder = os.environ.get("WANDB_DIR") or str(folder)
        self.mode = os.environ.get("WANDB_MODE") or "offline"
        self.project = os.environ.get("WANDB_PROJECT") or "autopeft"
        self.run: Any = None

    def open_study(self, name: str, owner: bool) -> None:
        os.makedirs(self.folder, exist_ok=True)

    def open_trial(self, number: int, params: dict[str, Any], tags: dict[str, str]) -> None:
        self.run = self.wandb.init(
            project=self.project, group=self.study, job_type="trial", name=f"trial-{number}",
            config={**params, "trial": number}, dir=self.folder, mode=self.mode,
            reinit="create_new", settings=self.wandb.Settings(silent=True, console="off"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close_trial(self, state: str, reason: str, final: dict[str, float], step: int) -> None:
        self.run.log(final, step=step)
        self.run.summary.update({"state": state, "reason": reason})
        self.run.finish(exit_code=1 if state == "FAIL" else 0)
        self.run = None

    def close_study(self, metrics: dict[str, float], tags: dict[str, str], owner: bool) -> None:
        pass  # the group is the parent: nothing to close


def backends(names: list[str], study: str) -> list[Backend]:
    folder = study_folder(study)
    make = {"tensorboard": lambda: TensorBoard(folder), "mlflow": lambda: MLflow(folder, study),
            "wandb": lambda: WandB(folder, study)}
    return [make[n]() for n in names]


class TrackingReporter(NullReporter):
    """Every event to ``inner`` (the progress output), and each trial to the trackers.

    ``owner``: this process started the search (a worker adds its trials to the study's
    parent run but does not close it). ``log`` takes a Trainer's log dicts
    (``hf_trainer``): the running trial's run gets them under HF's names."""

    def __init__(self, inner: Reporter, trackers: list[Backend], owner: bool = True):
        self.inner, self.trackers, self.owner = inner, trackers, owner
        self.study: Any = None
        self.number: int | None = None
        self.last_step = 0
        self.seen: set[int] = set()

    # -- the study -------------------------------------------------------------------------
    def started(self, study: Study, url: str, budget: Any, n_trials: int | None) -> None:
        self.inner.started(study, url, budget, n_trials)
        self.study = study
        self.seen = {t.number for t in study.get_trials(deepcopy=False)}
        for t in self.trackers:
            t.open_study(study.study_name, self.owner)

    def finished(self, study: Study) -> None:
        """The refit's trials (added to the study at its end) get their runs; the parent
        gets the study's front and hypervolume."""
        from autopeft.results import CANDIDATE, CONFIRM_OF
        from autopeft.search.summary import front_trials

        for trial in study.get_trials(deepcopy=False):
            a = trial.user_attrs
            if trial.number in self.seen or CONFIRM_OF not in a or CANDIDATE not in a:
                continue
            self._open(trial.number, a[CANDIDATE], refit_of=a[CONFIRM_OF])
            self._close("COMPLETE", f"refit of trial {a[CONFIRM_OF]}: mean of "
                        f"{len(a.get('confirm_scores', []))} seed(s) at {a.get('steps')} steps")
        front = [r.number for r in front_trials(study)]
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        metrics = {f"study/{s.lower()}_trials": float(states.count(s)) for s in STATES}
        if "hypervolume" in study.user_attrs:
            metrics["study/hypervolume"] = float(study.user_attrs["hypervolume"])
        for t in self.trackers:
            t.close_study(metrics, {"autopeft.front": ",".join(map(str, front))}, self.owner)
        self.inner.finished(study)

    # -- a trial ---------------------------------------------------------------------------
    def trial_started(self, number: int, candidate: Any) -> None:
        self.inner.trial_started(number, candidate)
        self._open(number, candidate.to_dict())

    def step(self, step: int, total: int, loss: float) -> None:
        self.inner.step(step, total, loss)
        if math.isfinite(loss):
            self._log({"train/loss": float(loss)}, step)

    def rung(self, number: int, step: int, score: float) -> None:
        self.inner.rung(number, step, score)
        self._log({"rung/score": float(score)}, step)

    def log(self, step: int, logs: dict[str, Any]) -> None:
        self._log(trainer_metrics(logs), step)

    def trial_finished(self, study: Study, number: int) -> None:
        self.inner.trial_finished(study, number)
        self._close("COMPLETE", "")

    def trial_pruned(self, number: int, reason: str) -> None:
        self.inner.trial_pruned(number, reason)
        self._close("PRUNED", reason)

    def trial_failed(self, number: int, reason: str) -> None:
        self.inner.trial_failed(number, reason)
        self._close("FAIL", reason)

    def note(self, text: str) -> None:
        self.inner.note(text)

    def _open(self, number: int, candidate: dict[str, Any], refit_of: int | None = None) -> None:
        self.number, self.last_step = number, 0
        self.seen.add(number)
        tags = {"autopeft.study": self.study.study_name, "autopeft.trial": str(number)}
        if refit_of is not None:
            tags["autopeft.refit_of"] = str(refit_of)
        for t in self.trackers:
            t.open_trial(number, flat_params(candidate), tags)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.number is None or not metrics:
            return
        self.last_step = max(self.last_step, step)
        for t in self.trackers:
            t.log(metrics, step)

    def _close(self, state: str, reason: str) -> None:
        """The trial's final objectives (measured, else what is known: the parameters
        predicted before training), its state and reason; its run ends."""
        if self.number is None:
            return
        trial = next(t for t in self.study.get_trials(deepcopy=False) if t.number == self.number)
        a = trial.user_attrs
        final = {}
        if trial.values:
            final = dict(zip(("objective/score", "objective/trainable_params",
                              "objective/peak_memory_bytes"), map(float, trial.values)))
        elif a.get("trainable_params") is not None:
            final = {"objective/trainable_params": float(a["trainable_params"])}
        reason = reason or a.get("infeasible_reason", "")
        step = max(self.last_step, int(a.get("steps") or 0))
        for t in self.trackers:
            t.close_trial(state, reason, final, step)
        self.number = None


def tracked(reporter: Reporter, report_to: Any, study: str, owner: bool = True) -> Reporter:
    """``reporter`` with the trackers of ``report_to`` (HF's names) for ``study``; itself
    when none is asked for or it already tracks."""
    names = parse_report_to(report_to)
    if not names or isinstance(reporter, TrackingReporter):
        return reporter
    return TrackingReporter(reporter, backends(names, study), owner)
