"""Does the search beat its own recipes at every budget? SST-2 on the real MiniLM, at budget
ratios R = 1, 3, 10 and 40 (R = budget / cost of one full-fidelity run), on an idle machine.

The training rows are chosen (from a measurement at the start, at ``--batch-size``) so that
one full-fidelity run takes ``--full-seconds`` (within 10-25 s); each arm's budget is R such
runs plus the start-up measured for a search process. Two settings are kept:

  the 90-minute one (the default): 12 s a full run, batch 8, half the validation rows
      (436), B at R = 10 and 40, D at R = 1 and 3; the whole benchmark, 3 repetitions, in
      one invocation (``bench/search_quality_90min.json``, section "search-quality");
  the 20-second one: ``--full-seconds 20 --batch-size 32 --eval-samples 0 --out
      bench/search_quality_20s.json --section search-quality-20s``: about 2 h 10 min over
      resumed invocations, with runs long enough for the LoRA recipe at its paper's rate
      (5e-4) to learn (it needs about 150 steps at batch 32 or 220 at batch 8).

Arms:

  (A) the default: ``autopeft search --budget ...`` (as a user runs it; trials in a child
      process);
  (B) random proposals with the same plan (``--sampler random --no-warm-start``): the
      recipes, the family start-up and the design are A's proposals, so B has none of them
      (until the eighth session B ran A's recipes first: at R = 10 that was 8 of its ~12
      trials, and A and B differed in their last few);
  (C) no search: the LoRA recipe alone with the whole budget (trained to full fidelity: a
      budget above R = 1 cannot train it longer, so C is one run per repetition);
  (C+) the six warm-start recipes at full fidelity, the best picked on validation (one set
      of runs per repetition, the same at every R);
  (D) the plan on main before issue 19: the default search with the old fidelity rule,
      frozen in ``bench/_old_plan.py`` (put in place of the package's in D's process).

Repetitions are paired: repetition k draws its training rows with ``--subset-seed k`` and
seeds the samplers with ``--seed k`` in every arm (the candidates' own seed is the space's).
Per arm and R (mean ± sample std over repetitions): the best score at <= 1% trainable
parameters on the reported front (``autopeft/results.py``), the hypervolume of that front
(one scale for all arms: ``autopeft/search/summary.py``), the best score, the candidates
looked at, and the R the plan measured. The targets of issue 19 are checked and printed, met
or missed.

Every finished arm is saved to ``--out`` (JSON) at once; a rerun skips what is there and
redoes an interrupted arm from its start (its study is deleted first). Each invocation
re-times the stored setting on the machine it runs on (``retime``, before its first search
arm), so an arm's budget is R
full runs there, whichever machine resumes the benchmark; arms at R <= 1 re-time it right
before they run (``RETIME_AT``). The start-up is measured on a real search process
(``search_startup``).

    python bench/search_quality.py                # the 90-minute setting (see BENCHMARKS.md)
    python bench/search_quality.py --reps 1 --ratios 1,10
    python bench/search_quality.py --quick        # a smoke check, about a minute or two
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _report import DATA, minilm, write_section  # noqa: E402

warnings.filterwarnings("ignore")
DATA_DIR = Path(os.environ.get("AUTOPEFT_BENCH_DATA", DATA))
BASE_PARAMS = 22_713_216  # MiniLM-L6 with a 2-class head: one hypervolume scale for every arm
ARMS = ("A", "B", "C", "C+", "D")
RETIME_AT = 1.0  # arms at this R or below re-time the setting right before they run: the
# machine's speed drifts (a full run 12.3-13 s and a start-up 17-23 s within one hour), and
# at R = 1 a 5-s drift is half a run
NAMES = {"A": "(A) autopeft default", "B": "(B) random proposals, same plan, no recipes",
         "C": "(C) LoRA recipe alone, whole budget", "C+": "(C+) six recipes, best on validation",
         "D": "(D) the old plan (main before issue 19)"}


# -- the setting: rows and batch so that one full run takes the target seconds ------------
def measure(rows: int, batch: int, max_length: int, eval_samples: int | None) -> Any:
    """The package's probe on ``rows`` training rows: its costs."""
    import torch

    from autopeft.runner import Bench, DataSettings
    from autopeft.search.probe import probe
    from autopeft.train import TrainSettings

    torch.set_num_threads(os.cpu_count() or 1)
    bench = Bench.load(minilm(), DataSettings("sst2", data_dir=str(DATA_DIR), train_samples=rows,
                                              eval_samples=eval_samples),
                       TrainSettings(batch_size=batch, max_length=max_length))
    return probe(bench, None)


