"""Bring your own Trainer: your ``transformers.Trainer`` (or ``trl.SFTTrainer``, any subclass)
trains each candidate; autopeft keeps the space, the sampler, the fidelity plan, the pruning
at rungs, the storage, the memory objective, the report and the export.

    study = autopeft.search_with_trainer(
        lambda model, candidate: Trainer(model=model, args=args, train_dataset=train,
                                         eval_dataset=dev, compute_metrics=accuracy),
        model=Path("./minilm"), model_kwargs={"num_labels": 2}, budget="1h")

Runnable examples (a Trainer, TRL's SFTTrainer): ``examples/``.

How a candidate trains: ``build`` puts it on a fresh copy of the base model, your
``make_trainer(model, candidate)`` returns a Trainer for that model, and before training
autopeft sets on a copy of its ``TrainingArguments`` what the search decides: the
candidate's ``learning_rate`` and ``seed``, and ``max_steps`` = the plan's schedule length
(a search trial stops part-way through that schedule, as autopeft's own loop does). A
``TrainerCallback`` (``RungCallback``) then

* asks for an evaluation at each rung of the plan and reads the score from the metrics
  (``metric_for_best_model``, negated where lower is better); when the pruner cuts the trial
  it sets ``control.should_training_stop`` and the trial is recorded PRUNED with its reason;
* stops at the trial's length, or when the budget ends;
* runs the methods' step hooks where autopeft's loop runs them: Child-Tuning D's Fisher pass
  on the Trainer's train dataloader before the first step, Child-Tuning's gradient masks
  before each optimiser step (after clipping), AdaLoRA's ``update_and_allocate`` after it;
* measures peak training memory as ``memory.PeakMemory`` does (CUDA's allocator peak; on
  CPU weights + gradients + optimiser state + the activations saved for backward, per
  micro-batch).

While autopeft reports, the Trainer's own progress bars and printed log dicts are off and
it logs every step (``quiet``); its log dicts go to the trial's run in the trackers
(``tracking``: ``report_to=``, else the Trainer's own ``report_to``), whose integration
callbacks for those trackers are removed (one run per trial, autopeft's).

Tensors a method trains at their own learning rate (ProPETL's mask scores) get their own
group in the Trainer's optimizer. What a Trainer cannot take is said in one line
(``UserError``): its own optimizer (the candidate's learning rate could not be set), no
``eval_dataset``, or a metric its evaluation does not return.

The study is a normal autopeft study (``show``, ``plot``, ``export`` of the configuration);
its task is ``trainer:METRIC``. autopeft holds none of its data, so ``export --train``,
``autopeft train`` and ``autopeft worker`` say to train with your Trainer instead:
``build_trial(model, study, trial)`` rebuilds a trial's candidate on your base model.
Trials run in this process (``isolation: none``): the factory cannot cross to a child.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autopeft.build import build, count_stored, count_total, count_trainable
from autopeft.candidate import Candidate, MethodSpec
from autopeft.contract import HOOKS_ATTR, learning_rates
from autopeft.errors import UserError
from autopeft.models import NEW_PARAMETERS_ATTR, BaseModel, import_bitsandbytes_quietly, new_parameters
from autopeft.runner import Fidelity, Outcome
from autopeft.settings import DataSettings, TrainSettings
from autopeft.tasks import TRAINER_PREFIX, Task, get_task
from autopeft.tracking import TRACKERS, installed, parse_report_to, tracked
from autopeft.train import TrainResult, total_steps

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import

MakeTrainer = Callable[[Any, Candidate], Any]  # (model, candidate) -> transformers.Trainer
# The search options a Trainer search takes (SearchConfig's fields, less what the Trainer
# decides or what cannot cross to another process).
NOT_OPTIONS = {"task", "model", "data", "train", "isolation", "workers", "joining_workers"}


@dataclass(frozen=True)
class Metric:
    """Which evaluation metric is the score: ``key`` as the Trainer reports it (``eval_...``),
    negated where lower is better (the study maximises its score)."""

    key: str
    greater_is_better: bool

    @classmethod
    def of(cls, args: Any, metric: str | None, greater_is_better: bool | None) -> Metric:
        """``metric`` or the Trainer's ``metric_for_best_model``, else its loss; better is
        higher unless said (``greater_is_better``, the Trainer's too) or the name ends in loss."""
        name = metric or getattr(args, "metric_for_best_model", None) or "loss"
        key = name if name.startswith("eval_") else f"eval_{name}"
        if greater_is_better is None:
            given = getattr(args, "greater_is_better", None)
            greater_is_better = (given if given is not None and not metric
                                 else not key.endswith("loss"))
        return cls(key, bool(greater_is_better))

    @property
    def task_metric(self) -> str:
        """The study's metric name: ``accuracy``, or ``neg_loss`` where lower is better."""
        base = self.key[len("eval_"):]
        return base if self.greater_is_better else f"neg_{base}"

    def score(self, metrics: dict[str, float]) -> float:
        if self.key not in metrics:
            raise UserError(f"your Trainer's evaluation returns no {self.key!r} (it returns "
                            f"{', '.join(sorted(metrics)) or 'nothing'}); set "
                            "metric_for_best_model (or metric=) to one of them, or return it "
                            "from compute_metrics")
        value = float(metrics[self.key])
        return value if self.greater_is_better else -value


class RungCallback:
    """The search inside a Trainer: rung evaluations, pruning and stopping, the methods' step
    hooks, peak memory. A ``transformers.TrainerCallback`` (made one in ``callback``)."""

    def __init__(self, model: Any, metric: Metric, stop_at: int, eval_at: Sequence[int],
                 on_step: Callable[[int, int, float], None] | None,
                 on_eval: Callable[[int, float], None] | None,
                 on_log: Callable[[int, dict[str, Any]], None] | None = None):
        self.model, self.metric, self.stop_at = model, metric, stop_at
        self.eval_at, self.on_step, self.on_eval = set(eval_at), on_step, on_eval
        self.log_to = on_log  # (not ``on_log``: that is the Trainer's event, below)
        self.hooks = list(getattr(model, HOOKS_ATTR, []))
        self.scores: dict[int, float] = {}
        self.metrics: dict[str, float] = {}
        self.stop: BaseException | None = None
        self.loss = float("nan")
        self.memory: Any = None
        self._window: contextlib.AbstractContextManager | None = None

    # -- before training: a method's look at the data (Child-Tuning D) ----------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not any(hasattr(h, "before_training") for h in self.hooks):
            return
        import torch

        def batches() -> Iterator[dict[str, Any]]:
            for batch in kw["train_dataloader"]:
                self._report(0, control)  # a budget or an interrupt can stop the pass too
                if self.stop is not None:
                    return
                yield {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in batch.items()}

        self.model.train()
        for hook in self.hooks:
            if hasattr(hook, "before_training"):
                hook.before_training(self.model, batches())

    # -- each step: memory windows, step hooks ------------------------------------------------
    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.memory is None:
            import torch

            from autopeft.memory import PeakMemory

            self.memory = PeakMemory(self.model, kw["optimizer"], torch.device(args.device))
        self.memory.resume()  # an evaluation since the last step was not training
        self._open()

    def on_substep_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.close()  # one micro-batch's activations are freed after its backward
        self._open()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.close()
        for hook in self.hooks:
            getattr(hook, "before_optimizer_step", lambda s: None)(state.global_step)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        for hook in self.hooks:
            getattr(hook, "after_optimizer_step", lambda s: None)(state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kw: Any) -> None:
        """A step's loss (the Trainer logs every step: ``quiet``) is reported here, after
        ``on_step_end`` and before the evaluation it may ask for: a stop cancels that."""
        if logs and self.log_to is not None:  # the Trainer's log dict: to the trackers
            self.log_to(state.global_step, logs)
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
            self._report(state.global_step, control)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.close()
        self.memory.pause()  # the Trainer may evaluate now: scoring, not training memory
        step = state.global_step
        if self.stop is not None:
            return
        if step in self.eval_at or step >= self.stop_at:
            control.should_evaluate = True
        if step >= self.stop_at:
            control.should_training_stop = True

    # -- rungs ------------------------------------------------------------------------------
    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None,
                    **kw: Any) -> None:
        step = state.global_step
        if self.stop is not None or step in self.scores:
            return  # after a stop, or an evaluation the Trainer asked for again at this step
        score = self.metric.score(metrics or {})
        self.scores[step], self.metrics = score, dict(metrics or {})
        if self.on_eval and (step in self.eval_at or step >= self.stop_at):
            try:
                self.on_eval(step, score)
            except Exception as exc:  # the pruner said stop (objective.StopTrial)
                self._stop(exc, control)

    def _report(self, step: int, control: Any) -> None:
        if self.on_step is None or self.stop is not None:
            return
        try:
            self.on_step(step, self.stop_at, self.loss)
        except Exception as exc:  # the budget ended (objective.StopTrial)
            self._stop(exc, control)

    def _stop(self, exc: BaseException, control: Any) -> None:
        self.stop = exc
        control.should_training_stop = True
        control.should_evaluate = False
        control.should_save = False

    def _open(self) -> None:
        self.close()
        self._window = self.memory.step()
        self._window.__enter__()

    def close(self) -> None:
        """End the open memory window (also after an exception inside ``train``)."""
        if self._window is not None:
            window, self._window = self._window, None
            window.__exit__(None, None, None)


