"""What does a budget buy? SST-2 from ../shared/data, the real MiniLM, the default space,
the same wall-clock budget per arm, each arm a real `autopeft search` process (as a user
runs it; trials in a child process), on an idle machine:

  (a) autopeft default: the fidelity plan, MO-ASHA, the refit;
  (b) random sampler with the same plan and refit;
  (c) no search: the LoRA r=8 recipe trained alone for the whole budget (as many steps of
      one schedule as the budget affords, at most one epoch): what a user does without the tool;
  (d) the 4-minute default run: `autopeft search --budget 4m` with default settings.

Per arm (mean and spread over repetitions with different sampler seeds): candidates looked
at, how many reached each rung, how many were refit, hypervolume of the reported front
(normalised objectives, one scale for all arms: autopeft/search/summary.py), best score,
best score at <= 1% trainable parameters, and the rank correlation of search and refit scores.

    python bench/search_quality.py                 # 3 arms x 2 reps x 10 min + 4 min: ~55 min
    python bench/search_quality.py --budget 5m --reps 1
    python bench/search_quality.py --quick         # ~8 minutes
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _report import DATA, minilm, write_section  # noqa: E402

warnings.filterwarnings("ignore")



def search(workdir: Path, study: str, budget: str, extra: list[str]) -> dict:
    """One `autopeft search` process; returns what its study holds."""
    cmd = [sys.executable, "-m", "autopeft", "search", "--task", "sst2", "--model", minilm(),
           "--data-dir", str(DATA), "--budget", budget, "--study", study, "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return summarise(workdir / "studies" / f"{study}.db", study, seconds)


def summarise(db: Path, name: str, seconds: float) -> dict:
    import optuna

    from autopeft.results import front, rank_correlation, records, score_noise
    from autopeft.search.summary import Scales, front_hypervolume

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    trials = study.get_trials(deepcopy=False)
    recs = records(trials)
    plan = study.user_attrs.get("plan", {})
    searched = [t for t in trials if "confirm_of" not in t.user_attrs
                and t.user_attrs.get("duplicate_of") is None and not t.user_attrs.get("skipped")
                and t.state.name != "WAITING"]
    rungs = plan.get("rungs", [])
    reached = {r: sum(str(r) in (t.user_attrs.get("rung_scores") or {}) for t in searched)
               for r in rungs}
    on_front = front(recs, score_noise(study.user_attrs, recs))
    scales = Scales(22_713_216)  # MiniLM-L6 with a 2-class head: one scale for every arm
    small = [r.score for r in on_front if (r.trainable_fraction or 1) <= 0.01]
    return {"seconds": round(seconds), "looked_at": len(searched), "reached": reached,
            "refit": sum(r.fidelity == "refit" for r in recs),
            "hypervolume": front_hypervolume(trials, scales),
            "best": max((r.score for r in on_front), default=None),
            "best_small": max(small, default=None),
            "rank_correlation": rank_correlation(recs),
            "fidelity": sorted({r.fidelity for r in on_front}),
            "plan": {k: plan.get(k) for k in ("trial_steps", "refit_steps", "rungs", "refit_share",
                                              "expected_candidates")},
            "front": [(r.number, r.label, round(r.score, 4), r.trainable_params,
                       round((r.trainable_fraction or 0) * 100, 3), r.fidelity) for r in on_front]}


def lora_alone(budget_s: float) -> dict:
    """(c): the LoRA recipe, one schedule as long as the budget affords (probe included)."""
    import torch

    from autopeft.runner import Bench, DataSettings, Fidelity
    from autopeft.search.objective import StopTrial
    from autopeft.search.probe import PROBES, probe
    from autopeft.train import TrainSettings, total_steps

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    bench = Bench.load(minilm(), DataSettings("sst2", data_dir=str(DATA)), TrainSettings())
    costs = probe(bench, None)
    left = budget_s - (time.perf_counter() - t0) - costs.eval_seconds - costs.start_seconds
    steps = max(1, min(total_steps(len(bench.train_data), bench.settings),
                       int(left / costs.step_seconds)))

    def on_step(step: int, total: int, loss: float) -> None:
        if time.perf_counter() - t0 > budget_s:
            raise StopTrial("budget", 0, step, by_budget=True)

    try:
        out = bench.run(PROBES[0], on_step=on_step, fidelity=Fidelity(steps, steps))
        score, trainable = out.result.score, out.trainable
    except StopTrial:
        score, trainable = None, None
    return {"seconds": round(time.perf_counter() - t0), "steps": steps, "best": score,
            "best_small": score, "trainable": trainable, "looked_at": 1}


def mean_spread(values: list) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.4g}"
    return f"{statistics.fmean(vals):.4g} ± {statistics.stdev(vals):.2g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", default="10m", help="per arm (default 10m)")
    ap.add_argument("--reps", type=int, default=2, help="repetitions of (a) and (b)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "search_quality.json"))
    ap.add_argument("--resummarise", metavar="JSON",
                    help="re-read the studies of an earlier run (its JSON names their folder) "
                         "with the current read model and rewrite the section")
    args = ap.parse_args()
    if args.resummarise:
        return resummarise(Path(args.resummarise), args)
    extra: list[str] = []
    if args.quick:
        args.budget, args.reps, extra = "2m", 1, ["--train-samples", "4000", "--max-length", "64"]
    from autopeft.search.budget import parse_duration

    budget_s = parse_duration(args.budget)
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="autopeft-quality-"))
    results: dict[str, list[dict]] = {"a": [], "b": [], "c": [], "d": []}
    for rep in range(args.reps):
        results["a"].append(search(work, f"a{rep}", args.budget, [*extra, "--seed", str(rep)]))
        print("a", rep, json.dumps(results["a"][-1]), flush=True)
        results["b"].append(search(work, f"b{rep}", args.budget,
                                   [*extra, "--seed", str(rep), "--sampler", "random"]))
        print("b", rep, json.dumps(results["b"][-1]), flush=True)
    results["c"].append(lora_alone(budget_s))
    print("c", json.dumps(results["c"][-1]), flush=True)
    if not args.quick:
        results["d"].append(search(work, "d", "4m", []))
        print("d", json.dumps(results["d"][-1]), flush=True)
    results.update(workdir=str(work), command=" ".join(sys.argv[1:]),  # type: ignore[arg-type]
                   minutes=round((time.perf_counter() - start) / 60))
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    write(results, args)


def resummarise(path: Path, args: argparse.Namespace) -> None:
    results = json.loads(path.read_text())
    work = Path(results["workdir"])
    for key in ("a", "b", "d"):
        for i, old in enumerate(results[key]):
            name = f"{key}{i}" if key != "d" else "d"
            results[key][i] = summarise(work / "studies" / f"{name}.db", name, old["seconds"])
    path.write_text(json.dumps(results, indent=1, default=str))
    write(results, args)


def write(results: dict, args: argparse.Namespace) -> None:
    """The BENCHMARKS.md section from a run's results (the arms' summaries)."""
    env_note = f"{os.cpu_count()} cores"
    names = {"a": "(a) autopeft default", "b": "(b) random, same plan and refit",
             "c": "(c) LoRA r=8 alone, whole budget", "d": "(d) `--budget 4m`, defaults"}
    lines = ["| arm | runs | looked at | reached rungs | refit | hypervolume | best score | "
             "best at <= 1% params | search vs refit (Spearman) |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, runs in results.items():
        if key not in names or not runs:
            continue
        reached = "; ".join(" ".join(f"{k}:{v}" for k, v in (r.get("reached") or {}).items())
                            for r in runs) or "-"
        lines.append(f"| {names[key]} | {len(runs)} | {mean_spread([r['looked_at'] for r in runs])} | "
                     f"{reached} | {mean_spread([r.get('refit') for r in runs])} | "
                     f"{mean_spread([r.get('hypervolume') for r in runs])} | "
                     f"{mean_spread([r['best'] for r in runs])} | "
                     f"{mean_spread([r['best_small'] for r in runs])} | "
                     f"{mean_spread([r.get('rank_correlation') for r in runs])} |")
    fronts = []
    for key in ("a", "d"):
        for i, r in enumerate(results[key]):
            fronts.append(f"- {names[key]} run {i}: plan {r['plan']}; front: "
                          + ", ".join(f"trial {n} {lab} {s} ({pct}% params, {fid})"
                                      for n, lab, s, _, pct, fid in r["front"]))
    body = "\n".join([
        f"## Search quality{' (quick)' if args.quick else ''} (bench/search_quality.py)", "",
        f"Command: `python bench/search_quality.py {results['command']}` "
        f"({time.strftime('%Y-%m-%d')}, {env_note}, total {results['minutes']} min). MiniLM-L6, SST-2 "
        f"({'4000 training rows, max length 64' if args.quick else 'all 67,349 training rows, max length 128'}), "
        f"the default space, {args.budget} per arm; (a) and (b) with sampler seeds "
        f"0..{args.reps - 1}. Scores are validation accuracy on all 872 rows; the front is "
        "the reported one (`autopeft/results.py`).", "", *lines, "",
        "Fronts:", "", *fronts])
    write_section("search-quality" + ("-quick" if args.quick else ""), body)
    print(body)


if __name__ == "__main__":
    main()