def search_startup(work: Path, setting: dict) -> float:
    """Seconds an ``autopeft search`` process spends before its plan (start, imports,
    loading, the trial process, the probe), measured on one: its budget less the time its
    plan was made for. Why not an estimate: twice the in-process loading plus the probe fell
    1.5 s short, and at R = 1 (a 12-s full run) that is an eighth of the budget."""
    import optuna

    from autopeft.search.plan import PLAN_RESERVE

    budget = 3600.0
    tiny = [*common_flags(setting, 0), "--train-samples", str(10 * setting["batch_size"])]
    db, _ = run_search(work, "startup", budget, [*tiny, "--max-trials", "1", "--no-warm-start"],
                       False)  # one 10-step trial at full fidelity: nothing to refit
    plan = optuna.load_study(study_name="startup", storage=f"sqlite:///{db}").user_attrs["plan"]
    return budget - plan["budget_seconds"] / (1 - PLAN_RESERVE)


def calibrate(work: Path, full_seconds: float, batch: int, max_length: int,
              eval_samples: int | None) -> dict:
    """Measure a step and a scoring with the package's probe, then pick the training rows."""
    costs = measure(4000, batch, max_length, eval_samples)
    steps = max(10, int((full_seconds - costs.eval_seconds - costs.start_seconds) / costs.step_seconds))
    setting = {"train_rows": steps * batch, "batch_size": batch, "max_length": max_length,
               "eval_samples": eval_samples, "steps": steps,
               "full_run_seconds": round(costs.run_seconds(steps), 2), "costs": costs.__dict__}
    return {**setting, "startup_seconds": round(search_startup(work, setting), 1)}


def retime(work: Path, setting: dict) -> dict:
    """This machine's seconds, now, for the stored setting's full run and start-up. Every
    invocation measures them before its arms, so an arm's budget is R full runs *here*: a
    benchmark resumed on a slower or faster machine keeps its R (the rows stay the stored
    ones, so the arms stay paired with those measured before)."""
    costs = measure(setting["train_rows"], setting["batch_size"], setting["max_length"],
                    setting["eval_samples"])
    return {"full_run_seconds": round(costs.run_seconds(setting["steps"]), 2),
            "startup_seconds": round(search_startup(work, setting), 1)}


def common_flags(setting: dict, rep: int) -> list[str]:
    flags = ["--train-samples", str(setting["train_rows"]), "--subset-seed", str(rep),
             "--batch-size", str(setting["batch_size"]), "--max-length", str(setting["max_length"])]
    if setting["eval_samples"]:
        flags += ["--eval-samples", str(setting["eval_samples"])]
    return flags


# -- the arms ------------------------------------------------------------------------------
OLD_PLAN_CHILD = """
import sys
sys.path.insert(0, {bench!r})
import autopeft.search.study as study
from _old_plan import old_make_plan
study.make_plan = old_make_plan
from autopeft.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_search(work: Path, study: str, budget_s: float, flags: list[str],
               old_plan: bool) -> tuple[Path, float]:
    """One ``autopeft search`` process; returns its study's database and its seconds."""
    db = work / "studies" / f"{study}.db"
    db.unlink(missing_ok=True)  # an interrupted arm starts again from its beginning,
    shutil.rmtree(work / "studies" / study, ignore_errors=True)  # its checkpoints too
    argv = ["search", "--task", "sst2", "--model", minilm(), "--data-dir", str(DATA_DIR),
            "--budget", f"{budget_s:.0f}s", "--study", study, "--quiet", *flags]
    cmd = ([sys.executable, "-c", OLD_PLAN_CHILD.format(bench=str(ROOT / "bench")), *argv]
           if old_plan else [sys.executable, "-m", "autopeft", *argv])
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return db, time.perf_counter() - t0


def search_arm(work: Path, study: str, budget_s: float, flags: list[str], old_plan: bool) -> dict:
    """One `autopeft search` process (arm A, B or D); returns what its study holds."""
    db, seconds = run_search(work, study, budget_s, flags, old_plan)
    return summarise(db, study, seconds)