EVENTS = ("on_train_begin", "on_step_begin", "on_substep_end", "on_pre_optimizer_step",
          "on_optimizer_step", "on_log", "on_step_end", "on_evaluate")


def callback(rungs: RungCallback) -> Any:
    """``rungs`` as a ``transformers.TrainerCallback`` that forwards ``EVENTS`` to it
    (transformers is imported only here, when a Trainer search runs)."""
    from transformers import TrainerCallback

    def forward(event: str) -> Callable[..., None]:
        return lambda self, args, state, control, **kw: getattr(rungs, event)(args, state, control, **kw)

    return type("AutopeftRungCallback", (TrainerCallback,), {e: forward(e) for e in EVENTS})()


def quiet(trainer: Any, tracked: Sequence[str]) -> Any:
    """The Trainer made to train under autopeft's reporting: its progress bars and printed
    log dicts off (its logs go to ``RungCallback.on_log``, and from there to the trackers),
    its own integrations for the trackers autopeft reports to removed (autopeft's run per
    trial has its logs: no second run per trial), its loss logged at every step (the loss
    trace and the loss check read each step's). Returns its arguments, a copy: a factory may
    share one ``TrainingArguments`` between its Trainers."""
    from transformers.integrations import get_reporting_integration_callbacks
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    for cls in (PrinterCallback, ProgressCallback, NotebookProgressCallback,
                *get_reporting_integration_callbacks(list(tracked))):
        trainer.remove_callback(cls)
    args = copy.copy(trainer.args)
    args.disable_tqdm, args.logging_strategy, args.logging_steps = True, "steps", 1
    trainer.args = args
    return args


