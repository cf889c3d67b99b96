"""The real search replayed on recorded learning curves (issue 28, item 2; issue 29, item 1).

``autopeft.search.study.run_search`` runs unchanged (the plan, the sampler, the pruner, the
loss check, the refit, the Optuna storage in SQLite) with two stand-ins:

* ``ReplayBench``, the trainer: a trial of a recorded candidate (``bench/curves``,
  ``record.py``) is answered from its recording: the loss every step, the score at a rung
  on the rung's rows and at the end on every validation row, computed exactly from the
  recorded per-row predictions. A step between two recorded points is answered by the
  nearest recorded point (points at 0.2, 0.35, 0.5, 0.75 and 1 of the schedule). A candidate
  the recording does not hold is answered by the nearest recorded one (the same entry, then
  the nearest parameters and learning rate): each replay says how many were.
  Checkpoints are small files that hold the step and rung scores, so a continued trial (a
  promotion, the refit) pays only its remaining steps, as a real one does;
* ``SimClock``, the clock every deadline reads: it moves by the recorded costs of each step
  and scoring, never by real time. The probe is answered from the same costs.

Costs: a setting gives seconds per step of the LoRA recipe and per scoring of the
validation rows; every other candidate's step costs that times its recorded step time over
the LoRA recipe's (full fine-tuning is slower than (IA)3 on any machine), so one recording
replays today's CPU (``cpu``), a roberta-base-like GPU search (``roberta``: 0.05 s a step)
or a 7B LoRA (``llm``: 1 s a step) at the budgets users give them.

Each replayed front is reported on the task's **test split** (``heldout.py``): the member at
<= 1% trainable parameters with the best validation score, and the hypervolume of the front
(selected on validation) with its members' test scores.

    python bench/simulate.py --task sst2 --ratio 10 --reps 3
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _report import DATA, minilm  # noqa: E402
from heldout import prepare  # noqa: E402

CURVES = ROOT / "bench" / "curves"
WORK = ROOT / "bench" / ".work"
BASE_PARAMS = 22_713_216  # MiniLM-L6 with a 2-class head: one hypervolume scale
# Seconds per step of the LoRA recipe, per scoring of the validation rows, and the full
# run's steps (None: the recording's). A setting with more steps than the recording maps
# step s onto the recorded curve at s x recorded / steps (a longer run of the same shape).
# Such a replay runs without the loss check: its windows are absolute steps (10/20/40 after
# the warm-up), and on a curve stretched 17x every candidate looked flat there (a first
# roberta-like replay stopped 304 of 311 trials as not learning at step 166); it measures
# the engine at scale (trials, rungs, promotions, the sampler's cost), not the loss check.
SETTINGS = {
    "cpu": {"step": None, "eval": None, "steps": None},  # as recorded (retimed where it was)
    # roberta-base on one H100, SST-2: about 0.05 s a step, 2,105 steps an epoch (issue 29)
    "roberta": {"step": 0.05, "eval": 1.0, "steps": 2105},
    "llm": {"step": 1.0, "eval": 20.0, "steps": 500},  # a 7B LoRA: about 1 s a step
}


class SimClock:
    """Seconds that move only when the replay says so (``advance``)."""

    def __init__(self, start: float = 1.0e9) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@dataclass
class Curve:
    """One recorded run (a line of ``bench/curves/<task>.jsonl``)."""

    id: int
    seed: int
    status: str
    steps: int
    points: list[int]
    preds: list[Any]
    losses: list[float]
    trainable_params: int
    peak_memory_bytes: int | None
    memory_method: str | None
    step_seconds: float | None
    retimed: float | None = None


@dataclass
class Recording:
    """One task's recorded runs, its labels, and how candidates find their run."""

    task: str
    settings: dict
    curves: dict[tuple[int, int], Curve]
    val_labels: Any
    test_labels: Any
    metric: str
    by_key: dict[str, tuple[int, int]] = field(default_factory=dict)
    eval_seconds: float | None = None  # one scoring of the validation rows, retimed

    @classmethod
    def load(cls, task: str, curves_dir: Path = CURVES, work: Path = WORK,
             data: Path = DATA) -> Recording:
        import numpy as np

        from autopeft.tasks import get_task

        settings = json.loads((curves_dir / "settings.json").read_text())
        curves: dict[tuple[int, int], Curve] = {}
        for line in (curves_dir / f"{task}.jsonl").read_text().splitlines():
            raw = json.loads(line)
            keep = {k: raw.get(k) for k in Curve.__dataclass_fields__}
            curves[(raw["id"], raw["seed"])] = Curve(**keep)
        split = prepare(task, data, work)
        t = get_task(task)
        col = t.label_column

        def labels(name: str) -> Any:
            lines = (split.search_dir / "glue" / task / name).read_text().splitlines()
            header = lines[0].split("\t")
            values = [line.split("\t")[header.index(col)] for line in lines[1:]]
            return np.array(values, dtype=float if t.num_labels == 1 else int)

        retimed = curves_dir / "retimed.json"
        quiet = json.loads(retimed.read_text()).get(task, {}) if retimed.exists() else {}
        for (i, _), curve in curves.items():
            curve.retimed = quiet.get("steps", {}).get(str(i))
        rec = cls(task, settings, curves, labels("validation.tsv"), labels("test.tsv"), t.metric)
        rec.eval_seconds = quiet.get("eval_seconds")
        cands = {c["id"]: c["candidate"] for c in settings["candidate_list"]}
        for (i, seed) in curves:
            rec.by_key[_key({**cands[i], "seed": seed})] = (i, seed)
        return rec

    @property
    def steps(self) -> int:
        return next(iter(self.curves.values())).steps

    def lookup(self, candidate: dict) -> tuple[Curve, bool]:
        """The recorded run of ``candidate`` (exact: True), else the nearest one."""
        hit = self.by_key.get(_key(candidate))
        if hit is not None:
            return self.curves[hit], True
        cands = {c["id"]: c["candidate"] for c in self.settings["candidate_list"]}
        best = min(self.curves, key=lambda k: _distance(candidate, {**cands[k[0]], "seed": k[1]}))
        return self.curves[best], False

    def score(self, curve: Curve, step: int, split: str = "val", rows: int | None = None) -> float:
        """The metric at the recorded point nearest ``step`` on ``split`` (``rows``: the
        rung's seeded subset of the validation rows, as ``runner.Bench`` scores it)."""
        import numpy as np

        from autopeft.metrics import METRICS
        from autopeft.runner import seeded_subset

        k = min(range(len(curve.points)), key=lambda i: abs(curve.points[i] - step))
        raw = curve.preds[k]
        preds = (np.array(raw, dtype=float) if isinstance(raw, list)
                 else np.frombuffer(raw.encode(), dtype=np.uint8) - 48)
        n = len(self.val_labels)
        if split == "test":
            return METRICS[self.metric](preds[n:], self.test_labels)["score"]
        p, y = preds[:n], self.val_labels
        if rows and rows < n:
            pick = seeded_subset(n, rows)
            p, y = p[pick], y[pick]
        return METRICS[self.metric](p, y)["score"]