def summarise(db: Path, name: str, seconds: float) -> dict:
    import optuna

    from autopeft.results import front, records, score_noise
    from autopeft.search.summary import Scales, front_hypervolume

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    trials = study.get_trials(deepcopy=False)
    recs = records(trials)
    plan = study.user_attrs.get("plan", {})
    searched = [t for t in trials if "confirm_of" not in t.user_attrs
                and t.user_attrs.get("duplicate_of") is None and not t.user_attrs.get("skipped")
                and t.state.name != "WAITING"]
    on_front = front(recs, score_noise(study.user_attrs, recs))
    small = [r.score for r in on_front if (r.trainable_fraction or 1) <= 0.01]
    return {"seconds": round(seconds), "looked_at": len(searched),
            "not_learning": sum(bool(t.user_attrs.get("not_learning")) for t in searched),
            "refit": sum(r.fidelity == "refit" for r in recs),
            "hypervolume": front_hypervolume(trials, Scales(BASE_PARAMS)),
            "best": max((r.score for r in on_front), default=None),
            "best_small": max(small, default=None), "plan_ratio": plan.get("ratio"),
            "plan": {k: plan.get(k) for k in ("trial_steps", "refit_steps", "rungs", "refit_share",
                                              "refit_members", "expected_candidates")},
            "front": [(r.number, r.label, round(r.score, 4), round((r.trainable_fraction or 0) * 100, 3),
                       r.fidelity) for r in on_front]}


def recipes_arm(setting: dict, rep: int, only_lora: bool) -> dict:
    """(C): the LoRA recipe at full fidelity; (C+): the six recipes, best on validation."""
    import torch

    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.pareto import hypervolume
    from autopeft.runner import Bench, DataSettings, Fidelity
    from autopeft.search.summary import REFERENCE, Scales
    from autopeft.search.warmstart import RECIPES
    from autopeft.train import TrainSettings

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    bench = Bench.load(minilm(), DataSettings("sst2", data_dir=str(DATA_DIR),
                                              train_samples=setting["train_rows"], subset_seed=rep,
                                              eval_samples=setting["eval_samples"]),
                       TrainSettings(batch_size=setting["batch_size"], max_length=setting["max_length"]))
    runs = []
    for recipe in RECIPES[:1] if only_lora else RECIPES:
        cand = Candidate([MethodSpec(m, dict(p)) for m, p in (recipe.params or {recipe.entry: {}}).items()],
                         recipe.learning_rate, 0)
        out = bench.run(cand, fidelity=Fidelity(setting["steps"], setting["steps"]))
        runs.append({"recipe": recipe.name, "score": out.result.score, "params": out.trainable,
                     "fraction": out.trainable / max(1, out.total),
                     "memory": out.result.peak_memory})
    best = max(runs, key=lambda r: r["score"])
    small = [r["score"] for r in runs if r["fraction"] <= 0.01]
    scales = Scales(BASE_PARAMS)
    points = [scales.normalise((r["score"], r["params"], r["memory"])) for r in runs]
    return {"seconds": round(time.perf_counter() - t0), "looked_at": len(runs), "runs": runs,
            "best": best["score"], "picked": best["recipe"], "best_small": max(small, default=None),
            "hypervolume": hypervolume(points, REFERENCE)}


