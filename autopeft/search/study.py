"""The entry points of the search: ``run_search`` (create or resume a study, plan it, search,
refit the front) and ``run_worker`` (join a study and run its trials until its cap or deadline).

Objectives, in this order: validation score (maximise), trainable parameters (minimise),
peak training memory in bytes (minimise). Each trial stores its candidate and its
measurements as user attributes, so it can be rebuilt and exported from the storage alone.

The parts live beside it: ``config.py`` (the settings), ``open.py`` (create, resume or load
a study), ``loop.py`` (ask -> sample -> train -> tell), ``objective.py`` (one trial: predict,
skip, rungs, prune, budget stop), ``pruner.py`` (MO-ASHA / median), ``samplers.py``,
``constraints.py`` (limits and predictions), ``warmstart.py`` (recipes), ``summary.py``
(hypervolume), ``budget.py`` (deadlines and time predictions), ``plan.py`` (how long trials
train, the rungs, the refit's share) with ``probe.py`` (its measured costs), ``refit.py``
(the front re-trained at the end), ``storage.py`` and ``workers.py`` (many workers, one
study). What a result means: ``autopeft/results.py``.
"""
from __future__ import annotations

import contextlib
import time
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from autopeft.errors import UserError
from autopeft.isolation import IsolatedBench
from autopeft.paths import cache_dir
from autopeft.protocols import NullReporter, Reporter, Trainer
from autopeft.runner import Bench, DataSettings
from autopeft.search.budget import Budget, Phase
from autopeft.search.config import SearchConfig
from autopeft.search.constraints import Limits
from autopeft.search.loop import run_trials
from autopeft.search.objective import TrialRunner
from autopeft.search.open import open_existing_study, open_study
from autopeft.search.plan import Plan, make_plan, parse_rungs
from autopeft.search.pruner import make_pruner
from autopeft.search.samplers import make_sampler
from autopeft.search.storage import HEARTBEAT_SECONDS, existing_url, mask, storage_url
from autopeft.search.refit import refit_front
from autopeft.search.summary import Scales, record_hypervolume
from autopeft.search.warmstart import enqueue_recipes, requeue_interrupted
from autopeft.search.workers import start_workers
from autopeft.space import Space, load_space, space_from_text
from autopeft.train import TrainSettings
from autopeft.validate import fit_space

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import


def plan_for(study: Study, cfg: SearchConfig, bench: Trainer, budget: Budget) -> Plan:
    """The study's stored plan (a resumed study keeps its rungs, so rung tables stay
    comparable), or a new one from the budget and costs measured now (``probe``) on
    ``bench``: where the trials will train (the trial process, with ``--isolation process``)."""
    from autopeft.results import default_noise
    from autopeft.search.plan import RUNG_EVAL_ROWS
    from autopeft.search.probe import probe
    from autopeft.train import total_steps

    rungs = parse_rungs(cfg.rungs)
    trial_steps = rungs[-1] if rungs else cfg.trial_steps
    stored = study.user_attrs.get("plan")
    if stored and trial_steps is None and cfg.refit_share is None:
        plan = Plan.from_dict(stored)
        plan.source = "study"
        return plan
    max_steps = total_steps(len(bench.train_data), bench.settings)
    fixed = trial_steps is not None and cfg.refit_share is not None  # nothing left to fit
    costs = probe(bench, RUNG_EVAL_ROWS) if budget.seconds is not None and not fixed else None
    plan = make_plan(max_steps, budget.left(), costs, cfg.eta, 1 + cfg.confirm_seeds,
                     trial_steps, cfg.refit_share, rungs, bench.settings.warmup_ratio)
    study.set_user_attr("plan", plan.to_dict())
    study.set_user_attr("noise", default_noise(bench.task.metric))
    return plan


def prepare(study: Study, cfg: SearchConfig, space: Space, trainer: Trainer, budget: Phase,
            reporter: Reporter, plan: Plan) -> TrialRunner:
    """Resolve the limits, note the hypervolume scales, warm-start a fresh study."""
    from autopeft.build import count_total
    from autopeft.validate import skeleton

    base_params = count_total(trainer.base.model)
    limits = Limits.parse(cfg.max_params, cfg.max_memory, base_params)
    if "hv_scales" not in study.user_attrs:
        study.set_user_attr("hv_scales", Scales.for_metric(trainer.task.metric, base_params).to_dict())
    if "started_at" not in study.user_attrs:
        study.set_user_attr("started_at", time.time())
    if cfg.warm_start and not study.trials:
        names = enqueue_recipes(study, space)
        if names:
            reporter.note(f"warm start: {', '.join(names)} first")
    elif cfg.warm_start and (names := requeue_interrupted(study)):
        reporter.note(f"warm start: retrying the interrupted recipe(s) {', '.join(names)}")
    noise = float((study.user_attrs.get("noise") or {}).get("rung", 0.0))
    return TrialRunner(study, trainer, skeleton(trainer.base.model),
                       make_pruner(cfg.pruner, cfg.eta), limits, budget, reporter, plan, noise,
                       loss_check=cfg.loss_check)