def _key(candidate: dict) -> str:
    return json.dumps(candidate, sort_keys=True)


def _entry(candidate: dict) -> str:
    return "+".join(m["name"] for m in candidate["methods"])


def _distance(a: dict, b: dict) -> float:
    """How unlike two candidates are: another entry is far; then differing method
    parameters, then the learning rate's log distance, then the seed."""
    if _entry(a) != _entry(b):
        return 1e6 + abs(math.log(a["learning_rate"] / b["learning_rate"]))
    differ = sum(ma["params"].get(k) != mb["params"].get(k)
                 for ma, mb in zip(a["methods"], b["methods"])
                 for k in {*ma["params"], *mb["params"]})
    return (differ + abs(math.log(a["learning_rate"] / b["learning_rate"]))
            + 0.01 * (a.get("seed") != b.get("seed")))


class ScoredRows:
    """The validation split as a search reads it before training: its length, and its
    labels (what one constant answer scores: ``metrics.constant_score``)."""

    def __init__(self, labels: Any) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)


class ReplayBench:
    """A ``protocols.Trainer`` that answers trials from a ``Recording`` on a ``SimClock``."""

    restarts_on_cuda_error = False

    def __init__(self, rec: Recording, clock: SimClock, step_seconds: float | None = None,
                 eval_seconds: float | None = None, steps: int | None = None) -> None:
        from autopeft.models import load_base
        from autopeft.tasks import get_task
        from autopeft.train import TrainSettings

        self.rec, self.clock = rec, clock
        self.sampler_seconds: dict[int, float] = {}  # CPU seconds by trial number
        self.task = get_task(rec.task)
        self.base = load_base(minilm(), self.task)
        s = rec.settings
        self.settings = TrainSettings(batch_size=s["batch_size"], max_length=s["max_length"],
                                      eval_batch_size=s["eval_batch_size"], device="cpu")
        self.steps = steps or rec.steps  # a full run here; the recording's scaled onto it
        self.train_data = range(self.steps * s["batch_size"])  # only its length is read
        self.eval_data = ScoredRows(rec.val_labels)
        lora = rec.curves.get((0, 0))
        recorded = (lora.retimed or lora.step_seconds) if lora else 0.1
        self.step_scale = (step_seconds / recorded) if step_seconds else 1.0
        # a setting's scoring, else the retimed one, else ~40 steps' worth (500 rows here)
        self.eval_seconds = eval_seconds or rec.eval_seconds or 40 * recorded
        self.exact = self.nearest = 0
        self.notes: list[str] = []

    def costs(self, rung_rows: int | None) -> Any:
        from autopeft.search.plan import Costs

        lora = self.rec.curves.get((0, 0))
        step = ((lora.retimed or lora.step_seconds) if lora else 0.1) * self.step_scale
        share = min(1.0, (rung_rows or len(self.eval_data)) / len(self.eval_data))
        return Costs(step_seconds=round(step, 4), eval_seconds=self.eval_seconds,
                     rung_eval_seconds=self.eval_seconds * share, start_seconds=0.5,
                     probe="replay")

    def recorded(self, step: int) -> int:
        """The recorded step that step ``step`` of this replay's schedule stands for."""
        return max(1, min(self.rec.steps, round(step * self.rec.steps / self.steps)))

    def step_cost(self, curve: Curve) -> float:
        return (curve.retimed or curve.step_seconds or 0.1) * self.step_scale

    def run(self, candidate: Any, on_step: Any = None, eval_at: Any = (), on_eval: Any = None,
            fidelity: Any = None, resume: Any = None, checkpoint: Any = None) -> Any:
        from autopeft.checkpoint import load
        from autopeft.runner import Fidelity, Outcome
        from autopeft.train import Diverged, TrainResult

        curve, exact = self.rec.lookup(candidate.to_dict())
        self.exact, self.nearest = self.exact + exact, self.nearest + (not exact)
        fid = fidelity or Fidelity()
        n_steps = fid.schedule_steps or self.steps
        if n_steps != self.steps:
            raise ValueError(f"this replay answers {self.steps}-step schedules, not {n_steps}")
        end = min(n_steps, fid.stop_at or n_steps)
        t0 = self.clock()
        start, rung_scores = 0, {}
        if resume:
            ck = load(resume) if isinstance(resume, str) else resume
            start, rung_scores = ck.step, {s: v for s, v in ck.rung_scores.items() if s in eval_at}
        self.clock.advance(0.5)  # building the candidate
        cost, scoring = self.step_cost(curve), 0.0
        share = min(1.0, (fid.rung_rows or len(self.eval_data)) / len(self.eval_data))

        def keep(step: int) -> None:
            if checkpoint:
                _save_stub(checkpoint, candidate, self.settings, step, n_steps, rung_scores)

        for step in range(start + 1, end + 1):
            if self.recorded(step) > len(curve.losses):  # the recorded run diverged here
                raise Diverged(f"loss is nan at step {step}")
            self.clock.advance(cost)
            if on_step:
                on_step(step, end, curve.losses[self.recorded(step) - 1])
            if step in eval_at and step < end:
                rung_scores[step] = self.rec.score(curve, self.recorded(step), rows=fid.rung_rows)
                self.clock.advance(self.eval_seconds * share)
                scoring += self.eval_seconds * share
                try:
                    if on_eval:
                        on_eval(step, rung_scores[step])
                except BaseException as stop:  # paused here: its checkpoint is this rung's,
                    if getattr(stop, "keep_checkpoint", False):  # as train.train keeps it
                        keep(step)
                    raise
                keep(step)
        final = self.rec.score(curve, self.recorded(end))
        self.clock.advance(self.eval_seconds)
        scoring += self.eval_seconds
        rung_scores[end] = final
        keep(end)
        if on_eval and end in eval_at:
            on_eval(end, final)
        result = TrainResult(score=final, steps=end, samples=end * self.settings.batch_size,
                             seconds=self.clock() - t0, peak_memory=curve.peak_memory_bytes or 0,
                             memory_method=curve.memory_method or "replay",
                             final_loss=curve.losses[self.recorded(end) - 1],
                             metrics={"score": final},
                             resumed_from=start, scoring_seconds=round(scoring, 3))
        return Outcome(result, curve.trainable_params, BASE_PARAMS, None, curve.trainable_params,
                       rung_scores)


