"""Is the replay true? The real searches beside their replay (issue 28, items 2 and 3).

The search arms as a user runs them (``run_search``: trial processes, the plan's own
measurements of this machine) on the recording's exact data and settings (MiniLM, the
task's recorded training rows, batch 16, the carved validation rows;
``record.recording_bench``), at budget ratio R: the budget is R full runs as the package's
probe measures one here. A is the default started cold, B random proposals with the same
plan and no warm start, W the default started from the leave-one-task-out meta-store of the
replay's snapshot (``replay_quality.w_store``: the other tasks' recorded curves, never this
task's). The C arms (LoRA sweeps, the recipes) need no real run here: the recording is
real runs of exactly those candidates on these rows and settings. Each search's front's
best at <= 1% trainable parameters is picked on validation, as the replay picks it
(``simulate.summarise``), then trained again (same candidate, seed, schedule and steps: the
same run, by the project's seeding rule; the validation score is checked to come back) on a
bench that also scores the **test split**, and reported there.

Each finished search is saved to ``bench/real_check.jsonl`` at once; a rerun skips what is
there and redoes an interrupted search from its start; repetitions go round every task, R
and arm before the next one, so a run cut short leaves every cell measured. ``--report``
sets the real runs' spread beside the replay's same arm at the same task and R (``bench/replay_quality.jsonl``, its
newest snapshot and engine) and writes BENCHMARKS.md's "replay-check" section. The target:
the replay's mean best score at <= 1% parameters lies within the real runs' range (min to
max over repetitions, widened by the test split's sampling error).

    python bench/real_check.py --tasks sst2,stsb --ratios 3,10 --reps 3 --arms A,B,W
    python bench/real_check.py --report
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _report import minilm, save_row  # noqa: E402
from record import CURVES, WORK, captured, recording_bench, recording_data  # noqa: E402
from simulate import arm_config, best_small, study_front  # noqa: E402

from replay_quality import COMMIT, WORK as REPLAY_WORK, w_store  # noqa: E402

SNAPSHOT = "a1d6e99b49"  # the recording snapshot the replay's rows use: W's store comes from it
ARMS = ("A", "B", "W")

OUT = ROOT / "bench" / "real_check.jsonl"
REPLAYED = ROOT / "bench" / "replay_quality.jsonl"
PLAN_RESERVE = 0.08  # the plan keeps this share of the budget (plan.py), as the replay assumes
STARTUP_MARGIN = 1.5  # the search's own probe and study set-up, against this script's probe


def budget_for(bench: Any, stored: dict, ratio: float) -> tuple[float, float]:
    """Seconds for R full runs on this machine now (the package's own probe), plus what the
    search spends before its plan (its own probe: STARTUP_MARGIN times this one's), as the
    replay's budget has no start-up; and one full run's seconds."""
    from autopeft.search.probe import probe

    steps = -(-len(bench.train_data) // stored["batch_size"])
    t0 = time.perf_counter()
    full = probe(bench, None).run_seconds(steps)
    startup = STARTUP_MARGIN * (time.perf_counter() - t0)
    return ratio * full / (1 - PLAN_RESERVE) + startup, full


def test_score(task: str, stored: dict, study: Any, best: Any) -> tuple[float, float]:
    """``best`` trained again as it was, scored on validation and test: (validation, test)."""
    import numpy as np

    from autopeft.candidate import Candidate
    from autopeft.metrics import METRICS
    from autopeft.runner import Fidelity
    from autopeft.search.plan import Plan
    from simulate import Recording

    plan = Plan.from_dict(study.user_attrs["plan"])
    bench = recording_bench(task, stored)
    rec = Recording.load(task)  # only its labels: validation then test, as the bench scores
    n = len(rec.val_labels)
    with captured(bench.task.metric) as seen:
        bench.run(Candidate.from_dict(best.candidate),
                  fidelity=Fidelity(schedule_steps=plan.schedule_steps, stop_at=best.steps))
    preds = np.asarray(seen[-1])
    score = METRICS[rec.metric]
    return (score(preds[:n], rec.val_labels)["score"], score(preds[n:], rec.test_labels)["score"])


def arm_settings(arm: str, task: str) -> dict:
    """What ``arm`` changes in a search's config, as the replay's arms do (``simulate.replay``)."""
    store = w_store(arm, task, REPLAY_WORK / "snapshots" / SNAPSHOT).get("meta_store")
    return arm_config(arm, store)


def one(task: str, ratio: float, seed: int, stored: dict, work: Path, arm: str = "A") -> dict:
    from autopeft.search.config import SearchConfig
    from autopeft.search.study import run_search

    name = f"{task}-{arm}-r{ratio:g}-s{seed}"
    db = work / f"{name}.db"
    db.unlink(missing_ok=True)  # an interrupted search is redone from its start
    shutil.rmtree(work / name, ignore_errors=True)
    bench = recording_bench(task, stored, search=True)
    budget, full = budget_for(bench, stored, ratio)
    cfg = SearchConfig(task=task, model=minilm(), study=name, storage=f"sqlite:///{db}",
                       budget=budget, data=recording_data(task, stored, search=True),
                       train=bench.settings, seed=seed, **arm_settings(arm, task))
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    os.environ["AUTOPEFT_STUDIES_DIR"] = str(work)
    study = run_search(cfg, bench=bench)
    seconds = time.perf_counter() - t0
    best = best_small(study_front(study))
    row = {"task": task, "ratio": ratio, "seed": seed, "arm": arm,
           "full_run_seconds": round(full, 1), "budget_seconds": round(budget, 1),
           "seconds": round(seconds, 1), "load": round((load0 + os.getloadavg()[0]) / 2, 2),
           "ratio_planned": study.user_attrs.get("plan", {}).get("ratio"),
           "trials": len(study.get_trials(deepcopy=False)), "engine": COMMIT}
    if best is not None:
        val, test = test_score(task, stored, study, best)
        row.update(best_small_label=best.label, best_small_steps=best.steps,
                   best_small_val=best.score, best_small_val_again=round(val, 4),
                   best_small_test=round(test, 4))
    return row


def run(tasks: list[str], ratios: list[float], reps: int, out: Path = OUT,
        arms: tuple[str, ...] = ("A",)) -> None:
    import torch

    stored = json.loads((CURVES / "settings.json").read_text())
    have = {(r["task"], r["ratio"], r["seed"], r.get("arm", "A"))
            for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
    work = WORK / "real"
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # this process only loads and probes; trials set their own
    for seed in range(reps):  # a repetition of every cell before the next
        for task in tasks:
            for ratio in ratios:
                for arm in arms:
                    if (task, ratio, seed, arm) in have:
                        continue
                    row = one(task, ratio, seed, stored, work, arm)
                    save_row(out, row, f"{task} R={ratio:g} {arm} seed {seed}: test "
                             f"{row.get('best_small_test')} (validation "
                             f"{row.get('best_small_val')}, again "
                             f"{row.get('best_small_val_again')}), {row['trials']} trials, "
                             f"{row['seconds']} s")


def report(out: Path = OUT, replayed: Path = REPLAYED) -> str:
    """Per task and R: the real runs' best at <= 1% parameters on test beside the replay's A."""
    from autopeft.results import sampling_noise
    from replay_quality import current, mean_sd
    from simulate import Recording

    real = [json.loads(line) for line in out.read_text().splitlines() if line]
    rep = current([json.loads(line) for line in replayed.read_text().splitlines() if line])
    lines = ["## The replay against real runs (bench/real_check.py)", "",
             "The search arms run for real (A the default started cold, B random proposals "
             "with the same plan, W the default started from the other tasks' curves; trial "
             "processes, the plan's own measurements, this 2-core machine: `load` below) on "
             "the recording's data and settings, each search's best at <= 1% parameters "
             "picked on validation and trained again to score the test split; beside it the "
             "replay's same arm at the same task and R. Command: `python bench/real_check.py "
             "--tasks sst2,stsb --ratios 3,10 --reps 3 --arms A,B,W`, then `--report`. "
             "Engines (the package's last commit) of the real runs: "
             f"{', '.join(sorted({r.get('engine', '?') for r in real}))}.", "",
             "| task | R | arm | real runs (test) | real: picked | replay (test) | within? |",
             "|---|---|---|---|---|---|---|"]
    for task, ratio, arm in sorted({(r["task"], r["ratio"], r.get("arm", "A")) for r in real},
                                   key=lambda k: (k[0], k[1], ARMS.index(k[2]))):
        mine = [r for r in real if (r["task"], r["ratio"], r.get("arm", "A")) == (task, ratio, arm)]
        scores = [r["best_small_test"] for r in mine if r.get("best_small_test") is not None]
        replay = [r["best_small_test"] for r in rep if (r["task"], r["ratio"], r["arm"]) ==
                  (task, ratio, arm) and r.get("best_small_test") is not None]
        rec = Recording.load(task)
        slack = sampling_noise(rec.metric, len(rec.test_labels))
        m, sd = mean_sd(replay)
        within = ("-" if m is None or not scores else
                  "yes" if min(scores) - slack <= m <= max(scores) + slack else "**no**")
        picked = "; ".join(f"{r.get('best_small_label')} ({r.get('best_small_steps')} steps, "
                           f"load {r['load']})" for r in mine)
        cell = ", ".join(f"{s:.3f}" for s in scores) or "-"
        lines.append(f"| {task} | {ratio:g} | {arm} | {cell} | {picked} | "
                     f"{'-' if m is None else f'{m:.3f} ± {sd:.3f} ({len(replay)})'} | {within} |")
    again = [r for r in real if r.get("best_small_val_again") is not None]
    same = sum(1 for r in again if abs(r["best_small_val_again"] - r["best_small_val"]) < 1e-3)
    lines += ["", f"Trained again, the picked trial's validation score came back in {same} of "
              f"{len(again)} searches (the project's seeding rule; the test score is of that "
              "run). Slack of the range: the test split's sampling error."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="sst2,stsb")
    ap.add_argument("--ratios", default="3,10")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--arms", default="A", help=f"of {', '.join(ARMS)}, comma-separated")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--report", action="store_true",
                    help="write the comparison so far to BENCHMARKS.md (section 'replay-check')")
    args = ap.parse_args(argv)
    if args.report:
        from _report import publish

        return publish("replay-check", report(Path(args.out)))
    arms = tuple(args.arms.split(","))
    if unknown := [a for a in arms if a not in ARMS]:
        ap.error(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    run(args.tasks.split(","), [float(r) for r in args.ratios.split(",")], args.reps,
        Path(args.out), arms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