@contextlib.contextmanager
def bars_off() -> Iterator[None]:
    """The progress bars of ``datasets`` (a Trainer that maps its data: TRL's SFTTrainer)
    and ``transformers`` (loading weights) off for the block, then as they were."""
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    were_on = [lib for lib in (datasets_logging, transformers_logging) if lib.is_progress_bar_enabled()]
    for lib in were_on:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in were_on:
            lib.enable_progress_bar()


def own_learning_rates(trainer: Any, model: Any) -> None:
    """Tensors a method trains at their own learning rate (``contract.set_lr``: ProPETL's mask
    scores) move into their own group of the Trainer's optimizer (created now, as ``train``
    would; its scheduler scales every group)."""
    own = learning_rates(model)
    if not own:
        return
    optimizer = trainer.create_optimizer()
    for group in list(optimizer.param_groups):
        for p in [p for p in group["params"] if id(p) in own]:
            group["params"].remove(p)
            optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"},
                                       "params": [p], "lr": own[id(p)]})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]


@dataclass(frozen=True)
class TrainerSetup:
    """What one Trainer of the factory says before the search: its arguments, its data and
    the metric that scores."""

    args: Any
    train: Any
    eval: Any
    metric: Metric


@dataclass
class TrainerBench:
    """A ``protocols.Trainer`` whose runs the user's Trainer trains (one process)."""

    base: BaseModel
    make_trainer: MakeTrainer
    metric_name: str | None = None
    greater_is_better: bool | None = None
    notes: list[str] = field(default_factory=list)
    # The trackers autopeft reports to, and where a run's Trainer log dicts go (``tracking``)
    tracked: Sequence[str] = ()
    on_log: Callable[[int, dict[str, Any]], None] | None = None
    _setup: TrainerSetup | None = None

    def inspect(self) -> TrainerSetup:
        """Ask the factory for one Trainer (on an untouched copy of the base model) to learn
        its arguments and data, and evaluate once: a missing ``eval_dataset`` or metric is a
        one-line error before the search starts, not a failure in every trial. Once."""
        if self._setup is None:
            candidate = Candidate([MethodSpec("full")])
            trainer = self._trainer(build(self.base.model, candidate), candidate)
            if trainer.train_dataset is None or trainer.eval_dataset is None:
                raise UserError("make_trainer must give its Trainer a train_dataset and an "
                                "eval_dataset (the score at each rung is its evaluation)")
            metric = Metric.of(trainer.args, self.metric_name, self.greater_is_better)
            quiet(trainer, trainer.args.report_to or [])  # this evaluation reports nowhere
            metric.score(trainer.evaluate())
            self._setup = TrainerSetup(trainer.args, trainer.train_dataset,
                                       trainer.eval_dataset, metric)
        return self._setup

    @property
    def task(self) -> Task:
        return get_task(TRAINER_PREFIX + self.inspect().metric.task_metric)

    @property
    def train_data(self) -> Any:
        return self.inspect().train

    @property
    def eval_data(self) -> Any:
        return self.inspect().eval

    @property
    def settings(self) -> TrainSettings:
        """The Trainer's own length and batch as autopeft's settings (what the plan reads:
        the full fidelity is the Trainer's own number of steps)."""
        args = self.inspect().args
        batch, accum = int(args.train_batch_size), int(args.gradient_accumulation_steps)
        epochs = float(args.num_train_epochs)
        if args.max_steps and args.max_steps > 0:  # epochs that give exactly max_steps
            per_epoch = math.ceil(len(self.train_data) / batch) / accum
            epochs = args.max_steps / max(per_epoch, 1e-9)
        return TrainSettings(epochs=epochs, batch_size=batch, grad_accum=accum)

    def _trainer(self, model: Any, candidate: Candidate) -> Any:
        with bars_off():
            trainer = self.make_trainer(model, candidate)
        if getattr(trainer, "model", None) is not model:
            raise UserError("make_trainer(model, candidate) must train the model it is given "
                            "(Trainer(model=model, ...)): that model carries the candidate")
        if getattr(trainer, "optimizer", None) is not None:
            raise UserError("make_trainer gave its Trainer its own optimizer: autopeft sets each "
                            "candidate's learning rate, so leave the optimizer to the Trainer "
                            "(TrainingArguments optim=...)")
        return trainer

    def run(self, candidate: Candidate, on_step: Callable[[int, int, float], None] | None = None,
            eval_at: Sequence[int] = (), on_eval: Callable[[int, float], None] | None = None,
            fidelity: Fidelity | None = None, resume: Any = None,
            checkpoint: Any = None) -> Outcome:
        """Train ``candidate`` with the user's Trainer; the same contract as ``runner.Bench.run``
        (``on_eval`` at the rungs in ``eval_at``; a ``StopTrial`` it raises ends the run and
        is raised again here, after the Trainer stopped cleanly). The user's Trainer owns its
        loop, so a run here keeps no checkpoint (``checkpoint`` is ignored) and none exists to
        continue from: ``resume`` is always None in practice, and refused if not."""
        if resume is not None:
            raise ValueError("a run through the user's Trainer cannot continue a checkpoint")
        import transformers

        fid = fidelity or Fidelity()
        full = total_steps(len(self.train_data), self.settings)
        schedule = fid.schedule_steps or full
        stop_at = min(schedule, fid.stop_at or schedule)
        # Built for the Trainer's device: QLoRA quantises there (CUDA's kernels and bf16).
        model = build(self.base.model, candidate, schedule, device=str(self.inspect().args.device))
        stored, trained, total = count_stored(model), count_trainable(model), count_total(model)
        trainer = self._trainer(model, candidate)
        args = quiet(trainer, self.tracked)
        args.learning_rate, args.seed, args.max_steps = candidate.learning_rate, candidate.seed, schedule
        rungs = RungCallback(model, self.inspect().metric, stop_at, eval_at, on_step, on_eval,
                             self.on_log)
        trainer.add_callback(callback(rungs))
        own_learning_rates(trainer, model)
        transformers.set_seed(candidate.seed)
        start = time.perf_counter()
        try:
            trainer.train()
        finally:
            rungs.close()
        if rungs.stop is not None:
            raise rungs.stop
        steps = int(trainer.state.global_step)
        if steps not in rungs.scores:  # the Trainer ended before our last rung (no data left)
            rungs.on_evaluate(args, trainer.state, trainer.control, metrics=trainer.evaluate())
            if rungs.stop is not None:
                raise rungs.stop
        memory = rungs.memory
        if memory is None:
            raise RuntimeError("the Trainer took no training step")
        memory.optimizer = trainer.optimizer
        result = TrainResult(score=rungs.scores[steps], steps=steps,
                             samples=steps * args.train_batch_size * args.gradient_accumulation_steps,
                             seconds=time.perf_counter() - start, peak_memory=memory.bytes(),
                             memory_method=memory.method, final_loss=rungs.loss,
                             scoring_peak_memory=memory.scoring_bytes(),
                             metrics={k.removeprefix("eval_"): float(v)
                                      for k, v in rungs.metrics.items()
                                      if isinstance(v, (int, float)) and k != "epoch"
                                      and not k.endswith(("_runtime", "_per_second"))})
        return Outcome(result, stored, total, model, trained, dict(rungs.scores))