def _save_stub(path: str, candidate: Any, settings: Any, step: int, schedule: int,
               rung_scores: dict) -> None:
    """A checkpoint with the run's identity, step and rung scores and no tensors: what the
    search reads to decide and continue."""
    from autopeft.checkpoint import Checkpoint, save, settings_dict

    save(Checkpoint(step, schedule, (0, 0), step * settings.batch_size, 0.0, None, 0, {}, {}, {},
                    {}, [], candidate.to_dict(), settings_dict(settings), dict(rung_scores)), path)


# The default sampler's entry points; every other call of Optuna's is the storage's.
SAMPLER_METHODS = ("infer_relative_search_space", "sample_relative", "sample_independent",
                   "before_trial", "after_trial")


@contextlib.contextmanager
def _timed_methods(cls: type, seconds: dict[int, float]):
    """``cls``'s sampler methods add their CPU seconds to ``seconds[trial number]``."""
    saved = {name: cls.__dict__[name] for name in SAMPLER_METHODS if name in cls.__dict__}

    def timer(fn):
        def timed(self, study, trial, *args, **kwargs):
            start = time.process_time()
            try:
                return fn(self, study, trial, *args, **kwargs)
            finally:
                seconds[trial.number] = seconds.get(trial.number, 0.0) + (
                    time.process_time() - start)
        return timed

    for name, fn in saved.items():
        setattr(cls, name, timer(fn))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(cls, name, fn)


