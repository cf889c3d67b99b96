"""The study: create or resume it, then ask -> sample -> train -> tell until the budget ends.

Objectives, in this order: validation score (maximise), trainable parameters (minimise),
peak training memory in bytes (minimise). Each trial stores its candidate and its
measurements as user attributes, so it can be rebuilt and exported from the storage alone.

The loop stays short; the parts live beside it: ``objective.py`` (one trial: predict, skip,
rungs, prune, budget stop), ``pruner.py`` (MO-ASHA / median), ``constraints.py`` (limits and
predictions), ``warmstart.py`` (recipes),
``summary.py`` (hypervolume), ``budget.py`` (deadline and time predictions), ``plan.py``
(how long trials train, the rungs, the refit's share) with ``probe.py`` (its measured costs),
``refit.py`` (the front re-trained at the end). What a result means: ``autopeft/results.py``.
"""
from __future__ import annotations

import gc
import os
import time
import socket
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from autopeft.checks import at_least, check_types, one_of, plain_name, positive, safe_name
from autopeft.errors import UserError
from autopeft.isolation import IsolatedBench
from autopeft.paths import cache_dir
from autopeft.protocols import NullReporter, Reporter
from autopeft.results import DIRECTIONS, OBJECTIVES
from autopeft.runner import Bench, DataSettings
from autopeft.search.budget import Budget, parse_duration
from autopeft.search.constraints import Limits, parse_params, parse_size
from autopeft.search.objective import TrialRunner
from autopeft.search.plan import Plan, make_plan, parse_rungs
from autopeft.search.pruner import PRUNERS, make_pruner
from autopeft.search.samplers import DEFAULT_SAMPLER, SAMPLERS, make_sampler
from autopeft.search.storage import (HEARTBEAT_SECONDS, fail_stale_trials, heartbeat, mask,
                                     open_storage, storage_url)
from autopeft.search.refit import refit_front
from autopeft.search.summary import Scales, record_hypervolume
from autopeft.search.warmstart import enqueue_recipes, requeue_interrupted
from autopeft.search.workers import OVER_CAP, beyond_cap, cap_reached, seconds_left, start_workers
from autopeft.space import Space, load_space, space_from_text
from autopeft.train import TrainSettings
from autopeft.validate import fit_space

WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial
ISOLATION = ("process", "none")  # trials in a child process (crash-safe), or in this one


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
    sampler: str = DEFAULT_SAMPLER
    seed: int = 0
    trust_remote_code: bool = False
    force: bool = False
    pruner: str = "mo-asha"  # none | mo-asha | median-score
    eta: int = 3  # rungs at 1/eta^2, 1/eta of the steps and the end; top 1/eta go on
    warm_start: bool = True  # enqueue the standard recipes on a fresh study
    max_memory: str | None = None  # "16GB", "12GiB": peak training memory limit
    max_params: str | None = None  # "1%" of the base model, or a count ("2M")
    confirm_seeds: int = 0  # the refit re-trains each front member with this many extra seeds
    # The fidelity plan (search/plan.py) is made from the budget; these override it:
    trial_steps: int | None = None  # a search trial trains at most this many steps
    rungs: str | None = None  # "30,90,270": the steps at which trials are scored
    refit_share: float | None = None  # of the budget, kept for re-training the front
    isolation: str = field(default_factory=lambda: os.environ.get("AUTOPEFT_ISOLATION", "process"))
    heartbeat: int = HEARTBEAT_SECONDS  # seconds between beats of a running trial (RDB storages)
    max_trials: int | None = None  # a cap over all workers of the study
    workers: int = 1  # worker processes on this machine (this one included)

    def __post_init__(self) -> None:
        if self.data is None:
            self.data = DataSettings(task=self.task)
        check_search_config(self)  # everything, before any database is created
        if self.workers > 1 and self.max_trials is None:
            self.max_trials = self.n_trials  # with workers, --n-trials caps the whole study

    def budget_seconds(self) -> float | None:
        if self.budget is None or isinstance(self.budget, (int, float)):
            return self.budget
        return parse_duration(self.budget)


