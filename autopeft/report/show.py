"""The Pareto front (or every trial) of a study as rows: for tables, JSON and CSV."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from autopeft.results import (NOT_STARTED, dropped_checkpoints, front, hidden_best, records,
                               score_noise, strict_differences)

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from optuna import Study  # only for annotations: optuna stays a lazy import
SORT_KEYS = {"score": ("score", True), "params": ("trainable_params", False),
             "memory": ("peak_memory_bytes", False), "trial": ("number", False)}


@dataclass
class Row:
    number: int
    state: str
    label: str
    score: float | None
    trainable_params: int | None
    trainable_fraction: float | None
    peak_memory_bytes: int | None
    wall_seconds: float | None
    on_front: bool
    candidate: dict[str, Any]
    note: str = ""
    feasible: bool = True  # False: a constraint (e.g. --max-memory) was violated
    # Re-runs with other seeds, when the study confirmed this trial (user attrs confirm_*):
    seeds: int | None = None
    score_mean: float | None = None
    score_std: float | None = None
    superseded_by: int | None = None  # its refit trial, which stands in for it
    fidelity: str = ""  # refit | search | provisional (autopeft/results.py)
    steps: int | None = None  # training steps behind the score
    steps_trained: int | None = None  # optimiser steps the trial ran itself (continued: fewer)
    search_score: float | None = None  # a refit trial: the score the search measured
    repeats: list[int] = field(default_factory=list)  # near-identical trials this entry stands for

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rows(study: Study, all_trials: bool = False, sort: str = "score") -> list[Row]:
    """The front's trials (``all_trials``: every trial), each marked whether it is on the
    front. What a result means (fidelity, refit, provisional, feasible) is read from
    ``autopeft/results.py``."""
    trials = study.get_trials(deepcopy=False)
    recs = records(trials)
    noise = score_noise(study.user_attrs, recs)
    shown = {r.number: r for r in front(recs, noise)}
    on_front = set(shown)
    hidden = hidden_best(recs, noise)
    notes = _storage_notes(trials)
    for number, why in dropped_checkpoints(study.user_attrs).items():  # the disk cap
        notes[number] = f"checkpoint {why}"
    out = _untrained(trials, notes) if all_trials else []
    for r in recs:
        if not all_trials and r.number not in on_front:
            continue
        out.append(Row(number=r.number, state=r.state, label=r.label, score=r.score,
                       trainable_params=r.trainable_params,
                       trainable_fraction=r.trainable_fraction,
                       peak_memory_bytes=r.peak_memory_bytes, wall_seconds=r.wall_seconds,
                       on_front=r.number in on_front, candidate=r.candidate,
                       note="; ".join(n for n in (r.note, notes.get(r.number, "")) if n) or (
                           hidden.line() if hidden and hidden.number == r.number else ""),
                       feasible=r.feasible, seeds=r.seeds,
                       score_mean=r.score_mean,
                       score_std=r.score_std, superseded_by=r.superseded_by,
                       fidelity=r.fidelity, steps=r.steps, search_score=r.search_score,
                       steps_trained=r.steps_trained,
                       repeats=shown[r.number].repeats if r.number in shown else []))
    key, descending = SORT_KEYS[sort]
    present = [r for r in out if getattr(r, key) is not None]
    missing = [r for r in out if getattr(r, key) is None]
    return sorted(present, key=lambda r: getattr(r, key), reverse=descending) + missing


def front_notes(study: Study) -> list[str]:
    """Lines ``show`` prints under the front: why the best-scoring trial is not on it (a tie
    within the noise went to a cheaper one), which trials each "+N ties" entry stands for,
    and which trials Optuna's strict ``best_trials`` (optuna-dashboard, ``optuna
    best-trials``) would list besides, and why."""
    recs = records(study.get_trials(deepcopy=False))
    noise = score_noise(study.user_attrs, recs)
    hidden = hidden_best(recs, noise)
    lines = [hidden.line()] if hidden else []
    if empty := nothing_learned(study):
        lines.append(f"{empty[0].upper()}{empty[1:]}.")
    for r in front(recs, noise):
        if r.repeats:
            lines.append(f"trial {r.number} +{plural(len(r.repeats), 'tie')} (the same "
                         f"configuration at other learning rates, within the noise): "
                         f"{', '.join(map(str, r.repeats))}")
    strict = strict_differences(recs, [t.number for t in study.best_trials], noise)
    if strict:
        lines.append(f"Optuna's best_trials (and optuna-dashboard) also list "
                     f"{plural(len(strict), 'trial')}: its front is exact, this one counts "
                     f"ties (scores within {noise:.4f}, memory within 5%) as one entry:")
        lines.extend(f"  {line}" for line in strict)
    return lines


def nothing_learned(study: Study) -> str:
    """Why the front says nothing ("" where something learned): every trial stopped as not
    learning, or no trial's score above what one constant answer scores (``no_skill``: the
    majority class, MCC 0) by more than twice the noise. Why: on RTE with MiniLM every
    candidate's loss stays at chance (the replay: 152 of 152 at R = 150), and a bare "0
    complete" after hours reads like a crash, not a finding; on CoLA every trial learns the
    majority class (MCC 0), and a front of MCC 0 members ranks only size and memory."""
    trials = [t for t in study.get_trials(deepcopy=False)  # queued recipes never ran
              if t.state.name not in ("FAIL", "WAITING")]
    advice = "More --epochs or --train-samples, or another --model, may learn"
    if trials and all(t.state.name == "PRUNED" and t.user_attrs.get("not_learning")
                      for t in trials):
        return (f"nothing learned: the loss check stopped all {len(trials)} trials at the "
                f"chance loss, so the front is empty. {advice}; --no-loss-check trains "
                "every candidate to its rung")
    floor = study.user_attrs.get("no_skill")
    recs = [r for r in records(trials) if r.score is not None and r.fidelity != "provisional"]
    if floor is None or not math.isfinite(floor) or not recs:  # NaN: a study stored before
        return ""
    noise = score_noise(study.user_attrs, recs)
    best = max(r.score for r in recs)
    if best > floor + 2 * noise:
        return ""
    return (f"nothing learned: no trial scored above {floor:.3f}, what one constant answer "
            f"scores on this metric, by more than twice the noise ({2 * noise:.3f}; best "
            f"{best:.3f}), so the front ranks only size and memory. {advice}")


def checkpoint_line(study: Study) -> str:
    """What the study's checkpoints hold on this machine (``show``'s last line)."""
    from autopeft.paths import checkpoints_dir
    from autopeft.search.continuation import held_line  # torch: only when shown

    return held_line(checkpoints_dir(study.study_name))


def _storage_notes(trials: list[FrozenTrial]) -> dict[int, str]:
    """What the storage did to a trial, which no user attribute of ours says: queued
    (WAITING: a warm-start recipe, a retry), or failed by the heartbeat check (its worker
    died: ``search/storage.py``) and retried by Optuna (``retry_history``)."""
    retried_as = {n: t.number for t in trials for n in t.system_attrs.get("retry_history", [])}
    notes = {}
    for t in trials:
        retry = t.system_attrs.get("failed_trial")
        if t.state.name == "WAITING":
            notes[t.number] = (f"queued: retry of trial {retry}" if retry is not None else
                               "queued: warm-start recipe" if "warm_start" in t.user_attrs
                               else "queued")
        elif (t.state.name == "FAIL" and not t.user_attrs.get("fail_reason")
              and (t.number in retried_as or retry is not None)):
            again = retried_as.get(t.number)
            notes[t.number] = ("its worker stopped sending heartbeats (killed or lost)"
                               + (f"; retried as trial {again}" if again is not None else ""))
    return notes


def _untrained(trials: list[FrozenTrial], notes: dict[int, str]) -> list[Row]:
    """WAITING trials, and those not started for want of time (``NOT_STARTED``, with its
    reason): never trained, so not results; listed by ``show --all`` only."""
    out = []
    for t in trials:
        a = t.user_attrs
        if a.get(NOT_STARTED):
            state, note = "NOT_STARTED", a[NOT_STARTED]
        elif t.state.name == "WAITING" and not a.get("over_cap"):
            state, note = "WAITING", notes.get(t.number, "")
        else:
            continue
        out.append(Row(number=t.number, state=state,
                       label=a.get("label") or a.get("warm_start") or "?", score=None,
                       trainable_params=a.get("trainable_params"),
                       trainable_fraction=a.get("trainable_fraction"), peak_memory_bytes=None,
                       wall_seconds=None, on_front=False, candidate=a.get("candidate", {}),
                       note=note))
    return out


# The scalar fields of ``Row`` (what ``--json`` has), the candidate aside (its summary is the
# placement column) and the repeats joined by spaces.
CSV_COLUMNS = ("number", "state", "label", "score", "trainable_params", "trainable_fraction",
               "peak_memory_bytes", "wall_seconds", "on_front", "feasible", "fidelity", "steps",
               "steps_trained", "search_score", "superseded_by", "seeds", "score_mean",
               "score_std", "repeats", "note")


def csv_rows(study_rows: list[Row]) -> list[list[Any]]:
    """``show --csv``: a header, then one line per row, its placement summary last."""
    def cell(r: Row, c: str) -> Any:
        value = getattr(r, c)
        return " ".join(map(str, value)) if isinstance(value, list) else value

    return [[*CSV_COLUMNS, "placement"]] + [
        [cell(r, c) for c in CSV_COLUMNS] + [placement(r.candidate)] for r in study_rows]


def plural(n: int, word: str) -> str:
    """``1 trial``, ``2 trials``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


