"""How each method looks in a figure: a colour and a marker, grouped by the review's method
families, the same in the PNGs (matplotlib) and the HTML report (plotly).

A family is one hue (additive warm reds and oranges, partial greens, reparameterized blues,
hybrid purples, unified olive); within it each method has its own shade and its own marker,
so two methods of one family differ in both. A registered method keeps its look in every
study (its place in the registry decides it); a combination of methods (``lora+bitfit``)
is a hybrid and takes the next free look of that family in the study at hand.
"""
from __future__ import annotations

from dataclasses import dataclass

from autopeft.methods.registry import CATEGORIES, METHODS

# Shades per family, in registry order of its methods (then spares for combinations and
# plugins), each readable on white. Chosen so that any two registered methods differ by at
# least 25 in CIELAB (CIE76) and, where their markers have the same outline (round,
# triangle), by at least 40: lokr and lora (two light blues, two triangles) and bitfit and
# vera (green and teal, circle and hexagon) looked alike before (tests/test_newcomer.py).
# A family with more members than shades cycles them with other markers (the (colour,
# marker) pair stays unique).
SHADES: dict[str, tuple[str, ...]] = {
    "baseline": ("#222222", "#666666"),
    "additive": ("#b2182b", "#ff7f00", "#8c510a", "#f768a1", "#e6ab02", "#fdbf6f", "#d6604d",
                 "#bf812d"),
    "partial": ("#33a02c", "#b2df8a", "#00441b", "#a6d96a"),
    "reparameterized": ("#08306b", "#1f78b4", "#18e7ff", "#a6cee3", "#4a6fe3", "#01665e",
                        "#9ecae1"),
    "hybrid": ("#9e9ac8", "#c51b8a", "#54278f", "#7a0177", "#dd3497", "#3f007d", "#f1b6da"),
    "unified": ("#8c8c00", "#bcbd22", "#e7ba52"),
    "other": ("#7f7f7f", "#a0a0a0", "#4d4d4d"),
}
FAMILIES = (*CATEGORIES, "other")  # legend order
# Marker shapes in the order a family's members take them (matplotlib names): the first
# five of different outlines (round, square, triangle, cross, diamond). Not "x" (an
# infeasible trial) and not "D" (the front's open diamond ring).
MARKERS = ("o", "s", "^", "P", "d", "v", "h", "<", ">", "p")
OUTLINES = {"o": "round", "h": "round", "p": "round", "^": "triangle", "v": "triangle",
            "<": "triangle", ">": "triangle", "s": "square", "d": "diamond", "P": "cross",
            "*": "star"}
BASELINE_MARKER = "*"
PLOTLY_SYMBOLS = {"o": "circle", "s": "square", "^": "triangle-up", "v": "triangle-down",
                  "p": "pentagon", "h": "hexagon", "<": "triangle-left", ">": "triangle-right",
                  "P": "cross", "*": "star", "d": "diamond-tall"}


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str  # matplotlib's name; ``symbol`` is plotly's
    family: str  # one of FAMILIES

    @property
    def symbol(self) -> str:
        return PLOTLY_SYMBOLS[self.marker]


def family_of(label: str) -> str:
    """The family of a method or a combination of methods (``a+b``: a hybrid)."""
    if "+" in label:
        return "hybrid"
    method = METHODS.get(label)
    return method.category if method is not None else "other"


def _look(family: str, k: int) -> Style:
    """The ``k``-th look of ``family``: a shade and a marker, both moving on, so that
    (shade, marker) pairs repeat only after lcm(shades, markers) members."""
    shades = SHADES[family]
    marker = BASELINE_MARKER if family == "baseline" else MARKERS[k % len(MARKERS)]
    return Style(shades[k % len(shades)], marker, family)


def registered_styles() -> dict[str, Style]:
    """Every registered method's look, fixed by its place in its family in the registry."""
    seen = dict.fromkeys(FAMILIES, 0)
    out = {}
    for name, method in METHODS.items():
        out[name] = _look(method.category, seen[method.category])
        seen[method.category] += 1
    return out


def styles(labels: list[str]) -> dict[str, Style]:
    """A distinct look per label: registered methods their own, combinations and unknown
    names the next free looks of their family (in sorted order, so one study always draws
    the same)."""
    fixed = registered_styles()
    taken = {(s.colour, s.marker) for s in fixed.values()}
    next_k = {f: sum(s.family == f for s in fixed.values()) for f in FAMILIES}
    out = {}
    for label in sorted(set(labels)):
        if label in fixed:
            out[label] = fixed[label]
            continue
        family = family_of(label)
        for _ in range(len(SHADES[family]) * len(MARKERS)):  # beyond: looks repeat
            look = _look(family, next_k[family])
            next_k[family] += 1
            if (look.colour, look.marker) not in taken:
                break
        taken.add((look.colour, look.marker))
        out[label] = look
    return out


def by_family(labels: list[str]) -> list[tuple[str, list[str]]]:
    """The labels grouped by family, families in the review's order, methods in registry
    order, combinations after them (sorted): the legend's layout."""
    order = {name: i for i, name in enumerate(METHODS)}
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(family_of(label), []).append(label)
    return [(f, sorted(groups[f], key=lambda lab: (order.get(lab, len(order)), lab)))
            for f in FAMILIES if f in groups]
