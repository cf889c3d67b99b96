"""The Pareto front (or every trial) of a study as rows: for tables, JSON and CSV."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from autopeft.pareto import non_dominated_mask

DIRECTIONS = ("maximize", "minimize", "minimize")
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
    superseded_by: int | None = None  # its confirmation trial, which stands in for it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feasible(trial: Any) -> bool:
    """Optuna's rule: every constraint value <= 0 (stored as system attrs ``constraints*``)."""
    for key, value in trial.system_attrs.items():
        if key == "constraints" or key.startswith("constraints:"):
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(v is not None and float(v) > 0 for v in values):
                return False
    return True


def confirmation(attrs: dict[str, Any]) -> tuple[int | None, float | None, float | None]:
    """(seeds, mean, std) of a confirmed trial, read generically from ``confirm_*`` user attrs
    (``confirm_scores`` as a list, or ``confirm_mean`` / ``confirm_std`` / ``confirm_seeds``)."""
    scores = attrs.get("confirm_scores")
    if isinstance(scores, dict):
        scores = list(scores.values())
    if isinstance(scores, (list, tuple)) and scores:
        vals = [float(v) for v in scores]
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
        return len(vals), attrs.get("confirm_mean", mean), attrs.get("confirm_std", std)
    if attrs.get("confirm_mean") is None:
        return None, None, None
    seeds = attrs.get("confirm_seeds", attrs.get("confirm_n"))
    if isinstance(seeds, (list, tuple)):
        seeds = len(seeds)
    return (None if seeds is None else int(seeds)), float(attrs["confirm_mean"]), (
        None if attrs.get("confirm_std") is None else float(attrs["confirm_std"]))


def _note(attrs: dict[str, Any], confirmed_as: int | None) -> str:
    """Why a trial is not (or is specially) on the front, in a few words."""
    if confirmed_as is not None:
        return f"superseded by its confirmation, trial {confirmed_as}"
    if "confirm_of" in attrs:
        return f"confirms trial {attrs['confirm_of']}"
    for key in ("fail_reason", "prune_reason", "infeasible_reason"):
        if attrs.get(key):
            return str(attrs[key])
    return ""


def rows(study: Any, all_trials: bool = False, sort: str = "score") -> list[Row]:
    """The front's trials (``all_trials``: every trial), each marked whether it is on the front."""
    # WAITING trials are only queued (warm-start recipes not yet run), and a worker's trial
    # past the study's cap never ran: neither is a trial to show.
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state.name != "WAITING" and not t.user_attrs.get("over_cap")]
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.values is not None]
    done = [t for t in complete if feasible(t)]  # an infeasible trial is never on the front
    # --confirm-seeds adds a trial (confirm_of=N, values = means over seeds) that replaces N.
    confirmed_as = {t.user_attrs["confirm_of"]: t.number for t in trials if "confirm_of" in t.user_attrs}
    superseded = set(confirmed_as)
    done = [t for t in done if t.number not in superseded]
    mask = non_dominated_mask([t.values for t in done], DIRECTIONS) if done else []
    front = {t.number for t, m in zip(done, mask) if m}
    out = []
    for t in trials if all_trials else done:
        if not all_trials and t.number not in front:
            continue
        a = t.user_attrs
        values = t.values if t.state.name == "COMPLETE" else None
        seeds, mean, std = confirmation(a)
        out.append(Row(number=t.number, state=t.state.name, label=a.get("label", "?"),
                       score=values[0] if values else None,
                       # a pruned trial still knows its size (it is fixed before training)
                       trainable_params=int(values[1]) if values else a.get("trainable_params"),
                       trainable_fraction=a.get("trainable_fraction"),
                       peak_memory_bytes=int(values[2]) if values else None,
                       wall_seconds=a.get("wall_seconds"), on_front=t.number in front,
                       candidate=a.get("candidate", {}),
                       note=_note(a, confirmed_as.get(t.number)), feasible=feasible(t),
                       seeds=seeds, score_mean=mean, score_std=std,
                       superseded_by=confirmed_as.get(t.number)))
    key, descending = SORT_KEYS[sort]
    present = [r for r in out if getattr(r, key) is not None]
    missing = [r for r in out if getattr(r, key) is None]
    return sorted(present, key=lambda r: getattr(r, key), reverse=descending) + missing


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
    """front / complete / infeasible / pruned / failed / running."""
    if r.on_front:
        return "front"
    if r.state == "COMPLETE" and not r.feasible:
        return "infeasible"
    return {"FAIL": "failed"}.get(r.state, r.state.lower())


WIDE = 120  # below this many columns, placements go under the table instead of in it


def table(study_rows: list[Row], title: str) -> Any:
    """The rows as a rich renderable that fits the terminal: in a wide one the placement
    (with any failure or pruning reason) is the last column; in a narrow one it is listed
    under the table, one line per trial, so the numbers never wrap."""
    return _FittedTable(study_rows, title)


class _FittedTable:
    def __init__(self, study_rows: list[Row], title: str):
        self.rows, self.title = study_rows, title

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        wide = options.max_width >= WIDE
        yield _table(self.rows, self.title, wide)
        if not wide:
            for r in self.rows:
                line = Text.assemble((f"{r.number:>6}  ", "bold"), placement(r.candidate))
                if r.note:
                    line.append(("  " if len(line) > 8 else "") + r.note[:200], style="italic")
                yield line


def _table(study_rows: list[Row], title: str, with_placement: bool) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    confirmed = any(r.seeds or r.score_mean is not None for r in study_rows)
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
              collapse_padding=True)
    t.add_column("trial", justify="right", no_wrap=True)
    t.add_column("method", style="cyan", no_wrap=True, overflow="ellipsis", max_width=16)
    t.add_column("score", justify="right", style="bold", no_wrap=True)
    if confirmed:
        t.add_column("mean ± std", justify="right", no_wrap=True)
        t.add_column("seeds", justify="right", no_wrap=True)
    t.add_column("trainable", justify="right", no_wrap=True)
    t.add_column("%", justify="right", no_wrap=True)
    t.add_column("peak mem", justify="right", no_wrap=True)
    t.add_column("time", justify="right", no_wrap=True)
    t.add_column("status", no_wrap=True)
    if with_placement:
        t.add_column("placement", overflow="fold", ratio=1)
    for r in study_rows:
        cells: list[Any] = [str(r.number), Text(r.label), "-" if r.score is None else f"{r.score:.4f}"]
        if confirmed:
            spread = "-" if r.score_mean is None else (
                f"{r.score_mean:.4f}" + ("" if r.score_std is None else f" ± {r.score_std:.4f}"))
            cells += [spread, "-" if r.seeds is None else str(r.seeds)]
        cells += [human_count(r.trainable_params), percent(r.trainable_fraction),
                  human_bytes(r.peak_memory_bytes),
                  "-" if r.wall_seconds is None else f"{r.wall_seconds:.0f}s", status_word(r)]
        if with_placement:
            # Text, not markup: a placement like "[query,value]" is not a style tag.
            where = Text(placement(r.candidate))
            if r.note:
                where.append(("\n" if where else "") + r.note[:200], style="italic")
            cells.append(where)
        t.add_row(*cells, style=None if r.on_front or r.state == "COMPLETE" else "dim")
    return t
