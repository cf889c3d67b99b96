"""Opening a study: create or resume one for a search (its stored settings must match), or
load an existing one by name (a worker, ``autopeft show``)."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from autopeft.errors import UserError
from autopeft.results import DIRECTIONS, OBJECTIVES
from autopeft.search.config import SearchConfig
from autopeft.search.samplers import make_sampler
from autopeft.search.warmstart import entry_families
from autopeft.settings import DataSettings
from autopeft.search.storage import (existing_url, fail_dead_workers, mask, open_storage,
                                     storage_url)
from autopeft.space import Space


def study_attrs(cfg: SearchConfig, space: Space) -> dict[str, Any]:
    return {"task": cfg.task, "model": cfg.model, "space": space.source,
            "space_digest": space.digest, "space_text": space.text, "data": asdict(cfg.data),
            "train": asdict(cfg.train), "objectives": list(OBJECTIVES),
            "search": {"pruner": cfg.pruner, "eta": cfg.eta, "max_memory": cfg.max_memory,
                       "max_params": cfg.max_params, "sampler": cfg.sampler, "seed": cfg.seed,
                       "loss_check": cfg.loss_check, "checkpoint_space": cfg.checkpoint_space}}


def name_metrics(study: Any) -> None:
    """Name the objectives (``OBJECTIVES``) so optuna-dashboard and Optuna's plots show
    score / trainable_params / peak_memory_bytes, not "Objective 0/1/2"."""
    import warnings

    import optuna

    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVES))


def open_study(cfg: SearchConfig, space: Space) -> Any:
    """Create the study, or resume it if it exists with the same task, model and space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(cfg.study, cfg.storage)
    storage = open_storage(url, create=True, heartbeat=cfg.heartbeat)
    study = optuna.create_study(storage=storage, study_name=cfg.study, directions=list(DIRECTIONS),
                                load_if_exists=True)
    name_metrics(study)
    # A resumed study (or a second process) must not draw the same candidates again: the
    # sampler's seed moves on with the trials the study already holds.
    study.sampler = make_sampler(cfg.sampler, cfg.seed + len(study.get_trials(deepcopy=False)),
                                 entry_families(space))
    attrs = study_attrs(cfg, space)
    old = study.user_attrs
    if old:
        differs = [k for k in ("task", "model", "space_digest", "data", "train")
                   if k in old and _as_now(k, old[k]) != attrs[k]]
        if "space_digest" in differs:  # Optuna cannot change a study's choices, even forced
            raise UserError(f"study {cfg.study!r} in {mask(url)} exists with a different space; "
                            "use another --study name for this space")
        if differs and not cfg.force:
            raise UserError(f"study {cfg.study!r} in {mask(url)} exists with a different "
                            f"{', '.join(d.replace('_digest', '') for d in differs)}; use another "
                            "--study name, or --force to add trials to it anyway")
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    study.set_user_attr("max_trials", cfg.max_trials)  # every worker obeys the cap
    return study


def _as_now(key: str, stored: Any) -> Any:
    """A stored setting as this version writes it: a study from before a field was renamed
    (``data.seed``, now ``subset_seed``) resumes as the same study."""
    if key != "data" or not isinstance(stored, dict):
        return stored
    try:
        return asdict(DataSettings(**stored))
    except (TypeError, UserError):
        return stored  # not readable as settings: it differs


def open_existing_study(name: str, storage: str | None = None, heartbeat: int | None = None) -> Any:
    """The study ``name`` in ``storage`` (None: ``studies/<name>.db``, which must exist), as a
    reader and a joining worker open it. ``heartbeat``: a worker's seconds between beats
    (a reader beats nothing)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = existing_url(name, storage)
    try:
        study = optuna.load_study(study_name=name,
                                  storage=open_storage(url, create=False, heartbeat=heartbeat))
    except KeyError:
        raise UserError(f"no study named {name!r} in {mask(url)}; start it with "
                        "`autopeft search`") from None
    fail_dead_workers(study)  # so `show` never lists a killed search's trial as running
    return study