# The parameters that say how big a method is and where it sits, with short names.
_SIZE_KEYS = (("r", "r"), ("alpha", "alpha"), ("reduction_factor", "rf"), ("bottleneck", "dim"),
              ("num_virtual_tokens", "tokens"), ("placement", ""), ("scaling", "s"))


def placement(candidate: dict[str, Any]) -> str:
    """A short summary of what each method is and where it sits, e.g.
    ``lora r=8 alpha=16 [query,value] L=all; lr=1.0e-04``."""
    parts = []
    for m in candidate.get("methods", []):
        p = m.get("params", {})
        bits = [m["name"]]
        for key, short in _SIZE_KEYS:
            if p.get(key) is not None:
                value = f"{p[key]:g}" if isinstance(p[key], float) else str(p[key])
                bits.append(f"{short}={value}" if short else value)
        if p.get("use_dora"):
            bits.append("dora")
        for key in ("targets", "lora_targets"):
            if p.get(key):
                bits.append("[" + ",".join(map(str, p[key])) + "]")
        if p.get("rank_pattern"):
            bits.append(f"ranks/layer({len(p['rank_pattern'])})")
        if "layers" in p:
            layers = p["layers"]
            bits.append("L=" + (layers if isinstance(layers, str) else ",".join(map(str, layers))))
        parts.append(" ".join(bits))
    if "learning_rate" in candidate:
        parts.append(f"lr={candidate['learning_rate']:.1e}")
    return "; ".join(parts)