def time_sampler(seconds: dict[int, float]) -> contextlib.ExitStack:
    """Time the default sampler apart from the rest of the engine (issue 29: its time per
    proposal at 450 trials); an engine without ``RungSampler`` is left untimed."""
    stack = contextlib.ExitStack()
    with contextlib.suppress(ImportError):
        from autopeft.search.proposals import RungSampler

        stack.enter_context(_timed_methods(RungSampler, seconds))
    return stack


@contextlib.contextmanager
def replay_patches(bench: ReplayBench, clock: SimClock, work: Path):
    """The probe answers from the recorded costs; the trials' own stopwatches read the
    simulated clock (``objective.time``); checkpoints go under ``work``."""
    import gc

    import autopeft.search.loop as loop
    import autopeft.search.objective as objective
    import autopeft.search.probe as probe

    saved = probe.probe, objective.time, loop.gc, os.environ.get("AUTOPEFT_STUDIES_DIR")
    timed = time_sampler(bench.sampler_seconds)
    probe.probe = lambda _bench, rows: bench.costs(rows)
    objective.time = types.SimpleNamespace(perf_counter=clock, time=clock)
    # A replayed trial builds no model, so the loop's full collection after each trial frees
    # nothing here; it walks the ~600K objects of the imported libraries, 0.3 s a trial (8 of
    # 21 s in an SST-2 replay at R = 10). The young generations still go.
    loop.gc = types.SimpleNamespace(collect=lambda: gc.collect(1))
    os.environ["AUTOPEFT_STUDIES_DIR"] = str(work)
    try:
        yield
    finally:
        timed.close()
        probe.probe, objective.time, loop.gc = saved[:3]
        if saved[3] is None:
            os.environ.pop("AUTOPEFT_STUDIES_DIR", None)
        else:
            os.environ["AUTOPEFT_STUDIES_DIR"] = saved[3]


