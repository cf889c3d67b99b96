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
from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from autopeft.devices import (Slot, auto_trials_per_gpu, device_index, device_memory, fits,
                              own_slot, place, visible_devices, worker_device)
from autopeft.errors import UserError
from autopeft.isolation import IsolatedBench
from autopeft.paths import cache_dir, checkpoints_dir
from autopeft.protocols import NullReporter, Reporter, Trainer
from autopeft.runner import Bench, DataSettings
from autopeft.search.budget import Budget, Clock, Phase
from autopeft.search.config import SearchConfig
from autopeft.search.constraints import Limits
from autopeft.search.continuation import drop_finished, requeue_cut_short, study_checkpoints
from autopeft.search.loop import run_trials
from autopeft.search.objective import TrialRunner
from autopeft.search.open import open_existing_study, open_study
from autopeft.search.plan import Plan, make_plan, parse_rungs, short_schedule
from autopeft.search.pruner import make_pruner
from autopeft.search.samplers import make_sampler
from autopeft.search.storage import HEARTBEAT_SECONDS, existing_url, mask, storage_url
from autopeft.search.refit import front_numbers, refit_front
from autopeft.search.summary import Scales, promotion_fractions, record_hypervolume
from autopeft.search.warmstart import (enqueue_recipes, entry_families, requeue_interrupted,
                                       tries_learning_rates)
from autopeft.search.workers import start_workers
from autopeft.space import Space, load_space, space_from_text
from autopeft.tasks import TRAINER_PREFIX, describe
from autopeft.tracking import REPORT_TO, parse_report_to, tracked
from autopeft.train import TrainSettings
from autopeft.validate import fit_space

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import


def plan_for(study: Study, cfg: SearchConfig, bench: Trainer, budget: Budget) -> Plan:
    """The study's stored plan (a resumed study keeps its rungs, so rung tables stay
    comparable), or a new one from the budget and costs measured now (``probe``) on
    ``bench``: where the trials will train (the trial process, with ``--isolation process``)."""
    from autopeft.results import describe_noise, study_noise
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
    noise = study_noise(bench.task.metric, plan.rung_eval_rows, len(bench.eval_data))
    plan.notes.append(describe_noise(noise))
    study.set_user_attr("plan", plan.to_dict())
    study.set_user_attr("noise", noise)
    return plan


def refit_phase(budget: Budget, plan: Plan, asked: float | None = None) -> Budget:
    """``budget`` with the refit's phase at its end: the plan's share of the time it was
    made for (``plan.budget_seconds``, what was left after loading and the probe), or of the
    whole budget where the user asked for a share (``--refit-share``) or a plan does not
    say (an older study's plan)."""
    if asked is None and plan.budget_seconds:
        return budget.with_refit_seconds(plan.refit_share * plan.budget_seconds)
    return budget.with_refit_share(plan.refit_share)


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
        names = enqueue_recipes(study, space, tries_learning_rates(plan), short_schedule(plan))
        if names:
            reporter.note(f"warm start: {', '.join(names)} first")
    elif cfg.warm_start and (names := requeue_interrupted(study)):
        reporter.note(f"warm start: retrying the interrupted recipe(s) {', '.join(names)}")
    noise = float((study.user_attrs.get("noise") or {}).get("rung", 0.0))
    return TrialRunner(study, trainer, skeleton(trainer.base.model),
                       make_pruner(cfg.pruner, cfg.eta), limits, budget, reporter, plan, noise,
                       checkpoints=study_checkpoints(study, checkpoints_dir(cfg.study),
                                                     trainer.settings, cfg.checkpoint_space),
                       loss_check=cfg.loss_check, eta=cfg.eta, refit_readers=front_numbers)


def trainer_for(cfg: SearchConfig, bench: Bench) -> AbstractContextManager[Trainer]:
    """Where this process's trials train, chosen once: in a child process (``--isolation
    process``: ended when the ``with`` block ends) or in ``bench`` itself."""
    if cfg.isolation == "process":
        return IsolatedBench.around(bench, cfg.model, cfg.data, cache_dir(), cfg.trust_remote_code)
    return contextlib.nullcontext(bench)


