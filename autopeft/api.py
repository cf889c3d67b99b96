"""The library API, what a notebook calls; the CLI is a thin layer over it.

    import autopeft
    study = autopeft.search("sst2", "roberta-base", budget="4h")
    autopeft.front(study)                      # Pareto rows
    autopeft.export(study, trial=3, out="best", train=True)
    model = autopeft.load("best")
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from autopeft.candidate import Candidate
from autopeft.checks import plain_name
from autopeft.errors import UserError
from autopeft.report.show import Row, rows
from autopeft.search.storage import HEARTBEAT_SECONDS

# torch, transformers and the search are imported inside the functions that train, so that
# reading a study (`autopeft show`, `load_study`, `front`) starts in a fraction of a second.

__all__ = ["search", "worker", "load_study", "front", "select_trial", "export", "train", "plot", "load",
           "SearchConfig"]


def __getattr__(name: str) -> Any:
    if name == "SearchConfig":
        from autopeft.search.config import SearchConfig

        return SearchConfig
    raise AttributeError(f"module 'autopeft.api' has no attribute {name!r}")


def load(path: str | Path, **kwargs: Any) -> Any:
    """An export folder's trained model (``autopeft.export.load``)."""
    from autopeft.export import load as load_export

    return load_export(path, **kwargs)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def search_options() -> set[str]:
    """Names ``search`` accepts as options (besides task and model)."""
    from autopeft.runner import DataSettings
    from autopeft.search.config import SearchConfig
    from autopeft.train import TrainSettings

    return (_fields(SearchConfig) | _fields(TrainSettings) | _fields(DataSettings)) - {"task", "model", "data", "train"}


def search(task: str, model: str, *, progress: Any = False, **options: Any) -> Any:
    """Run or resume a search; returns the Optuna study.

    ``progress``: False (silent), True (a live panel on a terminal, plain lines otherwise),
    ``"live"``, ``"plain"``, ``"json"`` (one JSON object per event on stdout), or a reporter.
    ``options`` are fields of ``SearchConfig`` (budget, n_trials, study, storage, space,
    sampler, seed, ...), of ``TrainSettings`` (epochs, batch_size, max_length, device, ...)
    and of ``DataSettings`` (data_dir, train_samples, eval_samples).
    """
    from autopeft.report.progress import make_reporter
    from autopeft.runner import DataSettings
    from autopeft.search.config import SearchConfig
    from autopeft.search.study import run_search
    from autopeft.train import TrainSettings

    unknown = set(options) - search_options()
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    pick = lambda cls: {k: v for k, v in options.items() if k in _fields(cls)}  # noqa: E731
    train = TrainSettings(**pick(TrainSettings))
    data = DataSettings(task=task, **{k: v for k, v in pick(DataSettings).items() if k != "task"})
    cfg = SearchConfig(task=task, model=model, data=data, train=train,
                       **{k: v for k, v in pick(SearchConfig).items() if k not in ("task", "model")})
    return run_search(cfg, make_reporter(progress))


def worker(study: str, storage: str | None = None, *, progress: Any = False,
           isolation: str | None = None, heartbeat: int = HEARTBEAT_SECONDS, device: str | None = None) -> Any:
    """Join the existing study ``study`` (``studies/<study>.db`` unless ``storage`` is given)
    and run its trials until its trial cap or deadline; returns the Optuna study.

    Task, model, data, space and pruner come from the study. ``progress`` as for ``search``;
    ``isolation``: ``process`` or ``none`` (default: ``$AUTOPEFT_ISOLATION``, else process);
    ``heartbeat``: seconds between a running trial's beats; ``device``: this worker's device
    instead of the study's (``cpu``, ``cuda:N``)."""
    from autopeft.report.progress import make_reporter
    from autopeft.search.study import run_worker

    return run_worker(study, storage, make_reporter(progress), isolation, heartbeat, device)


def load_study(name: str, storage: str | None = None) -> Any:
    """An existing study by name (``studies/<name>.db`` unless ``storage`` is given)."""
    from autopeft.search.open import open_existing_study

    return open_existing_study(name, storage)