def replay(task: str, ratio: float, seed: int, arm: str = "A", setting: str = "cpu",
           rec: Recording | None = None, work: Path | None = None,
           meta_store: Path | None = None) -> dict:
    """One replayed search of ``arm`` (A: the default; B: random proposals, no warm start;
    W: the default starting from ``meta_store``, earlier studies' curves) at budget ratio
    ``ratio``; returns what its front reports. A and B start cold (no meta-store)."""
    import optuna

    from autopeft.runner import DataSettings
    from autopeft.search.config import SearchConfig
    from autopeft.search.study import run_search

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rec = rec or Recording.load(task)
    clock = SimClock()
    cost = SETTINGS[setting]
    bench = ReplayBench(rec, clock, cost["step"], cost["eval"], cost["steps"])
    full = bench.costs(None).run_seconds(bench.steps)
    budget = ratio * full / (1 - 0.08)  # the plan keeps PLAN_RESERVE: R full runs in what is left
    work = work or Path(tempfile.mkdtemp(prefix="replay-"))
    work.mkdir(parents=True, exist_ok=True)
    name = f"{task}-{arm}-r{ratio:g}-s{seed}"
    cfg = SearchConfig(task=task, model=minilm(), study=name,
                       storage=f"sqlite:///{work / (name + '.db')}", budget=budget,
                       data=DataSettings(task), train=bench.settings, isolation="none",
                       seed=seed, loss_check=bench.steps == rec.steps,
                       **arm_config(arm, meta_store))
    with replay_patches(bench, clock, work):
        study = run_search(cfg, bench=bench, clock=clock)
    out = summarise(study, rec, bench)
    out.update(task=task, arm=arm, ratio=ratio, seed=seed, setting=setting,
               exact=bench.exact, nearest=bench.nearest,
               simulated_seconds=round(clock() - 1.0e9, 1), budget_seconds=round(budget, 1))
    return out


def arm_config(arm: str, meta_store: Path | None = None) -> dict:
    """What a search arm changes in ``SearchConfig`` (the replay's and ``real_check``'s):
    B random proposals and no warm start; W reads ``meta_store``; A is the default, cold."""
    return {**transfer_settings(meta_store),
            **({"sampler": "random", "warm_start": False} if arm == "B" else {})}


def transfer_settings(meta_store: Path | None) -> dict:
    """A replay reads no meta-store but the one it is given (a user's ``studies/.meta``
    must not leak into a benchmark), and writes none."""
    from autopeft.search.config import SearchConfig

    if "meta_store" not in SearchConfig.__dataclass_fields__:
        return {}  # an engine without transfer (an older commit replayed)
    return {"meta_store": str(meta_store) if meta_store else None, "transfer": bool(meta_store)}


def study_front(study: Any) -> list[Any]:
    """The study's front as ``autopeft show`` reports it (ties within the study's noise)."""
    from autopeft.results import front, records, score_noise

    recs = records(study.get_trials(deepcopy=False))
    return front(recs, score_noise(study.user_attrs, recs))


def best_small(on_front: list[Any], share: float = 0.01) -> Any:
    """The front member with the best (validation) score at <= ``share`` of the base
    model's parameters: what every arm reports; None if there is none."""
    small = [r for r in on_front if (r.trainable_fraction or 1) <= share]
    return max(small, key=lambda r: r.score) if small else None


