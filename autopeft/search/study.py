"""The study: create or resume it, then ask -> sample -> train -> tell until the budget ends.

Objectives, in this order: validation score (maximise), trainable parameters (minimise),
peak training memory in bytes (minimise). Each trial stores its candidate and its
measurements as user attributes, so it can be rebuilt and exported from the storage alone.
"""
from __future__ import annotations

import gc
import re
import statistics
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from autopeft.candidate import Candidate
from autopeft.errors import UserError
from autopeft.paths import cache_dir
from autopeft.runner import Bench, DataSettings, Outcome
from autopeft.search.budget import Budget, parse_duration
from autopeft.search.storage import mask, open_storage, storage_url
from autopeft.space import Space, load_space
from autopeft.train import TrainSettings

DIRECTIONS = ("maximize", "minimize", "minimize")
OBJECTIVES = ("score", "trainable_params", "peak_memory_bytes")
SAMPLERS = ("tpe", "nsga2", "random")


@dataclass
class SearchConfig:
    """Everything ``autopeft search`` takes; the CLI fills it from flags."""

    task: str
    model: str
    study: str | None = None
    storage: str | None = None
    space: str = "default"
    budget: str | float | None = None  # "4h", "1h30m", or seconds
    n_trials: int | None = None
    data: DataSettings | None = None
    train: TrainSettings = field(default_factory=TrainSettings)
    sampler: str = "tpe"
    seed: int = 0
    trust_remote_code: bool = False
    force: bool = False

    def __post_init__(self) -> None:
        if self.data is None:
            self.data = DataSettings(task=self.task)
        self.data.get_task()  # fail before any database is created
        if self.study is None:
            model = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.model.rstrip("/").split("/")[-1])
            self.study = f"{self.task}-{model}"
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}")
        if self.n_trials is not None and self.n_trials < 1:
            raise UserError(f"--n-trials must be at least 1, got {self.n_trials}")

    def budget_seconds(self) -> float | None:
        if self.budget is None or isinstance(self.budget, (int, float)):
            return self.budget
        return parse_duration(self.budget)


def make_sampler(name: str, seed: int) -> Any:
    import optuna

    if name == "tpe":  # conditional space: multivariate TPE that groups co-occurring params
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed,
                                              n_startup_trials=8)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _study_attrs(cfg: SearchConfig, space: Space) -> dict[str, Any]:
    return {"task": cfg.task, "model": cfg.model, "space": space.source,
            "space_digest": space.digest, "data": asdict(cfg.data), "train": asdict(cfg.train),
            "objectives": list(OBJECTIVES)}


def open_study(cfg: SearchConfig, space: Space) -> Any:
    """Create the study, or resume it if it exists with the same task, model and space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(cfg.study, cfg.storage)
    storage = open_storage(url, create=True)
    study = optuna.create_study(storage=storage, study_name=cfg.study, directions=list(DIRECTIONS),
                                sampler=make_sampler(cfg.sampler, cfg.seed), load_if_exists=True)
    attrs = _study_attrs(cfg, space)
    old = study.user_attrs
    if old:
        differs = [k for k in ("task", "model", "space_digest", "data", "train")
                   if old.get(k) != attrs[k]]
        if "space_digest" in differs:  # Optuna cannot change a study's choices, even forced
            raise UserError(f"study {cfg.study!r} in {mask(url)} exists with a different space; "
                            "use another --study name for this space")
        if differs and not cfg.force:
            raise UserError(f"study {cfg.study!r} in {mask(url)} exists with a different "
                            f"{', '.join(d.replace('_digest', '') for d in differs)}; use another "
                            "--study name, or --force to add trials to it anyway")
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study


def record(trial: Any, outcome: Outcome) -> None:
    r = outcome.result
    for key, value in {
        "trainable_params": outcome.trainable, "total_params": outcome.total,
        "trainable_fraction": outcome.trainable / max(1, outcome.total),
        "peak_memory_bytes": r.peak_memory, "memory_method": r.memory_method,
        "wall_seconds": round(r.seconds, 3), "steps": r.steps, "samples": r.samples,
        "final_loss": r.final_loss, "rung_scores": {str(k): v for k, v in r.rung_scores.items()},
        "metrics": r.metrics,
    }.items():
        trial.set_user_attr(key, value)


def predicted_trial_seconds(study: Any) -> float | None:
    """The median wall time of this study's completed trials (None before the first)."""
    from optuna.trial import TrialState

    times = [t.user_attrs["wall_seconds"] for t in study.get_trials(deepcopy=False,
             states=(TrialState.COMPLETE,)) if "wall_seconds" in t.user_attrs]
    return statistics.median(times) if times else None


def run_search(cfg: SearchConfig, reporter: Any = None, bench: Bench | None = None) -> Any:
    """Run (or resume) the study described by ``cfg``; returns the Optuna study."""
    from optuna.trial import TrialState

    from autopeft.report.progress import NullReporter

    reporter = reporter or NullReporter()
    budget = Budget(cfg.budget_seconds())
    if cfg.n_trials is None and budget.seconds is None:
        raise UserError("give --budget or --n-trials, or the search never ends")
    space = load_space(cfg.space)
    study = open_study(cfg, space)
    bench = bench or Bench.load(cfg.model, cfg.data, cfg.train, cache_dir(), cfg.trust_remote_code)
    reporter.started(study, mask(storage_url(cfg.study, cfg.storage)), budget, cfg.n_trials)
    ran = 0
    while cfg.n_trials is None or ran < cfg.n_trials:
        if not budget.fits(predicted_trial_seconds(study)):
            reporter.note("budget reached: no further trial fits in the time left")
            break
        trial = study.ask()
        candidate = space.sample(trial)
        trial.set_user_attr("candidate", candidate.to_dict())
        trial.set_user_attr("label", candidate.label)
        reporter.trial_started(trial.number, candidate)
        try:
            outcome = bench.run(candidate, on_step=reporter.step)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            study.tell(trial, state=TrialState.FAIL)
            reporter.trial_failed(trial.number, "interrupted")
            raise
        except Exception as exc:  # a bad candidate fails alone; the study goes on
            reason = f"{type(exc).__name__}: {exc}"[:500]
            trial.set_user_attr("fail_reason", reason)
            study.tell(trial, state=TrialState.FAIL)
            reporter.trial_failed(trial.number, reason)
        else:
            record(trial, outcome)
            r = outcome.result
            study.tell(trial, [r.score, outcome.trainable, r.peak_memory])
            reporter.trial_finished(study, trial.number)
            del outcome
        gc.collect()
        ran += 1
    reporter.finished(study)
    return study


def trial_candidate(trial: Any) -> Candidate:
    return Candidate.from_dict(trial.user_attrs["candidate"])
