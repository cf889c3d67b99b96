"""What a search is asked to do: ``SearchConfig`` (every setting of ``autopeft search``) and
its one validation path, run before any database is created."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from autopeft.checks import at_least, check_types, one_of, plain_name, positive, safe_name
from autopeft.errors import UserError
from autopeft.settings import DataSettings, TrainSettings
from autopeft.tracking import parse_report_to
from autopeft.search.budget import parse_duration
from autopeft.search.constraints import parse_params, parse_size
from autopeft.search.plan import parse_rungs
from autopeft.search.pruner import PRUNERS
from autopeft.search.samplers import DEFAULT_SAMPLER, SAMPLERS
from autopeft.search.storage import HEARTBEAT_SECONDS

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
    # Learn the start-up from earlier studies of the model's family (search/transfer.py), and
    # remember this one for later studies, in meta_store (default studies/.meta).
    # AUTOPEFT_TRANSFER=off: a cold start by default (the test suite's, so that its searches
    # neither read nor write a store unless a test asks).
    transfer: bool = field(default_factory=lambda: os.environ.get("AUTOPEFT_TRANSFER", "on") != "off")
    meta_store: str | None = None
    loss_check: bool = True  # stop a candidate whose training loss has not moved (losscheck)
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
    # At most this many of them share one GPU, each capped at its share of the memory;
    # "auto": as many as fit (measured peaks, else a full fine-tuning estimate), workers too.
    trials_per_gpu: int | str = 1
    # `autopeft worker` processes that will join from other machines: the plan sizes the
    # search for them too, each at the speed the probe measured here (search/plan.py).
    joining_workers: int = 0
    # Experiment trackers, HF Trainer's names: "tensorboard,mlflow,wandb", "all", "none"
    # (autopeft/tracking.py): a run per trial under the study's parent run.
    report_to: str | list[str] | None = None
    # What the study's checkpoints may hold on this machine: "20GB", "500MiB", or a share
    # of the free disk ("0.3", "30%"); None: half of it (search/continuation.py).
    checkpoint_space: str | float | None = None

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
    if cfg.trials_per_gpu != "auto" and (not isinstance(cfg.trials_per_gpu, int)
                                         or cfg.trials_per_gpu < 1):
        raise UserError(f"trials_per_gpu must be a whole number >= 1 or auto, got "
                        f"{cfg.trials_per_gpu!r}")
    at_least(cfg, 0, ["confirm_seeds", "seed", "joining_workers"])
    if isinstance(cfg.budget, (int, float)):
        positive(cfg, ["budget"])
    cfg.budget_seconds()
    if cfg.max_memory is not None:
        parse_size(cfg.max_memory)
    if cfg.max_params is not None:
        parse_params(cfg.max_params, 1)
    parse_rungs(cfg.rungs)
    parse_report_to(cfg.report_to)
    if cfg.checkpoint_space is not None:
        from autopeft.search.continuation import checkpoint_space  # torch: a search loads it anyway

        checkpoint_space(cfg.checkpoint_space, ".")
    at_least(cfg, 0, ["refit_share"], maximum=1)
    if cfg.refit_share == 1:
        raise UserError("refit_share must be below 1 (the search needs some of the budget)")
