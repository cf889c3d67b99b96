"""The library API, what a notebook calls; the CLI is a thin layer over it.

    import autopeft
    study = autopeft.search("sst2", "roberta-base", budget="4h")
    autopeft.front(study)                      # Pareto rows
    autopeft.export(study, trial=3, out="best", train=True)
    model = autopeft.load("best")
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft.checks import plain_name
from autopeft.errors import UserError
from autopeft.report.show import Row, rows
from autopeft.search.storage import HEARTBEAT_SECONDS

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import

# torch, transformers and the search are imported inside the functions that train, so that
# reading a study (`autopeft show`, `load_study`, `front`) starts in a fraction of a second.

__all__ = ["search", "search_with_trainer", "worker", "load_study", "front", "select_trial", "export", "train", "plot",
           "load", "methods", "tasks", "SearchConfig"]


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
    and of ``DataSettings`` (data_dir, train_samples, eval_samples; for own data and
    ``hf:NAME[:CONFIG]`` datasets text_columns, label_column, train_split, validation_split,
    validation_share, ...).
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


def search_with_trainer(make_trainer: Any, model: Any, **options: Any) -> Any:
    """Search PEFT candidates that your own ``transformers.Trainer`` trains (``make_trainer(
    model, candidate)`` returns one); autopeft keeps the space, sampler, plan, rung pruning,
    storage, memory objective, report and export. See ``autopeft.hf_trainer``."""
    from autopeft.hf_trainer import search_with_trainer as run

    return run(make_trainer, model, **options)


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


def _study(study: Study, storage: str | None) -> Any:
    return load_study(study, storage) if isinstance(study, str) else study


def front(study: Study, storage: str | None = None, all_trials: bool = False,
          sort: str = "score") -> list[Row]:
    """The Pareto front (``all_trials``: every trial) as rows."""
    return rows(_study(study, storage), all_trials=all_trials, sort=sort)


def select_trial(study: Study, trial: int | None = None, best: str | None = None,
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


def export(study: Study, trial: int, out: str, *, storage: str | None = None, train: bool = False,
           force: bool = False, data_dir: str | None = None, model: str | None = None) -> Path:
    """Write trial ``trial``'s candidate to ``out`` (and, with ``train``, its trained weights).

    ``data_dir`` and ``model`` override where the study's data and base model are found.
    ``out/candidate.yaml`` is re-runnable: ``autopeft.train("out/candidate.yaml")``. With
    ``train`` the files are written once the training has finished: a failed or interrupted
    one leaves none, so the same export can run again without ``force``.
    """
    from autopeft.export import model_card, prepare_dir, retrain, write_config_only, write_trained
    from autopeft.tasks import TRAINER_PREFIX
    from autopeft.trial_info import trial_info

    info = trial_info(_study(study, storage), trial, model)
    path = prepare_dir(out, force)
    if train:  # trained first: a failed or interrupted training leaves no export to refuse
        trained, measured = retrain(info, data_dir)
        info.write(path)
        write_trained(path, info, trained, measured)
        return path
    info.write(path)
    if info.task.startswith(TRAINER_PREFIX):  # trained by the user's Trainer: no data here
        (path / "README.md").write_text(model_card(info))
    else:
        write_config_only(path, info)
    return path


def train(config: str | Path, out: str | None = None, *, force: bool = False,
          data_dir: str | None = None, model: str | None = None, seed: int | None = None,
          device: str | None = None) -> dict[str, Any]:
    """Train exactly the candidate of an exported ``candidate.yaml`` (or its folder): the same
    base model, data subset, training settings and seed as in the study, so on CPU the score
    and trainable parameter count match the trial's. Returns the measurements
    (``export.Measurements`` as a dict); with ``out`` also writes the trained weights,
    ``candidate.yaml``, ``metrics.json`` and a model card.

    ``seed`` re-trains with another seed (to see the spread); ``data_dir``, ``model`` and
    ``device`` override where the data and base model are and where to train."""
    from autopeft.export import ExportInfo, prepare_dir, retrain, write_trained

    # the overrides are checked too, before anything is written
    info = ExportInfo.read(config).overridden(str(config), model=model, seed=seed, device=device)
    path = prepare_dir(out, force) if out else None  # refuse a non-empty --out before training
    trained, measured = retrain(info, data_dir)
    if path is not None:
        info.write(path)
        write_trained(path, info, trained, measured)
    return measured.to_dict()


def plot(study: Study, out: str | None = None, *, storage: str | None = None) -> Any:
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


def methods(name: str | None = None) -> list[dict[str, Any]]:
    """The registered PEFT methods as plain rows (``name``: that one only; an unknown name is
    a ``UserError`` listing the known ones). ``params`` is ``{field: default}``; ``fields``
    adds each field's help: ``[{name, default, help}]``."""
    from autopeft.methods.registry import METHODS, get_method

    chosen = [get_method(name)] if name is not None else list(METHODS.values())
    return [{"name": m.name, "category": m.category, "engine": m.engine,
             "peft_export": m.peft_native, "summary": m.summary, "params": m.params(),
             "fields": m.fields()} for m in chosen]


def tasks() -> list[dict[str, Any]]:
    """The named tasks as plain rows: kind, label count, metric, model family, input columns,
    validation split and summary."""
    from autopeft.tasks import TASKS

    return [{"name": t.name, "kind": t.kind, "labels": t.num_labels, "metric": t.metric,
             "family": t.family, "inputs": list(t.text_columns), "validation": t.validation,
             "summary": t.summary} for t in TASKS.values()]
