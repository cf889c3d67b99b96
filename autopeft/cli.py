"""``autopeft`` command line: parse, call ``autopeft.api``, print. Nothing else lives here.

User mistakes print one line, ``autopeft: error: ...``, and exit with code 2.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from autopeft.errors import UserError

EXAMPLES = """examples:
  autopeft search --task sst2 --model roberta-base --budget 4h
  autopeft search --task sst2 --model ./minilm --data-dir ../shared/data --n-trials 8 \\
      --train-samples 2000 --eval-samples 872
  autopeft show sst2-roberta-base --sort params
  autopeft export sst2-roberta-base --trial 3 --out exports/best --train
  autopeft export sst2-roberta-base --pick 'score>=0.9,min params' --out exports/small
  autopeft train --config exports/small/candidate.yaml --out trained/small
  autopeft plot sst2-roberta-base --open
  autopeft methods
  autopeft methods lora
"""


PICK_HELP = """picking rules (--pick): comma-separated clauses
  filters  score>=0.9   params<1M   memory<=2GiB   fraction<1%   time<10m
  goals    min params | max score | min memory      (first goal first; default: max score)
  ties go to higher score, then fewer params, then less memory.
examples:
  autopeft export demo --best score --out exports/top
  autopeft export demo --pick 'score>=0.9,min params' --out exports/small
  autopeft export demo --pick 'memory<1GiB,max score' --out exports/lean --train
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _trials_per_gpu(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line like every other user error (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"autopeft: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study name (its database is studies/<name>.db)")
    p.add_argument("--storage", help="Optuna storage URL, if not the default SQLite file")


class _Defaults:
    """Adds the flags of one settings dataclass: a flag left out is absent from the parsed
    arguments, so the dataclass's own default applies (declared once, there), and the help
    says what that default is."""

    def __init__(self, parser: argparse.ArgumentParser, settings: type):
        self.parser = parser
        self.defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING
                         and f.default_factory is not dataclasses.MISSING else f.default
                         for f in dataclasses.fields(settings)}

    def add(self, flag: str, *, dest: str | None = None, help: str = "", **kwargs: Any) -> None:
        dest = dest or flag.lstrip("-").replace("-", "_")
        default = self.defaults[dest]  # a KeyError here: the flag names no field
        if default is None or kwargs.get("action") in ("store_true", "store_false", "append"):
            text = help  # nothing to state, or its help says what it turns on or off
        else:
            text = f"{help} (default: {default})" if help else f"default: {default}"
        self.parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS,
                                 help=text.replace("%", "%%"), **kwargs)


