"""Recorded learning curves as meta-store studies, and the shipped default portfolio
(issue 28, item 5; ``autopeft/search/transfer.py``).

Each task's recording (``bench/curves/<task>.jsonl``, ``record.py``) becomes one
pseudo-study: every complete run a trial at full fidelity, its intermediate points its rung
scores (fraction of the schedule, score), **validation scores only** (the test split is for
reporting, never for building a portfolio), with its trainable parameters, peak memory and
seconds. From them:

* ``write_store(tasks, directory)``: a meta-store of those tasks, for a replay that leaves
  one task out (``simulate.py``: a study on the held-out task starts from the other three);
* ``default_portfolio(tasks)``: the greedy portfolio of all of them, written as package
  data (``autopeft/search/portfolios/bert.json``): what a BERT-family study starts from
  when its meta-store holds nothing of the family.

    python bench/portfolio.py                      # the shipped default, all four tasks
    python bench/portfolio.py --leave-out rte --store /tmp/meta-no-rte
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from heldout import TASKS  # noqa: E402
from simulate import BASE_PARAMS, CURVES, WORK, Recording  # noqa: E402

from _report import DATA  # noqa: E402
from autopeft.search.transfer import (MAX_PORTFOLIO, PORTFOLIOS, StudyRecord,  # noqa: E402
                                      TrialRecord, build_portfolio, write_study)

SHIPPED = PORTFOLIOS / "bert.json"


def study_of(rec: Recording) -> StudyRecord:
    """One task's recording as a meta-store study (validation scores only)."""
    from autopeft.tasks import get_task

    cands = {c["id"]: c["candidate"] for c in rec.settings["candidate_list"]}
    trials = []
    for (i, _seed), curve in sorted(rec.curves.items()):
        if curve.status != "complete" or not curve.points:
            continue
        n = curve.steps
        trials.append(TrialRecord(
            candidate={k: v for k, v in cands[i].items() if k != "seed"},
            score=rec.score(curve, n, "val"), fraction=1.0, fidelity="search",
            label=curve_label(cands[i]),
            rungs=[[round(p / n, 4), rec.score(curve, p, "val")] for p in curve.points],
            trainable_params=curve.trainable_params,
            trainable_fraction=curve.trainable_params / BASE_PARAMS,
            peak_memory_bytes=curve.peak_memory_bytes,
            seconds=round((curve.retimed or curve.step_seconds or 0.0) * n, 2)))
    task = get_task(rec.task)
    return StudyRecord(
        study=f"recorded-{rec.task}", source="recorded curves",
        task={"name": rec.task, "metric": task.metric, "num_labels": task.num_labels,
              "train_rows": rec.settings.get("train_rows", {}).get(rec.task),
              "eval_rows": len(rec.val_labels)},
        model={"name": rec.settings.get("model", "MiniLM-L6"), "model_type": "bert",
               "family": "bert", "params": BASE_PARAMS},
        schedule_steps=rec.steps, trials=trials)


def curve_label(candidate: dict) -> str:
    return "+".join(m["name"] for m in candidate["methods"])


def studies(tasks: list[str], curves: Path = CURVES) -> list[StudyRecord]:
    return [study_of(Recording.load(t, curves, WORK, DATA)) for t in tasks]


def write_store(tasks: list[str], directory: str | Path, curves: Path = CURVES) -> list[Path]:
    """A meta-store in ``directory`` holding the recordings of ``tasks`` (and nothing else
    this writes): one ``recorded-<task>.json`` each. Returns the files."""
    out = []
    for st in studies(tasks, curves):
        if note := write_study(directory, st):
            raise OSError(note)
        out.append(Path(directory) / f"{st.study}.json")
    return out


def leave_one_out(task: str, directory: str | Path, curves: Path = CURVES) -> list[Path]:
    """The store a replay of ``task`` starts from: the other tasks' recordings, never its
    own. A study appends itself to its store: give each replayed study its own copy
    (``shutil.copytree``), or the next repetition learns from the held-out task."""
    return write_store([t for t in TASKS if t != task], directory, curves)


def default_portfolio(tasks: list[str], curves: Path = CURVES, k: int = MAX_PORTFOLIO) -> dict:
    """The shipped portfolio's content: the greedy of ``tasks``' recordings, in order, with
    each member's validation score on each task it ran on."""
    recorded = studies(tasks, curves)
    found = build_portfolio(recorded, k, source="default")
    runs = {st.task["name"]: len(st.trials) for st in recorded}
    return {
        "family": "bert", "tasks": found.tasks, "skipped": found.skipped, "runs": runs,
        "model": recorded[0].model["name"] if recorded else None,
        "made_by": "bench/portfolio.py (validation scores of bench/curves; greedy, "
                   "autopeft/search/transfer.py)",
        "best_lr": found.best_lr,  # the learning-rate prior's centres (transfer.rate_prior)
        "candidates": [{"candidate": c, "gain": round(g, 4), "label": curve_label(c),
                        "val_scores": {t: round(v, 4) for t, v in scores.items()}}
                       for c, g, scores in zip(found.candidates, found.gains,
                                               found.member_scores)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--leave-out", metavar="TASK", help="a task whose curves never enter")
    ap.add_argument("--store", metavar="DIR",
                    help="write a meta-store of the tasks here (else: the shipped portfolio)")
    ap.add_argument("--curves", default=str(CURVES), help="the recording to read")
    args = ap.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t and t != args.leave_out]
    if args.store:
        for path in write_store(tasks, args.store, Path(args.curves)):
            print(path)
        return 0
    content = default_portfolio(tasks, Path(args.curves))
    SHIPPED.parent.mkdir(parents=True, exist_ok=True)
    SHIPPED.write_text(json.dumps(content, indent=1) + "\n")
    print(f"{SHIPPED.relative_to(ROOT)}: {len(content['candidates'])} candidates from "
          f"{content['runs']}")
    for c in content["candidates"]:
        print(f"  {c['label']} lr {c['candidate']['learning_rate']:.2e} gain {c['gain']:.3f} "
              f"{c['val_scores']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
