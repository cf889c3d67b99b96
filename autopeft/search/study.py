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
from collections.abc import Sequence
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
from autopeft.search.summary import (Scales, promotion_fractions, record_hypervolume,
                                     searched_candidates)
from autopeft.search.transfer import (LR_PRIOR, StudyRecord, choose_portfolio, meta_store_dir,
                                      model_family, portfolio_size, trial_records, write_study)
from autopeft.search.warmstart import (candidate_params, enqueue_queue, enqueue_recipes,
                                       entry_families, portfolio_queue, recipe_queue,
                                       requeue_interrupted, tries_learning_rates)
from autopeft.search.workers import start_workers
from autopeft.space import Space, load_space, space_from_text
from autopeft.tasks import TRAINER_PREFIX, describe
from autopeft.tracking import REPORT_TO, parse_report_to, tracked
from autopeft.train import TrainSettings
from autopeft.validate import fit_space

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import


def plan_for(study: Study, cfg: SearchConfig, bench: Trainer, budget: Budget,
             slots: Sequence[Slot] = (Slot(None),)) -> Plan:
    """The study's stored plan (a resumed study keeps its rungs, so rung tables stay
    comparable), or a new one from the budget and costs measured now (``probe``) on
    ``bench``: where the trials will train (the trial process, with ``--isolation process``),
    for the trials that run at once (``slots``, this machine's, and ``--joining-workers``)."""
    from autopeft.results import describe_noise, study_noise
    from autopeft.search.plan import RUNG_EVAL_ROWS
    from autopeft.search.probe import probe, worker_throughput
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
    # a worker loads what this process loaded before the plan: its start-up, taken as ours
    started = (budget.seconds or 0.0) - (budget.left() or 0.0)
    throughput = worker_throughput(slots, cfg.joining_workers, started) if costs else None
    plan = make_plan(max_steps, budget.left(), costs, cfg.eta, 1 + cfg.confirm_seeds,
                     trial_steps, cfg.refit_share, rungs, bench.settings.warmup_ratio, throughput)
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
    from autopeft.metrics import constant_score
    from autopeft.validate import skeleton

    base_params = count_total(trainer.base.model)
    limits = Limits.parse(cfg.max_params, cfg.max_memory, base_params)
    if "hv_scales" not in study.user_attrs:
        study.set_user_attr("hv_scales", Scales.for_metric(trainer.task.metric, base_params).to_dict())
    if "started_at" not in study.user_attrs:
        study.set_user_attr("started_at", time.time())
    if "no_skill" not in study.user_attrs:  # what learning nothing scores (``nothing_learned``)
        labels = getattr(trainer.eval_data, "labels", None)  # a Trainer's own data: not known
        study.set_user_attr("no_skill", None if labels is None else constant_score(
            trainer.task.metric, labels, trainer.task.num_labels == 1))
    if cfg.warm_start and not study.trials:  # a portfolio learned before, else the recipes
        if not start_from_portfolio(study, cfg, space, trainer, plan, reporter) and (
                names := enqueue_recipes(study, space, tries_learning_rates(plan),
                                         short_schedule(plan))):
            reporter.note(f"warm start: {', '.join(names)} first")
    elif cfg.warm_start and (names := requeue_interrupted(study)):
        reporter.note(f"warm start: retrying the interrupted recipe(s) {', '.join(names)}")
    noise = float((study.user_attrs.get("noise") or {}).get("rung", 0.0))
    return TrialRunner(study, trainer, skeleton(trainer.base.model),
                       make_pruner(cfg.pruner, cfg.eta), limits, budget, reporter, plan, noise,
                       checkpoints=study_checkpoints(study, checkpoints_dir(cfg.study),
                                                     trainer.settings, cfg.checkpoint_space),
                       loss_check=cfg.loss_check, eta=cfg.eta, refit_readers=front_numbers)


def model_descriptor(name: str, model: Any) -> dict[str, Any]:
    """What the meta-store matches studies by: the model's type, its family, its size."""
    from autopeft.build import count_total

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return {"name": name, "model_type": model_type, "family": model_family(model_type),
            "params": count_total(model)}