def per_trial_bytes(study: Study, bench: Bench) -> int:
    """What one worker holds on its GPU, for checking that several fit: the base it keeps
    there plus the largest training peak the study measured on CUDA, else full fine-tuning's
    static part (fp32 weights, gradients, AdamW's two moments: 16 bytes a parameter)."""
    from autopeft.memory import CUDA_METHOD

    kept = sum(t.numel() * t.element_size() for t in
               [*bench.base.model.parameters(), *bench.base.model.buffers()])
    peaks = [t.user_attrs.get("peak_memory_bytes") or 0 for t in study.get_trials(deepcopy=False)
             if t.state.name == "COMPLETE" and t.user_attrs.get("memory_method") == CUDA_METHOD]
    params = sum(p.numel() for p in bench.base.model.parameters())
    return int(kept + (max(peaks) if peaks else 16 * params))


def placement(cfg: SearchConfig, bench: Bench, study: Study, reporter: Reporter) -> list[Slot]:
    """Where this machine's workers train (slot 0: this process): GPUs from the inherited
    list, at most ``--trials-per-gpu`` to one (``auto``: as many as fit, that many workers
    per GPU). Says in one line when the workers sharing a GPU may not fit in its memory."""
    from autopeft.train import resolve_device

    device = resolve_device(bench.settings.device)
    gpus = visible_devices() if device.type == "cuda" else []
    if not gpus:
        return place(cfg.workers, [], 1)
    first = device_index(bench.settings.device)
    auto = cfg.trials_per_gpu == "auto"
    if cfg.workers == 1 and not auto:  # the search alone on its GPU: nothing to share or check
        return place(1, gpus, 1, first)
    need, have = per_trial_bytes(study, bench), device_memory(gpus[first])
    k = auto_trials_per_gpu(need, have) if auto else int(cfg.trials_per_gpu)
    slots = place(k * len(gpus) if auto else cfg.workers, gpus, k, first)
    sharing = max(Counter(s.device for s in slots).values())
    gib = 2**30
    if fits(need, have, sharing) < sharing:
        reporter.note(f"{sharing} trials on one GPU may not fit: each needs about "
                      f"{need / gib:.1f} GiB of {have / gib:.1f} GiB; each is capped at "
                      f"1/{sharing} and an out-of-memory trial fails alone")
    elif auto:
        reporter.note(f"--trials-per-gpu auto: {k} per GPU ({len(slots)} workers), each about "
                      f"{need / gib:.1f} GiB of {have / gib:.1f} GiB")
    return slots


def run_search(cfg: SearchConfig, reporter: Reporter | None = None, bench: Bench | None = None,
               clock: Clock = time.time) -> Any:
    """Run (or resume) the study described by ``cfg``; returns the Optuna study. ``clock``
    is what every deadline reads (a test's own moves time without waiting)."""
    reporter = reporter or NullReporter()
    budget = Budget(cfg.budget_seconds(), clock(), clock=clock)
    if cfg.n_trials is None and budget.seconds is None and cfg.max_trials is None:
        raise UserError("give --budget, --n-trials or --max-trials, or the search never ends")
    space = load_space(cfg.space)
    bench = bench or Bench.load(cfg.model, cfg.data, cfg.train, cache_dir(), cfg.trust_remote_code)
    space, notes = fit_space(space, bench.base.model)  # before any database is created
    study = open_study(cfg, space)
    study.set_user_attr(REPORT_TO, parse_report_to(cfg.report_to))  # its workers report there too
    reporter = tracked(reporter, cfg.report_to, cfg.study)
    for note in [describe(bench.task, cfg.data.own()), *bench.notes, *notes]:
        reporter.note(note)
    url = storage_url(cfg.study, cfg.storage)
    slots = placement(cfg, bench, study, reporter)
    max_trials = cfg.max_trials
    if len(slots) > 1 and max_trials is None:  # --trials-per-gpu auto chose the workers
        max_trials = cfg.n_trials
        study.set_user_attr("max_trials", max_trials)
    with own_slot(slots[0]), trainer_for(cfg, bench) as trainer:
        plan = plan_for(study, cfg, trainer, budget)  # measured where the trials train
        reporter.note(plan.describe())
        budget = refit_phase(budget, plan, cfg.refit_share)
        budget.store(study)  # every worker of this study stops searching when the refit's share begins
        runner = prepare(study, cfg, space, trainer, budget.search, reporter, plan)
        reporter.note(runner.checkpoints.describe())
        if cut := requeue_cut_short(study, runner.checkpoints, int(plan.schedule_steps or 0),
                                    plan.trial_steps):
            reporter.note(f"continuing trial(s) {', '.join(map(str, cut))} from their "
                          "checkpoints first")
        reporter.started(study, mask(url), budget, cfg.n_trials)
        procs = start_workers(len(slots) - 1, cfg.study, url, cfg.isolation, cfg.heartbeat,
                              slots[1:])
        try:
            run_trials(study, None if procs else cfg.n_trials, max_trials, space, runner,
                       budget.search, reporter)
            for proc in procs:  # they stop at the same cap and deadline
                proc.wait()
            if (plan.refit_steps > plan.trial_steps or cfg.confirm_seeds) and refit_front(
                    study, trainer, plan, cfg.confirm_seeds, budget, reporter,
                    runner.checkpoints):
                record_hypervolume(study)
            if len(runner.rungs) > 1:  # what successive halving did, beside what it planned
                fractions = promotion_fractions(study.get_trials(deepcopy=False), runner.rungs,
                                                cfg.eta)
                study.set_user_attr("promotion", fractions)
                reporter.note("reached each rung: " + ", ".join(
                    f"step {f['step']} {f['reached']} of {f['of']} (planned "
                    f"{f['planned']:.0%})" for f in fractions))
            files, size = drop_finished(study, runner.checkpoints, int(plan.schedule_steps
                                                                       or plan.trial_steps))
            if files:
                reporter.note(f"deleted the checkpoints of {files} finished trial"
                              f"{'s' if files != 1 else ''} ({size / 2**20:.0f} MiB): only a "
                              "refit reads them; those of trials cut short or paused stay")
            reporter.note(runner.checkpoints.describe())
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()  # Ctrl-C or an error here: the workers end their trials too
    reporter.finished(study)
    return study