def check_search_config(cfg: SearchConfig) -> None:
    """Every search setting, as the CLI, the API and a joining worker give it."""
    check_types(cfg)
    cfg.data.get_task()
    if cfg.study is None:
        cfg.study = safe_name(f"{cfg.task}-{cfg.model.rstrip('/').split('/')[-1]}")
    plain_name(cfg.study)
    for name, choices in (("sampler", SAMPLERS), ("pruner", PRUNERS), ("isolation", ISOLATION)):
        one_of(cfg, name, choices)
    at_least(cfg, 1, ["n_trials", "workers", "heartbeat", "max_trials", "trial_steps"])
    at_least(cfg, 2, ["eta"])
    at_least(cfg, 0, ["confirm_seeds", "seed"])
    if isinstance(cfg.budget, (int, float)):
        positive(cfg, ["budget"])
    cfg.budget_seconds()
    if cfg.max_memory is not None:
        parse_size(cfg.max_memory)
    if cfg.max_params is not None:
        parse_params(cfg.max_params, 1)
    parse_rungs(cfg.rungs)
    at_least(cfg, 0, ["refit_share"], maximum=1)
    if cfg.refit_share == 1:
        raise UserError("refit_share must be below 1 (the search needs some of the budget)")


def _study_attrs(cfg: SearchConfig, space: Space) -> dict[str, Any]:
    return {"task": cfg.task, "model": cfg.model, "space": space.source,
            "space_digest": space.digest, "space_text": space.text, "data": asdict(cfg.data),
            "train": asdict(cfg.train), "objectives": list(OBJECTIVES),
            "search": {"pruner": cfg.pruner, "eta": cfg.eta, "max_memory": cfg.max_memory,
                       "max_params": cfg.max_params, "sampler": cfg.sampler, "seed": cfg.seed}}