def percent(fraction: float | None) -> str:
    """A trainable share readable at any size: ``100%``, ``1.2%``, ``0.035%``."""
    if fraction is None:
        return "-"
    pct = 100 * fraction
    if pct >= 10:
        return f"{pct:.0f}%"
    if pct >= 1:
        return f"{pct:.1f}%"
    return f"{pct:.2g}%"


def status_word(r: Row) -> str:
    """front / complete / infeasible / pruned / paused / failed / not started / running."""
    if r.on_front:
        return "front (provisional)" if r.fidelity == "provisional" else "front"
    if r.state == "COMPLETE" and not r.feasible:
        return "infeasible"
    if r.state == "PRUNED" and r.note.startswith("paused"):
        return "paused"
    return {"FAIL": "failed", "NOT_STARTED": "not started"}.get(r.state, r.state.lower())


WIDE = 120  # from this many columns on, placements stay in the table (folded if long)
UNLIMITED = 1_000_000  # the width of a console that is not a terminal: nothing is cut
# Columns a narrow terminal drops, least important first; the placement is not dropped
# but listed under the table. The trial, method, score, trainable parameters and peak
# memory are never dropped nor cut (they wrap only where nothing else is left to drop).
DROP_ORDER = ("time", "steps", "%", "search", "seeds", "mean ± std", "status")


def console(stderr: bool = False) -> Any:
    """A rich console for tables: on a terminal its width, which a table fits by dropping
    its least important columns; anywhere else (a pipe, a file, a CI log) no width limit,
    so every column is printed in full. Print tables with ``print_table``."""
    from rich.console import Console

    out = Console(stderr=stderr)
    try:  # a real terminal, not one that FORCE_COLOR pretends (a CI log)
        tty = out.file.isatty()
    except (AttributeError, ValueError):
        tty = False
    return out if (tty and out.is_terminal) or out.is_jupyter else Console(
        stderr=stderr, width=UNLIMITED)


def print_table(out: Any, renderable: Any) -> None:
    """Print ``renderable`` on ``out``; without a width limit, lines lose the padding a
    table adds up to its widest cell, so a file holds no runs of trailing spaces."""
    if out.width < UNLIMITED:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    out.file.flush()


