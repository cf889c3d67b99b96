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
from autopeft.errors import UserError
from autopeft.export import (load, model_card, peft_native, prepare_dir, save_config_only,
                             save_trained, write_candidate)
from autopeft.paths import cache_dir
from autopeft.report.show import Row, rows
from autopeft.runner import Bench, DataSettings
from autopeft.search.storage import mask, open_storage, storage_url
from autopeft.search.study import SearchConfig, run_search
from autopeft.train import TrainSettings

__all__ = ["search", "load_study", "front", "export", "load", "SearchConfig"]


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def search_options() -> set[str]:
    """Names ``search`` accepts as options (besides task and model)."""
    return (_fields(SearchConfig) | _fields(TrainSettings) | _fields(DataSettings)) - {"task", "model", "data", "train"}


def search(task: str, model: str, *, progress: bool = False, **options: Any) -> Any:
    """Run or resume a search; returns the Optuna study.

    ``options`` are fields of ``SearchConfig`` (budget, n_trials, study, storage, space,
    sampler, seed, ...), of ``TrainSettings`` (epochs, batch_size, max_length, device, ...)
    and of ``DataSettings`` (data_dir, train_samples, eval_samples).
    """
    from autopeft.report.progress import ConsoleReporter

    unknown = set(options) - search_options()
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    pick = lambda cls: {k: v for k, v in options.items() if k in _fields(cls)}  # noqa: E731
    train = TrainSettings(**pick(TrainSettings))
    data = DataSettings(task=task, **{k: v for k, v in pick(DataSettings).items() if k != "task"})
    cfg = SearchConfig(task=task, model=model, data=data, train=train,
                       **{k: v for k, v in pick(SearchConfig).items() if k not in ("task", "model")})
    return run_search(cfg, ConsoleReporter() if progress else None)


def load_study(name: str, storage: str | None = None) -> Any:
    """An existing study by name (``studies/<name>.db`` unless ``storage`` is given)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(name, storage) if storage else _existing_default(name)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url, create=False))
    except KeyError:
        raise UserError(f"no study named {name!r} in {mask(url)}") from None


def _existing_default(name: str) -> str:
    from autopeft.paths import studies_dir

    path = Path(studies_dir()) / f"{name}.db"
    if not path.is_file():
        raise UserError(f"no study database {path}; run `autopeft search` first, or pass "
                        "--storage with the study's URL")
    return f"sqlite:///{path.resolve()}"


def _study(study: Any, storage: str | None) -> Any:
    return load_study(study, storage) if isinstance(study, str) else study


def front(study: Any, storage: str | None = None, all_trials: bool = False,
          sort: str = "score") -> list[Row]:
    """The Pareto front (``all_trials``: every trial) as rows."""
    return rows(_study(study, storage), all_trials=all_trials, sort=sort)


def export(study: Any, trial: int, out: str, *, storage: str | None = None, train: bool = False,
           force: bool = False, data_dir: str | None = None, model: str | None = None) -> Path:
    """Write trial ``trial``'s candidate to ``out`` (and, with ``train``, its trained weights).

    ``data_dir`` and ``model`` override where the study's data and base model are found.
    """
    from autopeft.models import load_base

    st = _study(study, storage)
    trials = {t.number: t for t in st.get_trials(deepcopy=False)}
    if trial not in trials:
        raise UserError(f"study {st.study_name!r} has no trial {trial} (trials 0..{len(trials) - 1})")
    t = trials[trial]
    if t.state.name != "COMPLETE" or "candidate" not in t.user_attrs:
        raise UserError(f"trial {trial} is {t.state.name.lower()}, not complete; pick a trial "
                        "from `autopeft show`")
    attrs = st.user_attrs
    candidate = Candidate.from_dict(t.user_attrs["candidate"])
    info = {"study": st.study_name, "trial": trial, "model": model or attrs["model"],
            "task": attrs["task"], "data": attrs["data"], "train": attrs["train"],
            "candidate": candidate.to_dict(),
            "objectives": dict(zip(("score", "trainable_params", "peak_memory_bytes"), t.values))}
    path = prepare_dir(out, force)
    write_candidate(path, info)
    trained = None
    if train:
        data = DataSettings(**{**attrs["data"], **({"data_dir": data_dir} if data_dir else {})})
        bench = Bench.load(info["model"], data, TrainSettings(**attrs["train"]), cache_dir())
        outcome = bench.run(candidate)
        save_trained(path, outcome.model, candidate)
        trained = {"score": outcome.result.score, "trainable_params": outcome.trainable,
                   "peak_memory_bytes": outcome.result.peak_memory}
        (path / "metrics.json").write_text(json.dumps(trained, indent=2))
    else:
        base = load_base(info["model"], DataSettings(**info["data"]).get_task())
        save_config_only(path, base.model, candidate)
    (path / "README.md").write_text(model_card(info, trained, peft_native(candidate)))
    return path