def parser() -> argparse.ArgumentParser:
    from autopeft.report.show import SORT_KEYS
    from autopeft.search.config import ISOLATION, SearchConfig
    from autopeft.search.pruner import PRUNERS
    from autopeft.search.samplers import SAMPLERS
    from autopeft.settings import PRECISIONS, DataSettings, TrainSettings

    top = _Parser(
        prog="autopeft", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Search parameter-efficient fine-tuning configurations: the Pareto front of "
                    "task score vs trainable parameters vs peak training memory.")
    top.add_argument("--version", action="version", version=f"autopeft {__import__('autopeft').__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("search", help="run or resume a search", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--task", required=True, help="task name (see README), e.g. sst2; own data "
                   "csv:PATH, tsv:PATH, jsonl:PATH; any dataset hf:NAME[:CONFIG] (a hub id or "
                   "a folder written by save_to_disk)")
    s.add_argument("--model", required=True, help="Hugging Face hub id or local model directory")
    search = _Defaults(s, SearchConfig)
    search.add("--budget", help="wall-clock budget for the whole search: 30m, 4h, 1h30m")
    search.add("--n-trials", type=_positive_int, help="run at most this many trials now")
    search.add("--study", help="study name (default: <task>-<model>); an existing one resumes")
    search.add("--storage", help="Optuna storage URL (default: sqlite file studies/<study>.db)")
    search.add("--space", help="search space: a name from search_spaces/ or a YAML file")
    data = _Defaults(s, DataSettings)
    data.add("--data-dir", help="offline data: DIR/glue/sst2/{train,validation}.tsv "
                                "(or set AUTOPEFT_DATA_DIR)")
    data.add("--text-column", dest="text_columns", action="append",
             help="own data, hf:NAME: a text column (give it twice for sentence pairs; "
                  "default text)")
    data.add("--label-column", help="own data, hf:NAME: the label column (default label)")
    data.add("--validation", help="own data: a validation file (default: hold out a "
                                  "seeded 10% of train, --validation-share)")
    data.add("--task-type", choices=("classification", "regression"),
             help="own data, hf:NAME: override what the labels suggest")
    data.add("--no-header", action="store_true",
             help="own CSV/TSV data without a header line: give columns by index, "
                  "e.g. --text-column 0 --label-column 1")
    data.add("--train-split", help="hf:NAME data: the split that trains")
    data.add("--validation-split", help="hf:NAME data: the split scored (default: its "
                                        "labelled 'validation' split, else a held-out share "
                                        "of train; never a test split unless named here)")
    data.add("--validation-share", type=_positive_float,
             help="the seeded share of train held out for scoring where there is no "
                  "validation data (own files without --validation, hf:NAME without a "
                  "labelled validation split)")
    data.add("--train-samples", type=_positive_int, help="train on a seeded subset of this size")
    data.add("--eval-samples", type=_positive_int, help="score on a seeded subset of this size")
    data.add("--subset-seed", type=int, help="which seeded subsets --train-samples and "
                                             "--eval-samples take")
    train = _Defaults(s, TrainSettings)
    train.add("--epochs", type=_positive_float, help="epochs per trial")
    train.add("--batch-size", type=_positive_int, help="training batch size")
    train.add("--max-length", type=_positive_int, help="truncate inputs (tokens)")
    train.add("--num-beams", type=_positive_int,
              help="generation tasks: beam size when decoding (1: greedy)")
    train.add("--max-new-tokens", type=_positive_int,
              help="generation tasks: longest output scored")
    train.add("--grad-accum", type=_positive_int,
              help="micro-batches per optimiser step (effective batch = batch size x this)")
    train.add("--gradient-checkpointing", action="store_true",
              help="recompute activations in backward: less memory, slower")
    train.add("--device", help="auto, cpu, cuda or cuda:N")
    train.add("--precision", choices=PRECISIONS)
    search.add("--sampler", choices=SAMPLERS, help="how candidates are proposed")
    search.add("--pruner", choices=PRUNERS,
               help="stop weak trials at rungs: mo-asha keeps the top 1/eta by score within "
                    "bands of trainable parameters; median-score by score alone")
    search.add("--eta", type=int, help="rung spacing and keep ratio")
    search.add("--no-warm-start", dest="warm_start", action="store_false",
               help="do not start a new study with the standard recipes (LoRA r=8, BitFit, "
                    "(IA)3, adapter, prefix, full FT)")
    search.add("--no-transfer", dest="transfer", action="store_false",
               help="start cold: neither start from earlier studies (a portfolio learned from "
                    "the meta-store, or the shipped one) nor remember this one")
    search.add("--meta-store", metavar="DIR",
               help="where studies are remembered for later start-ups (default studies/.meta)")
    search.add("--no-loss-check", dest="loss_check", action="store_false",
               help="train every candidate to its rung even if its training loss has not moved "
                    "off its start after the warm-up (default: such a candidate stops early, "
                    "PRUNED as not learning)")
    search.add("--max-memory", help="peak training memory limit, e.g. 16GB, 12GiB, 800MB")
    search.add("--max-params", help="trainable parameter limit: 1% of the base model, or a "
                                    "count such as 2M")
    search.add("--confirm-seeds", type=int, metavar="K",
               help="the refit re-trains each front member with K more seeds; the front uses "
                    "the means")
    search.add("--trial-steps", type=_positive_int,
               help="override the plan: a search trial trains at most this many steps")
    search.add("--rungs", help="override the plan: the steps at which trials are scored, "
                               "e.g. 30,90,270 (the last is the trial's length)")
    search.add("--refit-share", type=float,
               help="override the plan: the share of the budget kept for re-training the "
                    "front (the plan sizes it to continue the best members to full fidelity)")
    search.add("--seed", type=int, help="the sampler's seed (the data subsets have "
                                        "--subset-seed, a candidate's training the space's seed)")
    search.add("--max-trials", type=_positive_int,
               help="cap the study at this many trials, over all its workers")
    search.add("--workers", type=_positive_int,
               help="worker processes on this machine, this one included (one GPU each where "
                    "there are GPUs); with workers, --n-trials caps the whole study")
    search.add("--trials-per-gpu", type=_trials_per_gpu, metavar="K",
               help="at most K workers share one GPU, each capped at 1/K of its memory; auto: "
                    "as many as fit, and that many workers per GPU")
    search.add("--joining-workers", type=int, metavar="N",
               help="`autopeft worker` processes you will start on other machines to join this "
                    "study: the plan sizes the search for them too (each at the speed measured "
                    "here)")
    search.add("--isolation", choices=ISOLATION,
               help="process: each trial in a child process, so a crash (segfault, OOM kill) "
                    "fails one trial, not the study; none: in this process (env "
                    "AUTOPEFT_ISOLATION sets the default)")
    search.add("--heartbeat", type=_positive_int,
               help="seconds between a running trial's heartbeats; a trial silent for 3 beats "
                    "belongs to a dead worker: FAIL, retried once")
    search.add("--report-to", metavar="TRACKERS",
               help="experiment trackers, as HF Trainer's report_to: tensorboard,mlflow,wandb, "
                    "all (every one installed) or none; a run per trial, offline files under "
                    "studies/<study>/ unless MLFLOW_TRACKING_URI / WANDB_MODE say otherwise")
    search.add("--checkpoint-space", metavar="SIZE",
               help="the most the study's checkpoints may hold on this machine: 20GB, 500MiB, "
                    "or a share of the free disk (0.3, 30%); default: half the free disk under "
                    "the studies folder. Paused trials furthest from promotion are dropped "
                    "first (docs/checkpoints.md)")
    search.add("--trust-remote-code", action="store_true", help="allow model code from the hub")
    search.add("--force", action="store_true",
               help="add trials to an existing study even if its settings differ")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.add_argument("--json", action="store_true", help="print the final front as JSON on stdout")
    s.add_argument("--json-log", action="store_true",
                   help="one JSON object per event (trial started/finished, steps every 10 s, "
                        "...) on stdout instead of the live panel: for CI and cluster logs")

    w = sub.add_parser("worker", help="join a study and run its trials (scale out)",
                       description="Join an existing study (started by `autopeft search`) and run "
                                   "trials until its trial cap or deadline. Task, model, data and "
                                   "space come from the study.")
    w.add_argument("--study", required=True, help="the study's name")
    w.add_argument("--storage", help="its storage URL (postgresql://..., journal:PATH, "
                                     "sqlite:///PATH; default studies/<study>.db)")
    w.add_argument("--isolation", choices=ISOLATION,
                   help="as for search (default: $AUTOPEFT_ISOLATION, else process)")
    w.add_argument("--heartbeat", type=_positive_int,
                   help="seconds between a running trial's heartbeats (default: as for search)")
    w.add_argument("--device", help="override the study's device for this worker (cpu, cuda:N)")
    wq = w.add_mutually_exclusive_group()
    wq.add_argument("--quiet", action="store_true")
    wq.add_argument("--json-log", action="store_true", help="one JSON object per event on stdout")

    sh = sub.add_parser("show", help="print a study's Pareto front")
    _study_args(sh)
    sh.add_argument("--all", action="store_true", help="every trial, not only the front")
    sh.add_argument("--sort", default="score", choices=sorted(SORT_KEYS))
    out = sh.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON on stdout")
    out.add_argument("--csv", action="store_true", help="CSV on stdout")

    e = sub.add_parser("export", help="write a trial's configuration (and trained weights)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=PICK_HELP)
    _study_args(e)
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="trial number (see `autopeft show`)")
    which.add_argument("--best", choices=("score", "params", "memory"),
                       help="the complete trial best on this objective (ties: the others)")
    which.add_argument("--pick", metavar="RULE",
                       help="a picking rule, e.g. 'score>=0.9,min params' (see below)")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--train", action="store_true", help="re-train it and save the weights")
    e.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    e.add_argument("--data-dir", help="where the study's data is now, if it moved")
    e.add_argument("--model", help="where the study's base model is now, if it moved")

    tr = sub.add_parser("train", help="train an exported candidate.yaml exactly as the study did",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  autopeft export demo --pick 'score>=0.9,min params' "
                               "--out exports/demo\n  autopeft train --config exports/demo/"
                               "candidate.yaml --out trained/demo")
    tr.add_argument("--config", required=True,
                    help="candidate.yaml written by `autopeft export` (or its folder)")
    tr.add_argument("--out", help="save the trained weights, metrics.json and a model card here")
    tr.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    tr.add_argument("--seed", type=int, help="train with this seed instead of the trial's")
    tr.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: as in the study)")
    tr.add_argument("--data-dir", help="where the study's data is now, if it moved")
    tr.add_argument("--model", help="where the study's base model is now, if it moved")
    tr.add_argument("--json", action="store_true", help="print the measurements as JSON")

    pl = sub.add_parser("plot", help="write an HTML report and PNG figures of a study")
    _study_args(pl)
    pl.add_argument("--out", help="output directory (default: reports/<study>/)")
    pl.add_argument("--open", action="store_true", help="open the HTML report in a browser")

    t = sub.add_parser("tasks", help="list the named tasks, their metric and inputs")
    t.add_argument("--json", action="store_true")

    m = sub.add_parser("methods", help="list the PEFT methods and their parameters")
    m.add_argument("name", nargs="?", metavar="NAME",
                   help="one method: its parameters, their defaults and what they mean")
    m.add_argument("--json", action="store_true")
    return top