def _study(study: Any, storage: str | None) -> Any:
    return load_study(study, storage) if isinstance(study, str) else study


def front(study: Any, storage: str | None = None, all_trials: bool = False,
          sort: str = "score") -> list[Row]:
    """The Pareto front (``all_trials``: every trial) as rows."""
    return rows(_study(study, storage), all_trials=all_trials, sort=sort)


def select_trial(study: Any, trial: int | None = None, best: str | None = None,
                 pick: str | None = None, storage: str | None = None) -> int:
    """The trial number chosen by exactly one of: ``trial`` (a number), ``best``
    (``score``, ``params`` or ``memory``) or ``pick`` (a rule, ``'score>=0.9,min params'``;
    see ``autopeft.report.pick``)."""
    from autopeft.report import pick as picking

    given = [name for name, v in (("--trial", trial), ("--best", best), ("--pick", pick))
             if v is not None]
    if len(given) != 1:
        raise UserError("choose the trial with exactly one of --trial N, --best score|params|memory "
                        f"or --pick RULE (got {', '.join(given) or 'none'})")
    if trial is not None:
        return int(trial)
    rule = picking.best_rule(best) if best is not None else str(pick)
    st = _study(study, storage)
    from autopeft.results import front_pool, records

    comparable = {r.number for r in front_pool(records(st.get_trials(deepcopy=False)))}
    pool = [r for r in rows(st, all_trials=True) if r.number in comparable]
    return picking.select(pool, rule).number


def _info_from_trial(st: Any, trial: int, model: str | None) -> dict[str, Any]:
    trials = {t.number: t for t in st.get_trials(deepcopy=False)}
    if trial not in trials:
        raise UserError(f"study {st.study_name!r} has no trial {trial} (trials 0..{len(trials) - 1})")
    from autopeft.results import record
    from autopeft.search.plan import Plan

    t = trials[trial]
    r = record(t)
    if r.fidelity not in ("refit", "search", "provisional") or "candidate" not in t.user_attrs:
        raise UserError(f"trial {trial} is {t.state.name.lower()} with no score; pick a trial "
                        "from `autopeft show`")
    attrs = st.user_attrs
    candidate = Candidate.from_dict(t.user_attrs["candidate"])
    objectives = {"score": r.score, "trainable_params": r.trainable_params,
                  "peak_memory_bytes": r.peak_memory_bytes, "fidelity": r.fidelity,
                  "steps": r.steps}
    for key in ("trainable_fraction", "wall_seconds", "confirm_mean", "confirm_std",
                "confirm_seeds", "search_score"):
        if key in t.user_attrs:
            objectives[key] = t.user_attrs[key]
    info = {"study": st.study_name, "trial": trial, "model": model or attrs["model"],
            "task": attrs["task"], "data": attrs["data"], "train": attrs["train"],
            "candidate": candidate.to_dict(), "objectives": objectives}
    if attrs.get("plan"):  # how long it trained, so `export --train` gets the same score
        plan = Plan.from_dict(attrs["plan"])
        steps = r.steps if r.fidelity == "refit" else plan.trial_steps
        info["fidelity"] = {"schedule_steps": plan.schedule_steps, "stop_at": steps}
    return info


def _train_info(info: dict[str, Any], data_dir: str | None) -> tuple[Any, dict[str, Any]]:
    """Train the candidate in ``info`` exactly as the study did (same data, settings, seed)."""
    from autopeft.paths import cache_dir
    from autopeft.runner import Bench, DataSettings, Fidelity
    from autopeft.train import TrainSettings

    data = DataSettings(**{**info["data"], **({"data_dir": data_dir} if data_dir else {})})
    bench = Bench.load(info["model"], data, TrainSettings(**info["train"]), cache_dir())
    outcome = bench.run(Candidate.from_dict(info["candidate"]),
                        fidelity=Fidelity(**info.get("fidelity") or {}))
    r = outcome.result
    trained = {"score": r.score, "trainable_params": outcome.trainable,
               "trained_params": outcome.trained, "stored_params": outcome.trainable,
               "total_params": outcome.total,
               "trainable_fraction": outcome.trainable / max(1, outcome.total),
               "peak_memory_bytes": r.peak_memory, "memory_method": r.memory_method,
               "wall_seconds": round(r.seconds, 3), "steps": r.steps, "final_loss": r.final_loss,
               "metrics": r.metrics, "seed": info["candidate"].get("seed", 0)}
    return outcome, trained


