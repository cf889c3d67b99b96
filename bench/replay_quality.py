"""The honest benchmark, replayed (issue 28, item 3, in the replay; issue 29's engine targets).

Every arm selects on the validation rows and is reported on the task's **test split**
(``heldout.py``: carved once from the training file, never seen by a search or a selection),
from the recorded curves (``record.py``), on all four shared tasks:

* **A** the default search (``simulate.replay``: the real plan, sampler, pruner, loss check
  and refit on the recorded curves and the simulated clock);
* **B** random proposals with the same plan, no warm start;
* **W** A with the start-up learned across studies, leave-one-task-out: its meta-store holds
  the three other tasks' recorded curves only (``portfolio.write_store``);
* **C-sweep** what a user does with the whole budget and no tool: the LoRA recipe (r = 8,
  query/value) at floor(R) of the recorded sweep's learning rates, evenly spread over them
  (10 rates log-spaced over LoRA's range; R < 2: its paper's rate, 5e-4), best on validation;
* **C-short** the LoRA recipe at the default's short rate (2e-3), one run: the rate prior
  without the search;
* **C+** the six recipes at their papers' rates, best on validation (6 full runs whatever R).

Reported per task and R: the best score at <= 1% trainable parameters on the test split
(the front member with the best validation score among those), the hypervolume of the
front (selected on validation, test scores), mean ± std over repetitions, and paired
differences with the targets of issue 28. The C arms are one deterministic answer each
(their runs are recorded once). A replay is only as good as the recording: each row says
how many runs the task's recording held and how many of the search's trials were answered
by the nearest recorded candidate; the report uses the latest recording snapshot only.

Resumable: one JSON line per finished replay in ``bench/replay_quality.jsonl``; a rerun skips
what it holds for the same snapshot.

    python bench/replay_quality.py --tasks sst2,cola,stsb,rte --ratios 1,3,10 --reps 5
    python bench/replay_quality.py --report        # writes BENCHMARKS.md, section "replay"
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from heldout import TASKS  # noqa: E402
from _report import save_row  # noqa: E402
from search_quality import mean_sd, show  # noqa: E402
from simulate import BASE_PARAMS, CURVES, WORK, Recording, replay  # noqa: E402

# Another checkout's engine replayed on the same recording (issue 29: "today's engine", the
# commit before pause-and-promote and the score-modelling sampler): its search arms are
# stored as "A@<commit>" and compared with this checkout's, pair by pair.
ENGINE = os.environ.get("AUTOPEFT_ENGINE")
if ENGINE:
    sys.path.insert(0, ENGINE)
    TAG = "@" + subprocess.run(["git", "-C", ENGINE, "rev-parse", "--short", "HEAD"],
                               capture_output=True, text=True, check=True).stdout.strip()
else:
    TAG = ""
# the engine replayed: the last commit that changed the package (a commit of the benchmark
# or the docs replays the same engine, so its rows stand; uncommitted edits are not seen)
COMMIT = subprocess.run(["git", "-C", ENGINE or str(ROOT), "log", "-1", "--format=%h", "--",
                         "autopeft"], capture_output=True, text=True).stdout.strip()

OUT = ROOT / "bench" / "replay_quality.jsonl"
SEARCH_ARMS = ("A", "B", "W")
FIXED_ARMS = ("C-sweep", "C-short", "C+")
SMALL = 0.01  # "best at <= 1% trainable parameters"
EPS = 1e-6  # equal up to rounding (a paired difference of 0 is not "below")
SHORT_RATE_ID = 6  # the recording's "LoRA r=8 query/value at lr 2e-03": the short rate


def snapshot(tasks: list[str]) -> tuple[Path, dict[str, int]]:
    """A frozen copy of the recording (it grows while a benchmark runs): its folder and the
    runs each task holds. Named by its content, so the same recording is the same snapshot."""
    digest = hashlib.sha1()
    for name in ["settings.json", "retimed.json", *(f"{t}.jsonl" for t in tasks)]:
        path = CURVES / name
        if path.exists():
            digest.update(name.encode() + path.read_bytes())
    folder = WORK / "snapshots" / digest.hexdigest()[:10]
    if not folder.exists():
        tmp = Path(tempfile.mkdtemp(dir=WORK))
        for name in ["settings.json", "retimed.json", *(f"{t}.jsonl" for t in tasks)]:
            if (CURVES / name).exists():
                shutil.copy(CURVES / name, tmp / name)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(folder)
    runs = {t: len((folder / f"{t}.jsonl").read_text().splitlines()) for t in tasks
            if (folder / f"{t}.jsonl").exists()}
    return folder, runs


def fixed_arm(rec: Recording, arm: str, ratio: float) -> dict:
    """A C arm's answer: its full runs, the best on validation, reported on test."""
    from autopeft.pareto import hypervolume
    from autopeft.search.summary import REFERENCE, Scales

    cands = rec.settings["candidate_list"]
    if arm == "C-sweep":
        grid = [c for c in cands if c.get("sweep")]
        k = int(math.floor(ratio))
        if k < 2:
            chosen = [cands[0]]  # the LoRA recipe at its paper's rate
        else:
            step = (len(grid) - 1) / max(1, min(k, len(grid)) - 1)
            chosen = [grid[round(i * step)] for i in range(min(k, len(grid)))]
    elif arm == "C-short":
        chosen = [cands[SHORT_RATE_ID]]
    else:  # C+: the six recipes at their papers' rates
        chosen = [c for c in cands if c.get("recipe") and " at lr " not in c["recipe"]]
    runs = [rec.curves[(c["id"], c["candidate"]["seed"])] for c in chosen
            if (c["id"], c["candidate"]["seed"]) in rec.curves]
    runs = [c for c in runs if c.status == "complete"]
    out: dict[str, Any] = {"runs": len(runs), "missing": len(chosen) - len(runs)}
    if not runs:
        return out
    small = [c for c in runs if c.trainable_params / BASE_PARAMS <= SMALL]
    if small:
        best = max(small, key=lambda c: rec.score(c, rec.steps))
        out.update(best_small_val=rec.score(best, rec.steps),
                   best_small_test=rec.score(best, rec.steps, "test"),
                   best_small_label=cands[best.id].get("recipe") or f"#{best.id}",
                   best_small_lr=cands[best.id]["candidate"]["learning_rate"])
    scales = Scales(BASE_PARAMS)
    points = [(rec.score(c, rec.steps), c.trainable_params, c.peak_memory_bytes or 0)
              for c in runs]
    front = [c for c, p in zip(runs, points) if not any(
        q != p and q[0] >= p[0] and q[1] <= p[1] and q[2] <= p[2] for q in points)]
    out["hypervolume_test"] = hypervolume(
        [scales.normalise((rec.score(c, rec.steps, "test"), c.trainable_params,
                           c.peak_memory_bytes or 0)) for c in front], REFERENCE)
    return out