def load_model(model: Any, model_class: str = "AutoModelForSequenceClassification",
               model_kwargs: dict[str, Any] | None = None) -> BaseModel:
    """The base model: a loaded ``PreTrainedModel``, or a hub id / directory (a ``str`` or
    any ``os.PathLike``) loaded with ``transformers.<model_class>.from_pretrained(model,
    **model_kwargs)`` (a new head is then re-drawn from each candidate's seed, as for
    autopeft's own searches)."""
    import_bitsandbytes_quietly()
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)
        return BaseModel(model=model, tokenizer=None, name=name)
    import transformers

    cls = getattr(transformers, model_class, None)
    if cls is None:
        raise UserError(f"model_class {model_class!r} is not a transformers class "
                        "(AutoModelForSequenceClassification, AutoModelForCausalLM, ...)")
    try:
        with bars_off():
            loaded, info = cls.from_pretrained(model, output_loading_info=True, **(model_kwargs or {}))
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load model {model!r}: {first}") from None
    loaded.eval()
    setattr(loaded, NEW_PARAMETERS_ATTR, new_parameters(loaded, info))
    return BaseModel(model=loaded, tokenizer=None, name=model)


def search_with_trainer(make_trainer: MakeTrainer, model: Any, *, progress: Any = False,
                        metric: str | None = None, greater_is_better: bool | None = None,
                        model_class: str = "AutoModelForSequenceClassification",
                        model_kwargs: dict[str, Any] | None = None, **options: Any) -> Study:
    """Search PEFT candidates trained by your own Trainer; returns the Optuna study.

    ``make_trainer(model, candidate)``: a ``transformers.Trainer`` (or subclass) for
    ``model`` (the candidate built on a copy of the base model) with ``train_dataset`` and
    ``eval_dataset``. ``model``: a ``PreTrainedModel`` or a hub id / directory (a ``str``
    or ``Path``; ``model_class``, ``model_kwargs``, e.g. ``{"num_labels": 2}``). ``metric``: the
    evaluation metric that scores (default the Trainer's ``metric_for_best_model``, else its
    loss; ``greater_is_better`` as in ``TrainingArguments``). ``options``: the search's
    (``budget``, ``n_trials``, ``space``, ``study``, ``storage``, ``sampler``, ``pruner``,
    ``max_memory``, ``confirm_seeds``, ``report_to``: trackers, default the Trainer's own
    ``report_to``, ...); ``progress`` as for ``autopeft.search``."""
    from autopeft.report.progress import make_reporter
    from autopeft.search.config import SearchConfig
    from autopeft.search.study import run_search

    allowed = {f for f in SearchConfig.__dataclass_fields__} - NOT_OPTIONS
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))} (a Trainer search "
                        f"takes {', '.join(sorted(allowed))})")
    bench = TrainerBench(load_model(model, model_class, model_kwargs), make_trainer, metric,
                         greater_is_better)
    task = bench.task.name  # inspects the Trainer: its data, arguments and metric
    if options.get("report_to") is None:  # where the Trainer itself reports, if we can
        options["report_to"] = trainer_report_to(bench.inspect().args)
    cfg = SearchConfig(task=task, model=bench.base.name, data=DataSettings(task=task),
                       train=bench.settings, isolation="none", **options)
    reporter = tracked(make_reporter(progress), cfg.report_to, str(cfg.study))
    bench.tracked = parse_report_to(cfg.report_to)
    bench.on_log = getattr(reporter, "log", None)
    return run_search(cfg, reporter, bench=bench)  # type: ignore[arg-type]