def trainer_for(cfg: SearchConfig, bench: Bench) -> AbstractContextManager[Trainer]:
    """Where this process's trials train, chosen once: in a child process (``--isolation
    process``: ended when the ``with`` block ends) or in ``bench`` itself."""
    if cfg.isolation == "process":
        return IsolatedBench.around(bench, cfg.model, cfg.data, cache_dir(), cfg.trust_remote_code)
    return contextlib.nullcontext(bench)


def run_search(cfg: SearchConfig, reporter: Reporter | None = None, bench: Bench | None = None) -> Any:
    """Run (or resume) the study described by ``cfg``; returns the Optuna study."""
    reporter = reporter or NullReporter()
    budget = Budget(cfg.budget_seconds())
    if cfg.n_trials is None and budget.seconds is None and cfg.max_trials is None:
        raise UserError("give --budget, --n-trials or --max-trials, or the search never ends")
    space = load_space(cfg.space)
    bench = bench or Bench.load(cfg.model, cfg.data, cfg.train, cache_dir(), cfg.trust_remote_code)
    space, notes = fit_space(space, bench.base.model)  # before any database is created
    study = open_study(cfg, space)
    for note in [*bench.notes, *notes]:
        reporter.note(note)
    url = storage_url(cfg.study, cfg.storage)
    with trainer_for(cfg, bench) as trainer:
        plan = plan_for(study, cfg, trainer, budget)  # measured where the trials train
        reporter.note(plan.describe())
        budget = budget.with_refit_share(plan.refit_share)
        budget.store(study)  # every worker of this study stops searching when the refit's share begins
        runner = prepare(study, cfg, space, trainer, budget.search, reporter, plan)
        reporter.started(study, mask(url), budget, cfg.n_trials)
        procs = start_workers(cfg.workers - 1, cfg.study, url, cfg.isolation, cfg.heartbeat)
        try:
            run_trials(study, None if procs else cfg.n_trials, cfg.max_trials, space, runner,
                       budget.search, reporter)
            for proc in procs:  # they stop at the same cap and deadline
                proc.wait()
            if (plan.refit_steps > plan.trial_steps or cfg.confirm_seeds) and refit_front(
                    study, trainer, plan, cfg.confirm_seeds, budget, reporter):
                record_hypervolume(study)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()  # Ctrl-C or an error here: the workers end their trials too
    reporter.finished(study)
    return study


def run_worker(study_name: str, storage: str | None = None, reporter: Reporter | None = None,
               isolation: str | None = None, heartbeat: int = HEARTBEAT_SECONDS,
               device: str | None = None) -> Any:
    """Join an existing study and run its trials until its cap or deadline is reached.

    Everything (task, model, data, training settings, space, pruner, limits) comes from the
    study, so a worker needs only the study's name and storage URL."""
    reporter = reporter or NullReporter()
    url = existing_url(study_name, storage)
    study = open_existing_study(study_name, url, heartbeat)
    a = study.user_attrs
    if "space_text" not in a:
        raise UserError(f"study {study_name!r} was not made by this autopeft version's search")
    train = TrainSettings(**{**a["train"], **({"device": device} if device else {})})
    cfg = SearchConfig(task=a["task"], model=a["model"], study=study_name, storage=url,
                       data=DataSettings(**a["data"]), train=train,
                       **{k: v for k, v in a["search"].items() if k != "sampler"},
                       **({"isolation": isolation} if isolation else {}),  # else the default
                       heartbeat=heartbeat, max_trials=a.get("max_trials"), n_trials=1)
    budget = Budget.of_study(a)
    if cfg.max_trials is None and budget.search.seconds is None:
        raise UserError(f"study {study_name!r} has neither a trial cap nor a deadline: start it "
                        "with `autopeft search ... --max-trials N` or `--budget`")
    study.sampler = make_sampler(a["search"]["sampler"], None)  # seeds would repeat across workers
    bench = Bench.load(cfg.model, cfg.data, cfg.train, cache_dir(), cfg.trust_remote_code)
    space, _ = fit_space(space_from_text(a["space_text"], a["space"]), bench.base.model)
    plan = Plan.from_dict(a["plan"])
    with trainer_for(cfg, bench) as trainer:
        runner = prepare(study, replace(cfg, warm_start=False), space, trainer, budget.search,
                         reporter, plan)
        reporter.started(study, mask(url), budget.search, None)
        run_trials(study, None, cfg.max_trials, space, runner, budget.search, reporter)
    reporter.finished(study)
    return study