def open_study(cfg: SearchConfig, space: Space) -> Any:
    """Create the study, or resume it if it exists with the same task, model and space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(cfg.study, cfg.storage)
    storage = open_storage(url, create=True, heartbeat=cfg.heartbeat)
    study = optuna.create_study(storage=storage, study_name=cfg.study, directions=list(DIRECTIONS),
                                load_if_exists=True)
    # A resumed study (or a second process) must not draw the same candidates again: the
    # sampler's seed moves on with the trials the study already holds.
    study.sampler = make_sampler(cfg.sampler, cfg.seed + len(study.get_trials(deepcopy=False)))
    attrs = _study_attrs(cfg, space)
    old = study.user_attrs
    if old:
        differs = [k for k in ("task", "model", "space_digest", "data", "train")
                   if k in old and old.get(k) != attrs[k]]
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


def plan_for(study: Any, cfg: SearchConfig, bench: Bench, budget: Budget) -> Plan:
    """The study's stored plan (a resumed study keeps its rungs, so rung tables stay
    comparable), or a new one from the budget and costs measured now (``probe``)."""
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
                     trial_steps, cfg.refit_share, rungs)
    study.set_user_attr("plan", plan.to_dict())
    study.set_user_attr("noise", default_noise(bench.task.metric))
    return plan


def prepare(study: Any, cfg: SearchConfig, space: Space, bench: Bench, budget: Budget,
            reporter: Reporter, plan: Plan) -> TrialRunner:
    """Resolve the limits, note the hypervolume scales, warm-start a fresh study."""
    import time

    from autopeft.build import count_total
    from autopeft.validate import skeleton

    base_params = count_total(bench.base.model)
    limits = Limits.parse(cfg.max_params, cfg.max_memory, base_params)
    if "hv_scales" not in study.user_attrs:
        study.set_user_attr("hv_scales", Scales.for_metric(bench.task.metric, base_params).to_dict())
    if "started_at" not in study.user_attrs:
        study.set_user_attr("started_at", time.time())
    if cfg.warm_start and not study.trials:
        names = enqueue_recipes(study, space)
        if names:
            reporter.note(f"warm start: {', '.join(names)} first")
    elif cfg.warm_start and (names := requeue_interrupted(study)):
        reporter.note(f"warm start: retrying the interrupted recipe(s) {', '.join(names)}")
    noise = float((study.user_attrs.get("noise") or {}).get("rung", 0.0))
    return TrialRunner(study, bench, skeleton(bench.base.model), make_pruner(cfg.pruner, cfg.eta),
                       limits, budget, reporter, plan, noise)


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
    plan = plan_for(study, cfg, bench, budget)
    reporter.note(plan.describe())
    search_budget = budget.share(1 - plan.refit_share)
    # Every worker of this study stops searching at the same time: the refit's share is left.
    left = search_budget.left()
    study.set_user_attr("deadline", None if left is None else time.time() + left)
    runner = prepare(study, cfg, space, bench, search_budget, reporter, plan)
    if cfg.isolation == "process":
        runner.bench = IsolatedBench.around(bench, cfg.model, cfg.data, cache_dir(),
                                            cfg.trust_remote_code)
    url = storage_url(cfg.study, cfg.storage)
    reporter.started(study, mask(url), budget, cfg.n_trials)
    procs = start_workers(cfg.workers - 1, cfg.study, url, cfg.isolation, cfg.heartbeat)
    try:
        run_trials(study, None if procs else cfg.n_trials, cfg.max_trials, space, runner,
                   search_budget, reporter)
        for proc in procs:  # they stop at the same cap and deadline
            proc.wait()
        if (plan.refit_steps > plan.trial_steps or cfg.confirm_seeds) and refit_front(
                study, runner.bench, plan, cfg.confirm_seeds, budget, reporter):
            record_hypervolume(study)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()  # Ctrl-C or an error here: the workers end their trials too
        if isinstance(runner.bench, IsolatedBench):
            runner.bench.close()
    reporter.finished(study)
    return study


def run_trials(study: Any, n_trials: int | None, max_trials: int | None, space: Space,
               runner: TrialRunner, budget: Budget, reporter: Reporter) -> None:
    """Ask, sample, train, tell: until ``n_trials`` ran here, the study holds ``max_trials``
    (all workers), or the next trial would not fit in the budget."""
    from optuna.trial import TrialState

    ran = 0
    while n_trials is None or ran < n_trials:
        fail_stale_trials(study)  # a dead worker's trial: FAIL, and retried once
        if cap_reached(study, max_trials):
            reporter.note(f"the study holds its {max_trials} trials")
            break
        if not budget.fits(runner.predicted_seconds()):
            reporter.note("budget reached: no further trial fits in the time left")
            break
        with warnings.catch_warnings():  # we beat ourselves (heartbeat below), not optimize()
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        if beyond_cap(study, trial, max_trials):  # another worker took the last slot
            trial.set_user_attr(OVER_CAP, True)
            study.tell(trial, state=TrialState.FAIL)
            break
        try:
            candidate = space.sample(trial)
        except BaseException:  # e.g. a choice the study never had: leave nothing RUNNING
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr("candidate", candidate.to_dict())
        trial.set_user_attr("label", candidate.label)
        trial.set_user_attr("worker", WORKER)
        reporter.trial_started(trial.number, candidate)
        with heartbeat(study, trial):
            runner.run(trial, candidate)
        record_hypervolume(study)
        gc.collect()
        ran += 1


def run_worker(study_name: str, storage: str | None = None, reporter: Reporter | None = None,
               isolation: str | None = None, heartbeat: int = HEARTBEAT_SECONDS,
               device: str | None = None) -> Any:
    """Join an existing study and run its trials until its cap or deadline is reached.

    Everything (task, model, data, training settings, space, pruner, limits) comes from the
    study, so a worker needs only the study's name and storage URL."""
    import optuna

    reporter = reporter or NullReporter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(study_name, storage)
    try:
        study = optuna.load_study(study_name=study_name,
                                  storage=open_storage(url, create=False, heartbeat=heartbeat))
    except KeyError:
        raise UserError(f"no study named {study_name!r} in {mask(url)}; start it with "
                        "`autopeft search`") from None
    a = study.user_attrs
    if "space_text" not in a:
        raise UserError(f"study {study_name!r} was not made by this autopeft version's search")
    train = TrainSettings(**{**a["train"], **({"device": device} if device else {})})
    cfg = SearchConfig(task=a["task"], model=a["model"], study=study_name, storage=url,
                       data=DataSettings(**a["data"]), train=train,
                       **{k: v for k, v in a["search"].items() if k != "sampler"},
                       isolation=isolation or os.environ.get("AUTOPEFT_ISOLATION", "process"),
                       heartbeat=heartbeat, max_trials=a.get("max_trials"), n_trials=1)
    if cfg.max_trials is None and a.get("deadline") is None:
        raise UserError(f"study {study_name!r} has neither a trial cap nor a deadline: start it "
                        "with `autopeft search ... --max-trials N` or `--budget`")
    study.sampler = make_sampler(a["search"]["sampler"], None)  # seeds would repeat across workers
    bench = Bench.load(cfg.model, cfg.data, cfg.train, cache_dir(), cfg.trust_remote_code)
    space, _ = fit_space(space_from_text(a["space_text"], a["space"]), bench.base.model)
    budget = Budget(seconds_left(study))
    plan = Plan.from_dict(a["plan"])
    runner = prepare(study, replace(cfg, warm_start=False), space, bench, budget, reporter, plan)
    if cfg.isolation == "process":
        runner.bench = IsolatedBench.around(bench, cfg.model, cfg.data, cache_dir())
    reporter.started(study, mask(url), budget, None)
    try:
        run_trials(study, None, cfg.max_trials, space, runner, budget, reporter)
    finally:
        if isinstance(runner.bench, IsolatedBench):
            runner.bench.close()
    reporter.finished(study)
    return study