def _write_trained(path: Path, info: dict[str, Any], outcome: Any, trained: dict[str, Any]) -> None:
    from autopeft.export import model_card, peft_native, save_trained

    candidate = Candidate.from_dict(info["candidate"])
    save_trained(path, outcome.model, candidate)
    (path / "metrics.json").write_text(json.dumps(trained, indent=2))
    (path / "README.md").write_text(model_card(info, trained, peft_native(candidate)))


def export(study: Any, trial: int, out: str, *, storage: str | None = None, train: bool = False,
           force: bool = False, data_dir: str | None = None, model: str | None = None) -> Path:
    """Write trial ``trial``'s candidate to ``out`` (and, with ``train``, its trained weights).

    ``data_dir`` and ``model`` override where the study's data and base model are found.
    ``out/candidate.yaml`` is re-runnable: ``autopeft.train("out/candidate.yaml")``.
    """
    from autopeft.export import (check_info, model_card, peft_native, prepare_dir,
                                 save_config_only, write_candidate)
    from autopeft.runner import DataSettings
    from autopeft.models import load_base

    st = _study(study, storage)
    info = _info_from_trial(st, trial, model)
    check_info(info, f"study {st.study_name!r}")  # e.g. its device is not on this machine
    candidate = Candidate.from_dict(info["candidate"])
    path = prepare_dir(out, force)
    write_candidate(path, info)
    if train:
        outcome, trained = _train_info(info, data_dir)
        _write_trained(path, info, outcome, trained)
        return path
    base = load_base(info["model"], DataSettings(**info["data"]).get_task())
    save_config_only(path, base.model, candidate)
    (path / "README.md").write_text(model_card(info, None, peft_native(candidate)))
    return path


def train(config: str | Path, out: str | None = None, *, force: bool = False,
          data_dir: str | None = None, model: str | None = None, seed: int | None = None,
          device: str | None = None) -> dict[str, Any]:
    """Train exactly the candidate of an exported ``candidate.yaml`` (or its folder): the same
    base model, data subset, training settings and seed as in the study, so on CPU the score
    and trainable parameter count match the trial's. Returns the measurements; with ``out``
    also writes the trained weights, ``candidate.yaml``, ``metrics.json`` and a model card.

    ``seed`` re-trains with another seed (to see the spread); ``data_dir``, ``model`` and
    ``device`` override where the data and base model are and where to train."""
    from autopeft.export import check_info, prepare_dir, read_candidate, write_candidate
    info = dict(read_candidate(config))
    if model:
        info["model"] = model
    if seed is not None:
        info["candidate"] = {**info["candidate"], "seed": seed}
    if device:
        info["train"] = {**info["train"], "device": device}
    check_info(info, str(config))  # the overrides too, before anything is written
    path = prepare_dir(out, force) if out else None  # refuse a non-empty --out before training
    outcome, trained = _train_info(info, data_dir)
    if path is not None:
        write_candidate(path, info)
        _write_trained(path, info, outcome, trained)
    return trained


def plot(study: Any, out: str | None = None, *, storage: str | None = None) -> Any:
    """Write the study's HTML report and PNG figures to ``out`` (default
    ``reports/<study>/``); returns the written paths (``.html`` and ``.pngs``)."""
    from autopeft.report.plots import write_report

    st = _study(study, storage)
    folder = Path(out) if out else Path("reports") / plain_name(st.study_name)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    return write_report(st, folder)
