"""A study's trial as an ``ExportInfo``: what ``autopeft export`` writes to candidate.yaml.

Its own module because it reads the search's plan (how long the trial trained) while
``export.py`` sits below ``search/``; ``api`` is its only caller.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from autopeft.errors import UserError
from autopeft.export import ExportInfo, Objectives
from autopeft.results import record
from autopeft.search.plan import Plan

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import


def trial_info(study: Study, trial: int, model: str | None = None) -> ExportInfo:
    """Trial ``trial`` of the Optuna ``study`` with the study's data and training settings,
    checked like a candidate.yaml (e.g. its device is not on this machine); ``model``
    overrides where the base model is."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial not in trials:
        raise UserError(f"study {study.study_name!r} has no trial {trial} "
                        f"(trials 0..{len(trials) - 1})")
    t = trials[trial]
    r = record(t)
    if r.fidelity not in ("refit", "search", "provisional") or "candidate" not in t.user_attrs:
        raise UserError(f"trial {trial} is {t.state.name.lower()} with no score; pick a trial "
                        "from `autopeft show`")
    attrs = study.user_attrs
    objectives = {"score": r.score, "trainable_params": r.trainable_params,
                  "peak_memory_bytes": r.peak_memory_bytes, "fidelity": r.fidelity,
                  "steps": r.steps}
    objectives |= {f.name: t.user_attrs[f.name] for f in dataclasses.fields(Objectives)
                   if f.name not in objectives and f.name in t.user_attrs}  # e.g. the refit's
    raw = {"study": study.study_name, "trial": trial, "model": os.fspath(model or attrs["model"]),
           "task": attrs["task"], "data": attrs["data"], "train": attrs["train"],
           "candidate": t.user_attrs["candidate"], "objectives": objectives}
    if attrs.get("plan"):  # how long it trained, so `export --train` gets the same score
        plan = Plan.from_dict(attrs["plan"])
        raw["fidelity"] = {"schedule_steps": plan.schedule_steps,
                           "stop_at": r.steps if r.fidelity == "refit" else plan.trial_steps}
    return ExportInfo.from_dict(raw, f"study {study.study_name!r}")