def _search(args: argparse.Namespace) -> int:
    from autopeft import api

    # Every flag named like a field of SearchConfig / TrainSettings / DataSettings goes through.
    options = {k: v for k, v in vars(args).items() if k in api.search_options()}
    if args.json_log and args.json:
        raise UserError("--json-log already ends with the front (event 'finished'); drop --json")
    progress = "json" if args.json_log else not args.quiet
    study = api.search(args.task, args.model, progress=progress, **options)
    if args.json:
        print(json.dumps([r.to_dict() for r in api.front(study)], indent=2))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from autopeft import api

    progress = "json" if args.json_log else not args.quiet
    given = {k: v for k in ("isolation", "heartbeat", "device") if (v := getattr(args, k)) is not None}
    api.worker(args.study, args.storage, progress=progress, **given)  # the rest: api's defaults
    return 0


def _show(args: argparse.Namespace) -> int:
    from autopeft import api
    from autopeft.report.show import (checkpoint_line, console, csv_rows, front_notes, plural,
                                      print_table, table)

    study = api.load_study(args.study, args.storage)
    found = api.front(study, all_trials=args.all, sort=args.sort)
    if args.json:
        print(json.dumps([r.to_dict() for r in found], indent=2))
    elif args.csv:
        csv.writer(sys.stdout).writerows(csv_rows(found))
    else:
        from rich.markup import escape

        what = "all trials" if args.all else "Pareto front"
        print_table(console(), table(found, f"{escape(study.study_name)}: {what} "
                                            f"({plural(len(found), 'trial')})"))
        for line in front_notes(study):
            print(line)
        print(checkpoint_line(study))
    return 0