def summarise(study: Any, rec: Recording, bench: ReplayBench) -> dict:
    """The front selected on validation, reported on the test split."""
    from autopeft.report.show import nothing_learned
    from autopeft.results import CANDIDATE, never_trained
    from autopeft.search.summary import REFERENCE, Scales
    from autopeft.pareto import hypervolume

    trials = study.get_trials(deepcopy=False)
    on_front = study_front(study)
    scales = Scales(BASE_PARAMS)

    def test_score(r: Any) -> float:
        curve, _ = rec.lookup(r.candidate)
        return rec.score(curve, bench.recorded(r.steps or bench.steps), "test")

    pick = best_small(on_front)
    best = max(on_front, key=lambda r: r.score) if on_front else None
    tested = [(test_score(r), r.trainable_params, r.peak_memory_bytes) for r in on_front]
    plan = study.user_attrs.get("plan", {})
    return {
        "best_small_val": pick.score if pick else None,
        "best_small_test": test_score(pick) if pick else None,
        "best_small_label": pick.label if pick else None,
        "best_small_steps": pick.steps if pick else None,
        "best_small_fidelity": pick.fidelity if pick else None,
        # the best front member's steps, beside a full run's (issue 28: at R >= 3 it is full)
        "best_steps": best.steps if best else None, "full_steps": bench.steps,
        "hypervolume_test": hypervolume([scales.normalise(v) for v in tested], REFERENCE)
        if tested else 0.0,
        "front": len(on_front),
        "trials": sum(1 for t in trials  # trained: not those not started for want of time
                      if CANDIDATE in t.user_attrs and not never_trained(t.user_attrs)),
        "nothing_learned": bool(nothing_learned(study)),  # what the search says at its end
        "promotion": study.user_attrs.get("promotion"),  # reached each rung, beside planned
        "candidates": study.user_attrs.get("candidates"),  # searched, beside planned
        "ratio_planned": plan.get("ratio"), "rungs": plan.get("rungs"),
        "trial_steps": plan.get("trial_steps"),
        **sampler_time(bench.sampler_seconds),
    }


def sampler_time(seconds: dict[int, float], at: int = 450, window: int = 50) -> dict:
    """The sampler's CPU seconds: in all, and per proposal for trials ``at`` +- ``window``
    (issue 29's target is stated at 450 trials); None where the search ran fewer."""
    near = [v for n, v in seconds.items() if abs(n - at) <= window]
    return {"sampler_cpu_s": round(sum(seconds.values()), 2) if seconds else None,
            f"sampler_cpu_s_per_trial_at_{at}": round(statistics.fmean(near), 4) if near
            else None}


def sweep(rec: Recording, ratio: float) -> dict:
    """C-sweep, what a user does without the tool: the LoRA recipe at floor(R) of the
    recorded sweep rates, evenly spread over them (R < 2: its paper's rate), the best on
    validation, reported on test."""
    import numpy as np

    cands = rec.settings["candidate_list"]
    grid = [c for c in cands if c.get("sweep")]
    k = int(math.floor(ratio))
    if k < 2:
        chosen = [cands[0]]  # the LoRA recipe at its paper's rate
    else:
        idx = sorted({int(round(i)) for i in np.linspace(0, len(grid) - 1, min(k, len(grid)))})
        chosen = [grid[i] for i in idx]
    runs = [(rec.curves[(c["id"], c["candidate"]["seed"])]) for c in chosen
            if (c["id"], c["candidate"]["seed"]) in rec.curves]
    if not runs:
        return {"best_small_test": None, "missing": len(chosen)}
    best = max(runs, key=lambda c: rec.score(c, rec.steps))
    return {"best_small_val": rec.score(best, rec.steps),
            "best_small_test": rec.score(best, rec.steps, "test"), "runs": len(runs),
            "missing": len(chosen) - len(runs), "lr": cands[best.id]["candidate"]["learning_rate"]}


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--ratio", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--arms", default="A,B")
    ap.add_argument("--setting", default="cpu", choices=sorted(SETTINGS))
    ap.add_argument("--out", default=None, help="append each replay's result here (JSON lines)")
    args = ap.parse_args(argv)
    rec = Recording.load(args.task)
    print(f"{args.task}: {len(rec.curves)} recorded runs, {rec.steps}-step schedule", flush=True)
    c = sweep(rec, args.ratio)
    print(f"C-sweep at R = {args.ratio:g}: test {c.get('best_small_test')}", flush=True)
    results: dict[str, list[dict]] = {}
    for arm in args.arms.split(","):
        for seed in range(args.reps):
            r = replay(args.task, args.ratio, seed, arm, args.setting, rec)
            results.setdefault(arm, []).append(r)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
            print(f"  {arm} seed {seed}: test {r['best_small_test']}, val {r['best_small_val']}, "
                  f"HV(test) {r['hypervolume_test']:.3f}, {r['trials']} trials "
                  f"({r['nearest']} runs answered by a nearest recording)", flush=True)
    for arm, rs in results.items():
        vals = [r["best_small_test"] for r in rs if r["best_small_test"] is not None]
        if vals:
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            print(f"{arm}: best at <= 1% params on test {statistics.fmean(vals):.4f} ± {sd:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
