"""Picking one trial from a study with a rule a user can type: ``score>=0.9,min params``.

A rule is comma-separated clauses. Filters (``FIELD OP VALUE``) keep the trials that pass;
goals (``min FIELD`` / ``max FIELD``) then order what is left, the first goal first, and
the first trial wins. Ties fall back to score (higher), params, memory (lower), then the
trial number, so a pick is deterministic. No goal means ``max score``.

Fields: ``score``, ``params`` (trainable parameters; ``50K``, ``1.2M``), ``fraction``
(trainable share of the model; ``0.5%`` or ``0.005``), ``memory`` (peak training memory;
``800MiB``, ``2GB``), ``time`` (wall seconds; ``90s``, ``5m``).

Pure: works on ``Row`` objects, no optuna, no torch, so the rules are unit-testable.
"""
from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from autopeft.errors import UserError
from autopeft.report.show import Row

FIELDS = {"score": "score", "params": "trainable_params", "fraction": "trainable_fraction",
          "memory": "peak_memory_bytes", "time": "wall_seconds"}
ALIASES = {"accuracy": "score", "trainable": "params", "trainable_params": "params",
           "parameters": "params", "mem": "memory", "peak_memory": "memory",
           "wall_seconds": "time", "seconds": "time"}
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": operator.eq, "=": operator.eq}
_COUNT = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}
_BYTES = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SECONDS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}
_TIE_BREAK = (("score", True), ("params", False), ("memory", False))
HELP = ("use clauses like 'score>=0.9', 'params<1M', 'memory<=2GiB', 'fraction<1%', "
        "'min params', 'max score', separated by commas")


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: float

    def keep(self, row: Row) -> bool:
        v = _value(row, self.field)
        return v is not None and OPS[self.op](v, self.value)

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value:g}"


@dataclass(frozen=True)
class Goal:
    field: str
    maximise: bool

    def __str__(self) -> str:
        return f"{'max' if self.maximise else 'min'} {self.field}"


@dataclass
class Rule:
    filters: list[Filter] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)


def _field(name: str, clause: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in FIELDS:
        raise UserError(f"unknown field {name!r} in pick rule clause {clause!r}; fields are "
                        f"{', '.join(FIELDS)}")
    return key


def _number(text: str, fld: str, clause: str) -> float:
    m = re.fullmatch(r"([-+]?\d*\.?\d+(?:e[-+]?\d+)?)\s*([a-z%]*)", text.strip().lower())
    if not m:
        raise UserError(f"cannot read the number {text!r} in pick rule clause {clause!r}; {HELP}")
    value, unit = float(m.group(1)), m.group(2)
    units = {"params": _COUNT, "memory": _BYTES, "time": _SECONDS}.get(fld, {"": 1})
    if fld == "fraction":
        units = {"": 1, "%": 0.01}
    if unit not in units:
        raise UserError(f"unknown unit {unit!r} for {fld} in pick rule clause {clause!r}; "
                        f"use one of {', '.join(repr(u) for u in units if u)}")
    return value * units[unit]


def parse(text: str) -> Rule:
    """``'score>=0.9,min params'`` -> a Rule; a mistake is a one-line UserError."""
    rule = Rule()
    clauses = [c.strip() for c in (text or "").split(",")]
    if not any(clauses):
        raise UserError(f"empty pick rule; {HELP}")
    for clause in clauses:
        if not clause:
            raise UserError(f"empty clause in pick rule {text!r}; {HELP}")
        goal = re.fullmatch(r"(min|max|minimi[sz]e|maximi[sz]e)\s+(\w+)", clause, re.IGNORECASE)
        if goal:
            rule.goals.append(Goal(_field(goal.group(2), clause),
                                   goal.group(1).lower().startswith("max")))
            continue
        cond = re.fullmatch(r"(\w+)\s*(>=|<=|==|=|>|<)\s*(.+)", clause)
        if not cond:
            raise UserError(f"cannot read pick rule clause {clause!r}; {HELP}")
        fld = _field(cond.group(1), clause)
        rule.filters.append(Filter(fld, cond.group(2), _number(cond.group(3), fld, clause)))
    if not rule.goals:
        rule.goals.append(Goal("score", True))
    return rule


def _value(row: Row, fld: str) -> float | None:
    v = getattr(row, FIELDS[fld])
    return None if v is None else float(v)


def select(candidates: Sequence[Row], rule: Rule | str) -> Row:
    """The trial the rule picks among ``candidates`` (complete, feasible trials)."""
    if isinstance(rule, str):
        rule = parse(rule)
    pool = [r for r in candidates if r.score is not None]
    if not pool:
        raise UserError("the study has no complete trial yet; run `autopeft search` first")
    kept = [r for r in pool if all(f.keep(r) for f in rule.filters)]
    if not kept:
        hints = []
        for f in rule.filters:
            values = [v for v in (_value(r, f.field) for r in pool) if v is not None]
            if values:
                best = max(values) if f.op in (">=", ">") else min(values)
                hints.append(f"best {f.field} is {best:g}")
        raise UserError(f"no complete trial satisfies {', '.join(map(str, rule.filters))} "
                        f"({'; '.join(hints) or 'no values'}); relax the rule")
    order = list(rule.goals) + [Goal(f, hi) for f, hi in _TIE_BREAK]

    def key(row: Row) -> tuple[float, ...]:
        out = []
        for g in order:
            v = _value(row, g.field)
            out.append(float("inf") if v is None else (-v if g.maximise else v))
        return (*out, row.number)

    return min(kept, key=key)


BEST = {"score": "max score", "params": "min params", "memory": "min memory"}


def best_rule(objective: str) -> str:
    """``--best score|params|memory`` as a rule."""
    if objective not in BEST:
        raise UserError(f"--best takes one of {', '.join(BEST)}, got {objective!r}")
    return BEST[objective]