def trainer_report_to(args: Any) -> list[str]:
    """The trackers of the Trainer's own ``report_to`` that autopeft reports to (a search
    with the Trainer's ``report_to="wandb"`` gets autopeft's run per trial in W&B)."""
    given = getattr(args, "report_to", None) or []
    given = [given] if isinstance(given, str) else list(given)
    if "all" in given:
        return [n for n in TRACKERS if installed(n)]
    return [n for n in given if n in TRACKERS]


def build_trial(model: Any, study: Study, trial: int,
                model_class: str = "AutoModelForSequenceClassification",
                model_kwargs: dict[str, Any] | None = None) -> Any:
    """Trial ``trial``'s candidate built on ``model`` (your base model, as for
    ``search_with_trainer``), ready for your Trainer: train it with the learning rate and seed
    of ``candidate_of(study, trial)``."""
    base = load_model(model, model_class, model_kwargs)
    return build(base.model, candidate_of(study, trial))


def candidate_of(study: Study, trial: int) -> Candidate:
    """The candidate trial ``trial`` trained (learning rate and seed included)."""
    found = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial not in found or "candidate" not in found[trial].user_attrs:
        raise UserError(f"study {study.study_name!r} has no trained trial {trial}")
    return Candidate.from_dict(found[trial].user_attrs["candidate"])
