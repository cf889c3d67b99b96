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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rows(study: Any, all_trials: bool = False, sort: str = "score") -> list[Row]:
    """The front's trials (``all_trials``: every trial), each marked whether it is on the front."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE" and t.values is not None]
    mask = non_dominated_mask([t.values for t in done], DIRECTIONS) if done else []
    front = {t.number for t, m in zip(done, mask) if m}
    out = []
    for t in trials if all_trials else done:
        if not all_trials and t.number not in front:
            continue
        a = t.user_attrs
        values = t.values if t.state.name == "COMPLETE" else None
        out.append(Row(number=t.number, state=t.state.name, label=a.get("label", "?"),
                       score=values[0] if values else None,
                       trainable_params=int(values[1]) if values else None,
                       trainable_fraction=a.get("trainable_fraction"),
                       peak_memory_bytes=int(values[2]) if values else None,
                       wall_seconds=a.get("wall_seconds"), on_front=t.number in front,
                       candidate=a.get("candidate", {}), note=a.get("fail_reason", "")))
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


def placement(candidate: dict[str, Any]) -> str:
    """A short summary of where each method sits, e.g. ``lora r=8 [query,value] L=all``."""
    parts = []
    for m in candidate.get("methods", []):
        p = m.get("params", {})
        bits = [m["name"]]
        bits += [f"{k}={p[k]}" for k in ("r", "alpha") if k in p]
        if "targets" in p:
            bits.append("[" + ",".join(p["targets"]) + "]")
        if "layers" in p:
            layers = p["layers"]
            bits.append("L=" + (layers if isinstance(layers, str) else ",".join(map(str, layers))))
        parts.append(" ".join(bits))
    if "learning_rate" in candidate:
        parts.append(f"lr={candidate['learning_rate']:.1e}")
    return "; ".join(parts)


def table(study_rows: list[Row], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col, justify in (("trial", "right"), ("method", "left"), ("placement", "left"),
                         ("score", "right"), ("trainable", "right"), ("%", "right"),
                         ("peak mem", "right"), ("time", "right"), ("", "left")):
        t.add_column(col, justify=justify)
    for r in study_rows:
        t.add_row(str(r.number), r.label, placement(r.candidate),
                  "-" if r.score is None else f"{r.score:.4f}", human_count(r.trainable_params),
                  "-" if r.trainable_fraction is None else f"{100 * r.trainable_fraction:.3f}",
                  human_bytes(r.peak_memory_bytes),
                  "-" if r.wall_seconds is None else f"{r.wall_seconds:.0f}s",
                  ("front" if r.on_front else r.state.lower()) + (f": {r.note[:60]}" if r.note else ""))
    return t