def start_from_portfolio(study: Study, cfg: SearchConfig, space: Space, trainer: Trainer,
                         plan: Plan, reporter: Reporter) -> list[str]:
    """Enqueue a portfolio learned from earlier studies (``transfer.py``) on a fresh study,
    saying where it came from; [] where there is none (transfer off, nothing of the model's
    family, nothing the space can run): the recipes start it, as before.

    A portfolio with fewer members than the start-up's ``k`` places (earlier tasks whose
    fronts hold few candidates, e.g. one task that taught anything) is completed with the
    cold start-up's recipes, in their order: a start-up learned from little is never narrower
    than a cold one. Seen in the replay: SST-2's store (STS-B's curves alone; CoLA and RTE
    taught nothing) gave two (IA)3 candidates, and the LoRA recipe that a cold start runs
    first, better on SST-2, was not tried until the sampler came to it."""
    if not cfg.transfer:
        return []
    k = portfolio_size(plan.expected_candidates)
    k = min(k, cfg.n_trials) if cfg.n_trials and not plan.expected_candidates else k
    family = model_descriptor(cfg.model, trainer.base.model)["family"]
    found = choose_portfolio(meta_store_dir(cfg.meta_store), family, k,
                             lambda c: candidate_params(space, c) is not None, exclude=cfg.study)
    queue = portfolio_queue(space, found.candidates) if found else []
    fill: list[tuple[str, dict[str, Any]]] = []
    if queue:  # the recipes take the places the portfolio leaves
        recipes = recipe_queue(space, tries_learning_rates(plan), short_schedule(plan))
        fill = [(n, f) for n, f in recipes if all(f != q for _, q, _ in queue)][:k - len(queue)]
    names = enqueue_queue(study, [*queue, *fill])
    if names:
        reporter.note(found.describe(len(queue)) + (
            f"; the recipes fill its {len(fill)} other place{'s' if len(fill) != 1 else ''}: "
            + ", ".join(name for name, _ in fill) if fill else ""))
        study.set_user_attr("startup", {"source": found.source, "tasks": found.tasks,
                                        "studies": found.studies, "candidates": len(queue),
                                        "recipes": len(fill)})
        study.set_user_attr(LR_PRIOR, {  # what the sampler's learning-rate prior reads
            "best_lr": found.best_lr,
            "members": {name: found.member_scores[i] for name, _, i in queue
                        if i < len(found.member_scores)}})
    return names


def remember(study: Study, cfg: SearchConfig, bench: Any, plan: Plan, reporter: Reporter) -> None:
    """Append this study's trials to the meta-store for later start-ups (``transfer.py``);
    a store that cannot be written costs one note, never the search."""
    from autopeft.results import records

    if not cfg.transfer:
        return
    task = bench.task
    schedule = int(plan.schedule_steps or plan.max_steps)
    record = StudyRecord(
        study=str(cfg.study),
        task={"name": cfg.task, "metric": getattr(task, "metric", None),
              "num_labels": getattr(task, "num_labels", None), "train_rows": len(bench.train_data),
              "eval_rows": len(bench.eval_data)},
        model=model_descriptor(cfg.model, bench.base.model), schedule_steps=schedule,
        trials=trial_records(records(study.get_trials(deepcopy=False)), schedule))
    if note := write_study(meta_store_dir(cfg.meta_store), record):
        reporter.note(note)


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


def note_candidates(study: Study, plan: Plan, reporter: Reporter) -> None:
    """The candidates the budget bought beside the plan's expectation (stored as
    ``candidates``): how right the plan's costs and its workers' throughput were."""
    ran = len(searched_candidates(study.get_trials(deepcopy=False)))
    if plan.expected_candidates:
        study.set_user_attr("candidates", {"ran": ran, "planned": plan.expected_candidates})
        reporter.note(f"searched {ran} candidate{'s' if ran != 1 else ''} (planned about "
                      f"{plan.expected_candidates})")


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
        plan = plan_for(study, cfg, trainer, budget, slots)  # measured where the trials train
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
            if budget.seconds is not None and max_trials is None and cfg.n_trials is None:
                note_candidates(study, runner.plan, reporter)
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
    remember(study, cfg, bench, plan, reporter)
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