# -- the loop, resumable -----------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ratios", default="1,3,10,40", help="budget ratios R (default 1,3,10,40)")
    ap.add_argument("--reps", type=int, default=3, help="paired repetitions (default 3)")
    ap.add_argument("--arms", default=",".join(ARMS), help="default A,B,C,C+,D")
    ap.add_argument("--full-seconds", type=float, default=12.0,
                    help="seconds one full-fidelity run should take (default 12)")
    ap.add_argument("--batch-size", type=int, default=8, help="training batch (default 8)")
    ap.add_argument("--eval-samples", type=int, default=436,
                    help="validation rows scored (default 436, half; 0: all 872)")
    ap.add_argument("--random-ratios", default="10,40",
                    help="the R at which arm B runs (default 10,40: its target is at R >= 10; "
                         "below, a search is its warm start)")
    ap.add_argument("--old-plan-ratios", default="1,3",
                    help="the R at which arm D runs (default 1,3; the 20-second setting measured "
                         "it at 1, 3 and 10: at R = 40 the old plan is the new one's "
                         "full-fidelity search)")
    ap.add_argument("--quick", action="store_true", help="a smoke check: R = 3, one repetition, "
                                                          "a 3-second full run on 200 rows of validation")
    ap.add_argument("--out", default=str(ROOT / "bench" / "search_quality_90min.json"))
    ap.add_argument("--section", default="search-quality", help="BENCHMARKS.md section")
    ap.add_argument("--work", default=None, help="where the studies go (default: next to --out)")
    ap.add_argument("--write", action="store_true", help="write BENCHMARKS.md (default unless --quick)")
    args = ap.parse_args()
    if args.quick:
        args.ratios, args.reps, args.full_seconds, args.old_plan_ratios = "3", 1, 3.0, "3"
        args.random_ratios, args.eval_samples, args.batch_size = "3", 200, 16
        args.section = "search-quality-quick"
        if args.out == str(ROOT / "bench" / "search_quality_90min.json"):
            args.out = str(ROOT / "bench" / "search_quality_quick.json")
    out = Path(args.out)
    work = Path(args.work or out.with_suffix(".studies"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    start = time.perf_counter()

    def save() -> None:
        out.write_text(json.dumps(results, indent=1, default=str))

    if "setting" not in results:
        results["setting"] = calibrate(work, args.full_seconds, args.batch_size, 64,
                                       args.eval_samples or None)
        save()
    commands = results.setdefault("commands", [results.pop("command", None)] if "command" in results
                                  else [])
    if " ".join(sys.argv[1:]) not in commands:  # every run that added results, in order
        commands.append(" ".join(sys.argv[1:]))
    setting = results["setting"]
    print("setting:", json.dumps(setting), flush=True)
    timing: dict | None = None  # measured before the first search arm (``retime``) ...
    if len(commands) == 1 and not results.get("runs"):  # ... unless the calibration just did
        timing = {k: setting[k] for k in ("full_run_seconds", "startup_seconds")}
    ratios = [float(r) for r in args.ratios.split(",")]
    only_at = {"B": {float(r) for r in args.random_ratios.split(",")},
               "D": {float(r) for r in args.old_plan_ratios.split(",")}}
    arms = args.arms.split(",")
    runs: dict[str, Any] = results.setdefault("runs", {})
    for rep in range(args.reps):
        for arm in ("C", "C+"):  # the same at every R >= 1: once per repetition
            key = f"{arm}/rep{rep}"
            if arm in arms and key not in runs:
                runs[key] = recipes_arm(setting, rep, only_lora=arm == "C")
                save()
                print(key, json.dumps(runs[key]), flush=True)
        for ratio in ratios:
            for arm in ("A", "B", "D"):
                key = f"{arm}/R{ratio:g}/rep{rep}"
                if arm not in arms or key in runs or ratio not in only_at.get(arm, {ratio}):
                    continue
                if timing is None or ratio <= RETIME_AT:  # at R <= 1 a few seconds decide
                    timing = retime(work, setting)  # whether the one run fits
                    print("this machine now:", json.dumps(timing), flush=True)
                budget = ratio * timing["full_run_seconds"] + timing["startup_seconds"]
                flags = [*common_flags(setting, rep), "--seed", str(rep)]
                if arm == "B":
                    flags += ["--sampler", "random", "--no-warm-start"]
                runs[key] = {**search_arm(work, key.replace("/", "-").replace(".", "_"), budget,
                                          flags, old_plan=arm == "D"), **timing}
                save()
                print(key, json.dumps(runs[key]), flush=True)
    results["minutes"] = round(results.get("minutes", 0) + (time.perf_counter() - start) / 60, 1)
    save()
    measured = {float(k.split("/")[1][1:]) for k in runs if k.count("/") == 2}
    report(results, sorted(measured | set(ratios)), args.section, args.write or not args.quick)


# -- the report ----------------------------------------------------------------------------
def values(results: dict, arm: str, ratio: float, key: str) -> list[float]:
    runs = results["runs"]
    found = [r for k, r in runs.items() if (k.startswith(f"{arm}/R{ratio:g}/")
                                           or (arm in ("C", "C+") and k.startswith(f"{arm}/rep")))]
    return [r[key] for r in found if r.get(key) is not None]


def mean_sd(vals: list[float]) -> tuple[float | None, float]:
    if not vals:
        return None, 0.0
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def show(vals: list[float], digits: int = 4) -> str:
    m, sd = mean_sd(vals)
    if m is None:
        return "-"
    return f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if len(vals) > 1 else "")


def paired_gain(results: dict, a: str, b: str, ratio: float, key: str) -> tuple[float | None, float]:
    """Mean and sample std over repetitions of arm a minus arm b (same repetition)."""
    runs = results["runs"]
    diffs = []
    for k, r in runs.items():
        if not k.startswith(f"{a}/R{ratio:g}/"):
            continue
        rep = k.split("/")[-1]
        other = runs.get(f"{b}/R{ratio:g}/{rep}") or runs.get(f"{b}/{rep}")
        if other and r.get(key) is not None and other.get(key) is not None:
            diffs.append(r[key] - other[key])
    return mean_sd(diffs)


def targets(results: dict, ratios: list[float]) -> list[str]:
    """Issue 19's targets, each met or missed ("beyond the spread": the paired difference's
    mean exceeds its sample std over repetitions)."""
    lines = []
    for ratio in ratios:
        checks = []
        if ratio == 1:
            checks.append(("A within 0.5 point of C (best at <= 1% params)", "C", "best_small",
                           lambda m, sd: m >= -0.005))
        if ratio >= 3:
            checks.append(("A above C beyond the spread (best at <= 1% params)", "C", "best_small",
                           lambda m, sd: m > max(sd, 0.0)))
        if ratio >= 10:
            checks.append(("A above C+ (best at <= 1% params)", "C+", "best_small",
                           lambda m, sd: m > 0))
            checks.append(("A's hypervolume above B's beyond the spread", "B", "hypervolume",
                           lambda m, sd: m > max(sd, 0.0)))
        for text, other, key, ok in checks:
            m, sd = paired_gain(results, "A", other, ratio, key)
            verdict = "no data" if m is None else ("met" if ok(m, sd) else "MISSED")
            gain = "-" if m is None else f"{m:+.4f} ± {sd:.4f}"
            lines.append(f"- R = {ratio:g}: {text}: {verdict} (A - {other}: {gain})")
    return lines


def spans(results: dict) -> str:
    """The full-run and start-up seconds the arms' budgets were made of, as ranges (the
    calibration's for arms measured before invocations re-timed)."""
    s = results["setting"]
    timed = [r for k, r in results["runs"].items() if k.count("/") == 2]
    parts = []
    for key, what in (("full_run_seconds", "full run"), ("startup_seconds", "start-up")):
        vals = [r.get(key, s[key]) for r in timed] or [s[key]]
        low, high = min(vals), max(vals)
        parts.append(f"{what} {low:g} s" if low == high else f"{what} {low:g}-{high:g} s")
    return ", ".join(parts)


def report(results: dict, ratios: list[float], section: str, write: bool) -> None:
    s = results["setting"]
    rows = ["| R | arm | runs | plan's R | looked at | not learning | best at <= 1% params | "
            "hypervolume | best score |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for ratio in ratios:
        for arm in ARMS:
            n = len(values(results, arm, ratio, "looked_at"))
            if not n:
                continue
            rows.append(f"| {ratio:g} | {NAMES[arm]} | {n} | {show(values(results, arm, ratio, 'plan_ratio'), 1)} | "
                        f"{show(values(results, arm, ratio, 'looked_at'), 1)} | "
                        f"{show(values(results, arm, ratio, 'not_learning'), 1)} | "
                        f"{show(values(results, arm, ratio, 'best_small'))} | "
                        f"{show(values(results, arm, ratio, 'hypervolume'))} | "
                        f"{show(values(results, arm, ratio, 'best'))} |")
    body = "\n".join([
        f"## Search quality, {s['full_run_seconds']:.0f} s a full run (bench/search_quality.py)", "",
        "Commands: " + ", then ".join(f"`{'python bench/search_quality.py ' + c}`".replace(" `", "`")
                                      for c in results.get("commands", [])) + " "
        f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {results.get('minutes')} min). "
        f"MiniLM-L6, SST-2: {s['train_rows']} training rows (subset seed = repetition), batch "
        f"{s['batch_size']}, max length {s['max_length']}, {s['steps']} steps = one full-fidelity "
        f"run of {s['full_run_seconds']} s (measured), scored on "
        f"{s['eval_samples'] or 'all 872'} validation rows. Budget per arm: R full runs + "
        f"the start-up, both measured at the start of each invocation ({spans(results)}). "
        "Mean ± sample std over paired repetitions.", "",
        *rows, "", "Targets (issue 19):", "", *targets(results, ratios)])
    print(body)
    if write:
        write_section(section, body)


if __name__ == "__main__":
    main()
