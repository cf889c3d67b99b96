"""How should a search cut fidelity, and how noisy is a score? (issue: the budget buys a
true front, items 1 and 2). SST-2 from ../shared/data, the real MiniLM, batch 32, max
length 64, the full 872-row validation split.

For each candidate (the six warm-start recipes and a few sampled from the default space):

* one run of ``--max-steps`` steps, scored at the rungs ``max/9``, ``max/3`` and ``max``
  *within that one long schedule* (warm-up and decay planned for ``max`` steps): the cut
  "steps within one long schedule", and its end is the full-fidelity ("refit") score;
* one run per lower rung with a *short schedule* over a row subset of that many steps:
  the cut "shorter schedule / row subset" (with one epoch the two coincide);

and for three recipes, seeds 1-4 of the long run: the spread of a score at each rung.
Reported: Spearman rank correlation of each cut's scores with the refit scores, and the
seed spread (sample std) per recipe and rung. Scores only, so the machine's load does not
change them; wall times are reported but are not the point.

    python bench/fidelity.py            # about 60 minutes on an idle 2-core machine
    python bench/fidelity.py --quick    # a few minutes, fewer steps and candidates
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _report import DATA, minilm, write_section  # noqa: E402

warnings.filterwarnings("ignore")



def candidates(space_name: str, n_sampled: int, model: object):
    """The recipes (as candidates) and ``n_sampled`` random draws from the space."""
    import optuna

    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.search.warmstart import RECIPES
    from autopeft.space import load_space
    from autopeft.validate import fit_space

    out = [(r.name, Candidate([MethodSpec(m, dict(p)) for m, p in (r.params or {r.entry: {}}).items()],
                              r.learning_rate, 0)) for r in RECIPES]
    space, _ = fit_space(load_space(space_name), model)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=7))
    while len(out) < len(RECIPES) + n_sampled:
        trial = study.ask()
        cand = space.sample(trial)
        study.tell(trial, 0.0)
        if cand.label not in ("full",):
            out.append((f"sampled {cand.label}", cand))
    return out


def run(bench, cand, seed: int, stop_at: int, rungs: list[int]) -> dict:
    """Train ``cand`` with ``seed`` on the bench's schedule, scored at ``rungs``; stop after
    ``stop_at`` steps. Returns rung scores and seconds."""
    import dataclasses

    import torch

    from autopeft.search.objective import StopTrial

    scores: dict[int, float] = {}

    def on_eval(step: int, score: float, *_: object) -> None:
        scores[step] = score
        if step >= stop_at:
            raise StopTrial("done", 0, step)

    head = bench.base.model.classifier  # the new head, from this seed (as build does now)
    torch.manual_seed(seed)
    for module in head.modules():
        bench.base.model._init_weights(module)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    try:
        bench.run(dataclasses.replace(cand, seed=seed), eval_at=rungs, on_eval=on_eval)
    except StopTrial:
        pass
    return {"scores": scores, "seconds": time.perf_counter() - t0}


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-steps", type=int, default=270)
    ap.add_argument("--sampled", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seeded", type=int, default=3, help="recipes measured with every seed")
    ap.add_argument("--seeded-names", nargs="*", default=[], help="... or these, by name")
    ap.add_argument("--cuts-from", help="reuse the per-candidate lines of an earlier run's log")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "fidelity.json"))
    args = ap.parse_args()
    if args.quick:
        args.max_steps, args.sampled, args.seeds = 54, 1, 2
    import torch

    from autopeft.runner import Bench, DataSettings
    from autopeft.train import TrainSettings

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    max_steps = args.max_steps
    rungs = [max_steps // 9, max_steps // 3, max_steps]
    settings = TrainSettings(batch_size=32, max_length=64)
    data = DataSettings("sst2", data_dir=str(DATA), train_samples=max_steps * 32)
    long_bench = Bench.load(minilm(), data, settings)
    cands = candidates("default", args.sampled, long_bench.base.model)
    results: dict[str, dict] = {}
    if args.cuts_from:  # the per-candidate lines a previous run printed (name {json})
        names = [n for n, _ in cands]
        for line in Path(args.cuts_from).read_text().splitlines():
            name = next((n for n in names if line.startswith(n + " {")), None)
            if name:
                res = json.loads(line[len(name) + 1:])
                for part in ("long",):
                    res[part]["scores"] = {int(k): v for k, v in res[part]["scores"].items()}
                res["short"] = {int(k): v for k, v in res["short"].items()}
                results[name] = res
        cands = [(n, c) for n, c in cands if n in results or n in args.seeded_names]
    for name, cand in cands:
        if name in results:
            continue
        res = {"long": run(long_bench, cand, 0, max_steps, rungs), "short": {}}
        for r in rungs[:-1]:
            short = Bench.load(minilm(), DataSettings("sst2", data_dir=str(DATA), train_samples=r * 32),
                               settings)
            res["short"][r] = run(short, cand, 0, r, [r])["scores"].get(r)
        results[name] = res
        print(name, json.dumps(res), flush=True)
    seeded = args.seeded_names or [n for n, _ in cands[:4] if n != "BitFit"][:args.seeded]
    spread: dict[str, dict[int, list[float]]] = {}
    for name, cand in cands:
        if name not in seeded:
            continue
        if name not in results:
            results[name] = {"long": run(long_bench, cand, 0, max_steps, rungs), "short": {}}
        runs = [results[name]["long"]["scores"]] + [
            run(long_bench, cand, s, max_steps, rungs)["scores"] for s in range(1, args.seeds)]
        spread[name] = {r: [x.get(r) for x in runs] for r in rungs}
        print(name, "seeds", spread[name], flush=True)
    Path(args.out).write_text(json.dumps({"rungs": rungs, "results": results, "spread": spread},
                                         indent=1, default=str))
    finals = {n: r["long"]["scores"].get(max_steps) for n, r in results.items()}
    names = [n for n in results if finals[n] is not None]
    lines = ["| candidate | " + " | ".join(f"long @{r}" for r in rungs) + " | "
             + " | ".join(f"short {r}" for r in rungs[:-1]) + " | s (long) |",
             "| --- | " + " | ".join("---:" for _ in rungs) + " | "
             + " | ".join("---:" for _ in rungs[:-1]) + " | ---: |"]
    for n in names:
        r = results[n]
        lines.append(f"| {n} | " + " | ".join(f"{r['long']['scores'].get(k, float('nan')):.3f}" for k in rungs)
                     + " | " + " | ".join(f"{(r['short'].get(k) or float('nan')):.3f}" for k in rungs[:-1])
                     + f" | {r['long']['seconds']:.0f} |")
    corr = ["| rung (steps) | Spearman, long schedule vs refit | Spearman, short schedule vs refit |",
            "| ---: | ---: | ---: |"]
    for k in rungs[:-1]:
        lo = [results[n]["long"]["scores"].get(k) for n in names]
        sh = [results[n]["short"].get(k) for n in names]
        fin = [finals[n] for n in names]
        corr.append(f"| {k} | {spearman(lo, fin):.3f} | {spearman(sh, fin):.3f} |")
    sp = ["| recipe | " + " | ".join(f"std @{r}" for r in rungs) + " | mean @end |",
          "| --- | " + " | ".join("---:" for _ in rungs) + " | ---: |"]
    for n, by_rung in spread.items():
        sp.append(f"| {n} | " + " | ".join(
            f"{statistics.stdev([v for v in by_rung[r] if v is not None]):.4f}" for r in rungs)
                  + f" | {statistics.fmean(by_rung[max_steps]):.4f} |")
    body = "\n".join([
        "## Fidelity cut and seed noise (bench/fidelity.py)", "",
        f"Command: `python bench/fidelity.py {' '.join(sys.argv[1:])}` "
        f"({time.strftime('%Y-%m-%d')}, total {(time.perf_counter() - start) / 60:.0f} min, "
        f"{args.threads} torch thread(s)). MiniLM, SST-2 ({max_steps * 32} training rows = "
        f"{max_steps} steps of batch 32 at full fidelity, max length 64), scored on all 872 "
        "validation rows.", "",
        "Scores per candidate (seed 0): within one long schedule at each rung, and after a "
        "short schedule of that many steps:", "", *lines, "",
        "How each cut ranks the candidates like their full-fidelity score:", "", *corr, "",
        f"Seed spread ({args.seeds} seeds: new head, adapter init, data order, dropout):", "", *sp])
    write_section("fidelity" + ("-quick" if args.quick else ""), body)
    print(body)


if __name__ == "__main__":
    main()