def _export(args: argparse.Namespace) -> int:
    from autopeft import api

    study = api.load_study(args.study, args.storage)
    number = api.select_trial(study, trial=args.trial, best=args.best, pick=args.pick)
    path = api.export(study, number, args.out, train=args.train, force=args.force,
                      data_dir=args.data_dir, model=args.model)
    print(f"exported trial {number} to {path}")
    if args.train:
        print(retrained_line(path))
    return 0


def retrained_line(path: Any) -> str:
    """What ``export --train`` re-trained to, beside the score the study recorded."""
    from autopeft.export import ExportInfo

    measured = json.loads((path / "metrics.json").read_text())
    info = ExportInfo.read(path)
    recorded = info.objectives.score if info.objectives else None
    return (f"re-trained: score {measured['score']:.4f}"
            + ("" if recorded is None else f" (the study recorded {recorded:.4f})"))


def _train(args: argparse.Namespace) -> int:
    from autopeft import api
    from autopeft.report.show import human_bytes, percent

    m = api.train(args.config, args.out, force=args.force, data_dir=args.data_dir,
                  model=args.model, seed=args.seed, device=args.device)
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        print(f"score {m['score']:.4f}  trainable {m['trainable_params']:,} "
              f"({percent(m['trainable_fraction'])})  peak memory "
              f"{human_bytes(m['peak_memory_bytes'])}  {m['wall_seconds']:.0f}s  seed {m['seed']}"
              + (f"; saved to {args.out}" if args.out else ""))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from autopeft import api

    report = api.plot(args.study, args.out, storage=args.storage)
    print(f"wrote {report.html} and {len(report.pngs)} PNG figures in {report.html.parent}")
    if args.open:
        import webbrowser

        if not webbrowser.open(report.html.resolve().as_uri()):
            print("no browser found here; open the file above on a machine with one",
                  file=sys.stderr)
    return 0