def done_keys(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    return {(r["task"], r["ratio"], r["arm"], r["seed"], r["setting"], r["snapshot"],
             r.get("engine"))
            for r in map(json.loads, path.read_text().splitlines()) if r}


def run(tasks: list[str], ratios: list[float], arms: list[str], reps: int, setting: str,
        out: Path = OUT, frozen: str | None = None) -> None:
    folder, runs = snapshot(list(TASKS))  # every task: W's store holds the others
    if frozen:  # an earlier snapshot, so that arms run apart pair on the same recording
        folder = WORK / "snapshots" / frozen
        runs = {t: len((folder / f"{t}.jsonl").read_text().splitlines()) for t in tasks}
    have = done_keys(out)
    print(f"recording snapshot {folder.name}: {runs}", flush=True)
    for task in tasks:
        rec = Recording.load(task, curves_dir=folder)
        for ratio in ratios:
            for arm in arms:
                seeds = range(reps) if arm in SEARCH_ARMS else range(1)
                for seed in seeds:
                    stored = arm + TAG if arm in SEARCH_ARMS else arm
                    key = (task, ratio, stored, seed, setting, folder.name, COMMIT)
                    if key in have:
                        continue
                    t0 = time.perf_counter()
                    if arm in SEARCH_ARMS:
                        row = replay(task, ratio, seed, arm, setting, rec,
                                     **w_store(arm, task, folder))
                    else:
                        row = fixed_arm(rec, arm, ratio)
                    row.update(task=task, ratio=ratio, arm=stored, seed=seed, setting=setting,
                               snapshot=folder.name, recorded=runs[task], engine=COMMIT,
                               replay_seconds=round(time.perf_counter() - t0, 1))
                    save_row(out, row, f"{task} R={ratio:g} {stored} seed {seed}: test "
                             f"{row.get('best_small_test')}, HV "
                             f"{row.get('hypervolume_test', 0):.3f}, "
                             f"{row.get('trials', row.get('runs'))} runs, {row['replay_seconds']} s")


def w_store(arm: str, task: str, snap: Path) -> dict:
    """Arm W's leave-one-task-out meta-store: the three other tasks' curves of the same
    snapshot, a fresh copy for each replay (a study appends itself to its store, so a shared
    one would let the next repetition learn from the held-out task)."""
    if arm != "W":
        return {}
    from portfolio import leave_one_out

    folder = snap / "loto" / task
    if not folder.exists():
        leave_one_out(task, folder, curves=snap)
    copy = Path(tempfile.mkdtemp(prefix="meta-")) / "store"
    shutil.copytree(folder, copy)
    return {"meta_store": copy}


def cell(vals: list[float]) -> str:
    return show(vals, 3)


def current(rows: list[dict]) -> list[dict]:
    """The rows a report shows: each task's newest snapshot of the recording, and on it each
    arm as the newest engine replayed it (a change to the engine reruns its arms; the rows of
    the engine before stay in the file, out of the report). Rows are in the order run."""
    latest = {r["task"]: r["snapshot"] for r in rows}
    rows = [r for r in rows if latest[r["task"]] == r["snapshot"]]
    engine = {(r["task"], r["arm"]): r.get("engine") for r in rows}
    # a C arm is recorded answers, the same under any engine: its newest row at each R
    newest = {(r["task"], r.get("ratio"), r["arm"]): id(r) for r in rows}

    def shown(r: dict) -> bool:
        if searched(r["arm"]):
            return engine[r["task"], r["arm"]] == r.get("engine")
        return newest[r["task"], r.get("ratio"), r["arm"]] == id(r)

    return [r for r in rows if shown(r)]


def searched(arm: str) -> bool:
    """A search arm (A, B, W, or one of them on another engine: "A@<commit>")."""
    return arm.split("@")[0] in SEARCH_ARMS


def report(out: Path = OUT) -> str:
    rows = current([json.loads(line) for line in out.read_text().splitlines() if line])
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault((r["task"], r["ratio"], r["arm"]), []).append(r)
    lines = ["## The honest benchmark, replayed (bench/replay_quality.py)", "",
             "Every arm selects on validation and is reported on the **test split** "
             "(never seen by a search or a selection). Best score at <= 1% trainable "
             "parameters (test), hypervolume of the front (test scores), mean ± std over "
             "repetitions; C arms are one recorded answer. Command: `python "
             "bench/replay_quality.py --tasks sst2,stsb --ratios R --arms A,B,W,C-sweep,C-short,"
             "C+ --reps N --snapshot a1d6e99b49` (N: 5 at R = 1 and 3, 20 at 10, 40 and "
             "150; W 10 at 40); CoLA and RTE, where nothing learns, `--tasks cola,rte --ratios "
             "10,40,150 --arms A,C-sweep,C-short,C+ --reps 20` (and `--ratios 1,3 --reps 5`); an older engine's arm with "
             "`AUTOPEFT_ENGINE=<its checkout>` before it; then `--report`. Each arm is shown as "
             "the newest engine (the package's last commit) that replayed it, named under each "
             "task.", ""]
    targets: list[str] = []
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        recorded = task_rows[0]["recorded"]
        nothing = floor(task)
        top = ceiling(Recording.load(task, curves_dir=WORK / "snapshots" / task_rows[0]["snapshot"]))
        nearest = sum(r.get("nearest", 0) for r in task_rows)
        trained = sum(r.get("exact", 0) + r.get("nearest", 0) for r in task_rows)
        engines = sorted({r["arm"] for r in task_rows if "@" in r["arm"]})
        score_arms = ["A", "B", "W", "C-sweep", "C-short", "C+", *engines]
        hv_arms = ["A", "B", "W", *engines]
        head = score_arms + [f"HV {a}" for a in hv_arms]
        lines += [f"### {task} (recording: {recorded} runs; {nearest} of {trained} replayed "
                  "trials answered by the nearest recorded candidate)", ""]
        arms = sorted({r["arm"] for r in task_rows})
        lines += ["Engines: " + ", ".join(
            f"{arm} {next(r.get('engine') for r in task_rows if r['arm'] == arm)}"
            for arm in arms if searched(arm)) + ".", ""]
        if top and top["test"] > nothing:  # where something learned
            lines += [f"The recording's ceiling: its best run at <= 1% parameters on validation "
                      f"is {top['label']} ({top['val']:.3f} validation, {top['test']:.3f} test): "
                      "no arm can report more than a search that finds it.", ""]
        lines += ["| R | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        for ratio in sorted({r["ratio"] for r in task_rows}):
            def vals(arm: str, key: str = "best_small_test") -> list[float]:
                return [r[key] for r in by.get((task, ratio, arm), []) if r.get(key) is not None]

            def shown(arm: str) -> str:  # a C arm whose runs are not all recorded yet: marked
                short = any(r.get("missing") for r in by.get((task, ratio, arm), []))
                return cell(vals(arm)) + (" (part)" if short else "")

            lines.append(f"| {ratio:g} | " + " | ".join(
                [shown(a) for a in score_arms]
                + [cell(vals(a, "hypervolume_test")) for a in hv_arms]) + " |")
            judged = check(task, ratio, by, nothing, top) + full_fidelity(task, ratio, by)
            targets += judged
            if not any("no signal" in line for line in judged):
                for old in engines:
                    targets += engine_check(task, ratio, by, old)
        w3 = [r["best_small_test"] for r in by.get((task, 3.0, "W"), []) if r.get("best_small_test") is not None]
        a10 = [r["best_small_test"] for r in by.get((task, 10.0, "A"), []) if r.get("best_small_test") is not None]
        if w3 and a10 and max(w3 + a10) > nothing:  # a 3x shorter budget to the same result
            ok = statistics.fmean(w3) >= statistics.fmean(a10)
            targets.append(f"- {task}: W at R = 3 reaches A's R = 10 score: "
                           f"{'met' if ok else 'MISSED'} ({cell(w3)} against {cell(a10)})")
        lines.append("")
    return "\n".join(lines + ["### Targets (issue 28), each met or missed", ""] + targets)


def paired(by: dict, task: str, ratio: float, a: str, b: str, key: str) -> list[float]:
    """a - b per repetition (a fixed arm's one answer pairs with every repetition)."""
    other = {r["seed"]: r[key] for r in by.get((task, ratio, b), []) if r.get(key) is not None}
    fixed = next(iter(other.values()), None) if not searched(b) else None
    return [r[key] - (other.get(r["seed"]) if fixed is None else fixed)
            for r in by.get((task, ratio, a), [])
            if r.get(key) is not None and (fixed is not None or r["seed"] in other)]


def floor(task: str) -> float:
    """What learning nothing scores on the test split, plus two sampling errors: the
    majority class (accuracy) or 0 (a correlation, MCC). Every arm at or below it: the
    recording learned nothing there, and no comparison of arms means anything."""
    import numpy as np

    from autopeft.metrics import METRICS
    from autopeft.results import sampling_noise

    rec = Recording.load(task)
    y = rec.test_labels
    if y.dtype.kind == "f":
        base = 0.0
    else:
        base = METRICS[rec.metric](np.full_like(y, np.bincount(y).argmax()), y)["score"]
    return base + 2 * sampling_noise(rec.metric, len(y))


def ceiling(rec: Recording) -> dict:
    """The recording's best run at <= 1% parameters by validation score at full fidelity:
    what a perfect search that selects on validation picks, since the replay answers every
    proposal from a recorded run. No arm can report more; where C-sweep already picks this
    run, "A above C-sweep" cannot be met on this recording, whatever the search does."""
    runs = [c for c in rec.curves.values() if c.trainable_params / BASE_PARAMS <= SMALL]
    if not runs:
        return {}
    best = max(runs, key=lambda c: rec.score(c, rec.steps))
    cands = {c["id"]: c for c in rec.settings["candidate_list"]}
    return {"val": rec.score(best, rec.steps), "test": rec.score(best, rec.steps, "test"),
            "label": describe(cands[best.id]["candidate"])}


def describe(candidate: dict) -> str:
    """A recorded candidate in a few words: its methods and learning rate."""
    names = "+".join(m["name"] for m in candidate.get("methods", []))
    return f"{names} at lr {candidate.get('learning_rate', 0):.2g}"


def check(task: str, ratio: float, by: dict, nothing: float | None = None,
          top: dict | None = None) -> list[str]:
    """Issue 28's targets at this task and R ("beyond the spread": the paired difference's
    mean exceeds its std over repetitions); none where no arm scored above ``nothing``
    (``floor``: no arm learned anything). ``top``: the recording's ``ceiling``, to say
    where C-sweep already picks it (then A can tie it at best)."""
    best = [r["best_small_test"] for (t, q, _), rows in by.items() if t == task and q == ratio
            for r in rows if r.get("best_small_test") is not None]
    if nothing is not None and best and max(best) <= nothing:
        return [f"- {task}, R = {ratio:g}: no signal: no arm scored above {nothing:.3f} "
                "(learning nothing, plus two sampling errors) on the test split"]
    rules = []
    if ratio == 1:
        rules.append(("A >= C-sweep - 0.5 point", "A", "C-sweep", "best_small_test",
                      lambda m, sd: m >= -0.005 - EPS))
    if ratio >= 10:
        rules.append(("A above C-sweep beyond the spread", "A", "C-sweep", "best_small_test",
                      lambda m, sd: m > sd + EPS))
        rules.append(("hypervolume A above B beyond the spread", "A", "B", "hypervolume_test",
                      lambda m, sd: m > sd + EPS))
    if ratio >= 3:
        rules.append(("A >= C-short", "A", "C-short", "best_small_test",
                      lambda m, sd: m >= -EPS))
    rules.append(("W not below A by more than one std", "W", "A", "best_small_test",
                  lambda m, sd: m >= -sd - EPS))
    out = []
    for text, a, b, key, ok in rules:
        if any(r.get("missing") for r in by.get((task, ratio, b), [])):
            out.append(f"- {task}, R = {ratio:g}: {text}: not judged ({b}'s runs are not all "
                       "recorded yet)")
            continue
        diffs = paired(by, task, ratio, a, b, key)
        m, sd = mean_sd(diffs)
        if m is None:
            continue
        why = ""
        if b == "C-sweep" and top and not ok(m, sd) and any(
                r.get("best_small_val", -1e9) >= top["val"] - EPS for r in by[task, ratio, b]):
            why = "; C-sweep picks the recording's best run on validation: no arm can do more"
        out.append(f"- {task}, R = {ratio:g}: {text}: {'met' if ok(m, sd) else 'MISSED'} "
                   f"({a} - {b}: {m:+.3f} ± {sd:.3f}, {len(diffs)} pairs{why})")
    return out


def full_fidelity(task: str, ratio: float, by: dict) -> list[str]:
    """Issue 28: at R >= 3 the best front member (by validation score) of every replayed
    search of A was trained to a full run's steps."""
    rows = [r for r in by.get((task, ratio, "A"), []) if r.get("best_steps") is not None]
    if ratio < 3 or not rows:
        return []
    full = sum(1 for r in rows if r["best_steps"] >= r["full_steps"])
    return [f"- {task}, R = {ratio:g}: the best front member trained to full fidelity: "
            f"{'met' if full == len(rows) else 'MISSED'} ({full} of {len(rows)} searches)"]


def paired_t(mean: float, sd: float, n: int) -> str:
    """The paired t statistic (the mean over its standard error), beside the spread rule:
    a difference within one std of the pairs can still be far beyond its sampling error
    over 20 pairs (t > 2: the mean is two standard errors from 0)."""
    if n < 2 or sd <= 0:
        return ""
    return f", paired t {mean / (sd / math.sqrt(n)):+.1f}"


def engine_check(task: str, ratio: float, by: dict, old: str) -> list[str]:
    """Issue 29's targets: this engine's A against an older engine's, paired by seed."""
    out = []
    for text, key, ok in (
            ("hypervolume above the old engine's beyond the spread", "hypervolume_test",
             lambda m, sd: m > sd + EPS),
            ("hypervolume never below the old engine's by more than the spread",
             "hypervolume_test", lambda m, sd: m >= -sd - EPS),
            ("best at <= 1% parameters not lower", "best_small_test",
             lambda m, sd: m >= -EPS)):
        diffs = paired(by, task, ratio, "A", old, key)
        m, sd = mean_sd(diffs)
        if m is not None:
            out.append(f"- {task}, R = {ratio:g}: A {text} ({old}): "
                       f"{'met' if ok(m, sd) else 'MISSED'} ({m:+.3f} ± {sd:.3f}, "
                       f"{len(diffs)} pairs{paired_t(m, sd, len(diffs))})")
    return out


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--ratios", default="1,3,10")
    ap.add_argument("--arms", default="C-sweep,C-short,C+,A,B")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--setting", default="cpu")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--snapshot", default=None,
                    help="replay this earlier snapshot of the recording (bench/.work/snapshots)")
    ap.add_argument("--report", action="store_true",
                    help="write the results so far to BENCHMARKS.md (section 'replay')")
    args = ap.parse_args(argv)
    if args.report:
        from _report import publish

        return publish("replay", report(Path(args.out)))
    run(args.tasks.split(","), [float(r) for r in args.ratios.split(",")],
        args.arms.split(","), args.reps, args.setting, Path(args.out), args.snapshot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