def run_worker(study_name: str, storage: str | None = None, reporter: Reporter | None = None,
               isolation: str | None = None, heartbeat: int = HEARTBEAT_SECONDS,
               device: str | None = None, clock: Clock = time.time) -> Any:
    """Join an existing study and run its trials until its cap or deadline is reached.

    Everything (task, model, data, training settings, space, pruner, limits) comes from the
    study, so a worker needs only the study's name and storage URL."""
    reporter = reporter or NullReporter()
    url = existing_url(study_name, storage)
    study = open_existing_study(study_name, url, heartbeat)
    a = study.user_attrs
    if "space_text" not in a:
        raise UserError(f"study {study_name!r} was not made by this autopeft version's search")
    if str(a["task"]).startswith(TRAINER_PREFIX):
        raise UserError(f"study {study_name!r} is trained by your own Trainer "
                        "(search_with_trainer): autopeft holds none of its data, so a worker "
                        "cannot train its trials; call search_with_trainer again with "
                        f"study={study_name!r} (and its storage) to add trials")
    own_device = worker_device(a["train"].get("device", "auto"), device)  # its GPU is `cuda`
    train = TrainSettings(**{**a["train"], "device": own_device})
    cfg = SearchConfig(task=a["task"], model=a["model"], study=study_name, storage=url,
                       data=DataSettings(**a["data"]), train=train,
                       **{k: v for k, v in a["search"].items() if k != "sampler"},
                       **({"isolation": isolation} if isolation else {}),  # else the default
                       heartbeat=heartbeat, max_trials=a.get("max_trials"), n_trials=1)
    budget = Budget.of_study(a, clock)
    if cfg.max_trials is None and budget.search.seconds is None:
        raise UserError(f"study {study_name!r} has neither a trial cap nor a deadline: start it "
                        "with `autopeft search ... --max-trials N` or `--budget`")
    reporter = tracked(reporter, a.get(REPORT_TO), study_name, owner=False)
    bench = Bench.load(cfg.model, cfg.data, cfg.train, cache_dir(), cfg.trust_remote_code)
    space, _ = fit_space(space_from_text(a["space_text"], a["space"]), bench.base.model)
    # seed None: seeds would repeat across workers
    study.sampler = make_sampler(a["search"]["sampler"], None, entry_families(space))
    plan = Plan.from_dict(a["plan"])
    with trainer_for(cfg, bench) as trainer:
        runner = prepare(study, replace(cfg, warm_start=False), space, trainer, budget.search,
                         reporter, plan)
        reporter.started(study, mask(url), budget.search, None)
        run_trials(study, None, cfg.max_trials, space, runner, budget.search, reporter)
    reporter.finished(study)
    return study