def _methods(args: argparse.Namespace) -> int:
    from autopeft import api

    found = api.methods(args.name)
    if args.json:
        print(json.dumps(found, indent=2, default=str))
        return 0
    from rich.markup import escape
    from rich.table import Table

    from autopeft.report.show import console as make_console, print_table

    console = make_console()  # a pipe or a file: every cell in full, never cut
    if args.name:
        m = found[0]
        console.print(f"[bold]{m['name']}[/bold]: {escape(m['summary'])}\n"
                      f"category {m['category']}, engine {m['engine']}, peft export "
                      f"{'yes' if m['peft_export'] else 'no'}; paper and differences: "
                      "docs/methods.md")
        if not m["fields"]:
            console.print("no parameters")
            return 0
        t = Table("parameter", "default", "meaning")
        for f in m["fields"]:
            t.add_row(f["name"], escape(str(f["default"])), escape(f["help"]))
        print_table(console, t)
        return 0
    t = Table(title="PEFT methods", caption=(
        "Parameter objective = what a user stores (stored_params); what trains is recorded as "
        "trained_params. They differ for propetl (masks stored as bits) and prefix tuning's "
        "MLP (stored as the prefix). Papers and differences: docs/methods.md. What each "
        "parameter means: autopeft methods NAME"))
    for col in ("name", "category", "engine", "peft export", "parameters (defaults)", "summary"):
        t.add_column(col)
    for m in found:
        params = ", ".join(f"{k}={v}" for k, v in m["params"].items()) or "-"
        t.add_row(m["name"], m["category"], m["engine"], "yes" if m["peft_export"] else "no",
                  params, m["summary"])
    print_table(console, t)
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from autopeft import api

    rows = api.tasks()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    from autopeft.report.show import console, print_table

    table = Table(title="tasks (own data: --task csv:PATH, tsv:PATH, jsonl:PATH, instruct:PATH; "
                        "any dataset `datasets` loads: --task hf:NAME[:CONFIG] or hf:FOLDER)")
    for col in ("name", "kind", "metric", "model family", "inputs", "summary"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["kind"], r["metric"], r["family"], ", ".join(r["inputs"]),
                      r["summary"])
    print_table(console(), table)
    return 0


COMMANDS = {"search": _search, "worker": _worker, "show": _show, "export": _export, "train": _train, "plot": _plot,
            "methods": _methods, "tasks": _tasks}


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler, `kill`) ends like Ctrl-C: recorded, resumable


def main(argv: Sequence[str] | None = None) -> int:
    from autopeft.models import quiet_libraries

    quiet_libraries()
    args = parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"autopeft: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autopeft: interrupted; " + (
            "the trial in flight is recorded as failed. Run the same command again to resume."
            if args.command in ("search", "worker") else "nothing was finished."), file=sys.stderr)
        return 130
    except Exception as exc:  # a full or read-only disk is no bug: one line, not a traceback
        from autopeft.search.storage import disk_problem

        problem = disk_problem(exc)
        if problem is None:
            raise
        print(f"autopeft: error: {problem}", file=sys.stderr)
        return 2