def table(study_rows: list[Row], title: str) -> Any:
    """The rows as a rich renderable that fits the console: in a wide one (or one without
    a width limit) every column, the placement (with any failure or pruning reason) last;
    in a narrow one the placement is listed under the table, one line per trial, and the
    least important columns are dropped (``DROP_ORDER``), so the numbers never wrap."""
    return _FittedTable(study_rows, title)


class _FittedTable:
    def __init__(self, study_rows: list[Row], title: str):
        self.rows, self.title = study_rows, title

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        width = options.max_width
        whole = width >= UNLIMITED  # not a terminal: nothing cut, notes in full
        columns = _columns(self.rows)
        if whole or width >= WIDE or _width(console, options, self.rows, columns, True) <= width:
            yield _table(self.rows, self.title, columns, with_placement=True, whole=whole)
            return
        for name in DROP_ORDER:
            if _width(console, options, self.rows, columns, False) <= width:
                break
            if name in columns:
                columns.remove(name)
        yield _table(self.rows, self.title, columns, with_placement=False, whole=False)
        for r in self.rows:
            line = Text.assemble((f"{r.number:>6}  ", "bold"), placement(r.candidate))
            if r.note:
                line.append(("  " if len(line) > 8 else "") + r.note[:200], style="italic")
            yield line


def _columns(study_rows: list[Row]) -> list[str]:
    """The columns these rows need, in table order (the placement aside)."""
    confirmed = any(r.seeds or r.score_mean is not None for r in study_rows)
    refit = any(r.fidelity == "refit" for r in study_rows)
    return ["trial", "method", "score", *(["mean ± std", "seeds"] if confirmed else []),
            *(["search"] if refit else []), "steps", "trainable", "%", "peak mem", "time",
            "status"]


def _width(console: Any, options: Any, study_rows: list[Row], columns: list[str],
           with_placement: bool) -> int:
    """How wide the table is when no cell wraps."""
    from rich.measure import Measurement

    t = _table(study_rows, "", columns, with_placement, whole=False)
    return Measurement.get(console, options.update_width(UNLIMITED), t).maximum


KEPT = ("trial", "method", "score", "trainable", "peak mem")  # never dropped, never cut
RIGHT = ("trial", "score", "mean ± std", "seeds", "search", "steps", "trainable", "%",
         "peak mem", "time")


def _cells(r: Row) -> dict[str, Any]:
    from rich.text import Text

    return {
        "trial": str(r.number),
        "method": Text(r.label + (f" +{plural(len(r.repeats), 'tie')}" if r.repeats else "")),
        "score": "-" if r.score is None else f"{r.score:.4f}",
        "mean ± std": "-" if r.score_mean is None else (
            f"{r.score_mean:.4f}" + ("" if r.score_std is None else f" ± {r.score_std:.4f}")),
        "seeds": "-" if r.seeds is None else str(r.seeds),
        "search": "-" if r.search_score is None else f"{r.search_score:.4f}",
        "steps": "-" if r.steps is None else str(r.steps),
        "trainable": human_count(r.trainable_params), "%": percent(r.trainable_fraction),
        "peak mem": human_bytes(r.peak_memory_bytes),
        "time": "-" if r.wall_seconds is None else f"{r.wall_seconds:.0f}s",
        "status": status_word(r)}


def _table(study_rows: list[Row], title: str, columns: list[str], with_placement: bool,
           whole: bool) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
              collapse_padding=True)
    for name in columns:
        kept = name in KEPT  # may fold (never an ellipsis) if the terminal is too narrow
        t.add_column(name, justify="right" if name in RIGHT else "left",
                     style={"method": "cyan", "score": "bold"}.get(name),
                     no_wrap=not kept, overflow="fold" if kept else "ellipsis")
    if with_placement:
        t.add_column("placement", overflow="fold", ratio=1)
    for r in study_rows:
        cells = _cells(r)
        row: list[Any] = [cells[name] for name in columns]
        if with_placement:
            # Text, not markup: a placement like "[query,value]" is not a style tag.
            where = Text(placement(r.candidate))
            if r.note:
                where.append(("\n" if where else "") + (r.note if whole else r.note[:200]),
                             style="italic")
            row.append(where)
        t.add_row(*row, style=None if r.on_front or r.state == "COMPLETE" else "dim")
    return t
