"""Trial labels beside their points that do not overlap each other (matplotlib).

A greedy placement: each label tries offsets around its point, nearest first, in eight
directions, and takes the first whose box overlaps no label placed before it, no marked
point, and stays inside the axes; a label pushed further than a glance away gets a thin
leader line to its point. Boxes are measured with the figure's own renderer, so the
figure's layout must be final (``tight_layout`` done) before ``place_labels`` is called.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# (dx, dy) unit directions, the preferred first: up-right, as a reader expects a label.
DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
DISTANCES = (4, 10, 17, 25, 34, 45, 58, 72, 90)  # points from the marker's edge
LEADER_FROM = 12  # from this distance on, a leader line joins label and point
PAD = 1.5  # pixels of air kept around each label box


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box) -> bool:
        return (self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1
                and other.y0 < self.y1)

    def inside(self, other: Box) -> bool:
        return (self.x0 >= other.x0 and self.x1 <= other.x1 and self.y0 >= other.y0
                and self.y1 <= other.y1)


def _align(dx: int, dy: int) -> tuple[str, str]:
    return ({1: "left", 0: "center", -1: "right"}[dx], {1: "bottom", 0: "center", -1: "top"}[dy])


def _box_at(x: float, y: float, w: float, h: float, ha: str, va: str) -> Box:
    x0 = {"left": x, "center": x - w / 2, "right": x - w}[ha]
    y0 = {"bottom": y, "center": y - h / 2, "top": y - h}[va]
    return Box(x0 - PAD, y0 - PAD, x0 + w + PAD, y0 + h + PAD)


def place_labels(ax: Any, points: Sequence[tuple[float, float]], texts: Sequence[str],
                 others: Sequence[tuple[float, float]] = (), marker_radius: float = 7.0,
                 fontsize: float = 8) -> list[Any]:
    """Annotate ``points`` (data coordinates) with ``texts`` so that no two labels overlap
    and none covers a labelled point; ``others`` (unlabelled points) are avoided where
    there is room. Returns the annotations. ``marker_radius``: the labelled points' marker
    half-size in points (typographic), kept clear."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72  # pixels per point
    frame = ax.get_window_extent(renderer)
    frame_box = Box(frame.x0, frame.y0, frame.x1, frame.y1)
    where = [tuple(ax.transData.transform(p)) for p in points]
    r = marker_radius * px
    blocked = [Box(x - r, y - r, x + r, y + r) for x, y in where]
    small = 3 * px
    avoid = [Box(x - small, y - small, x + small, y + small)
             for x, y in (ax.transData.transform(p) for p in others)]
    placed: list[Box] = []
    out = []
    # Left to right, then bottom to top: neighbours are placed one after the other.
    for i in sorted(range(len(points)), key=lambda i: (where[i][0], where[i][1])):
        x, y = where[i]
        probe = ax.annotate(texts[i], points[i], fontsize=fontsize)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        w, h = extent.width, extent.height
        best: tuple[float, int, int, float, Box] | None = None
        for distance in DISTANCES:
            gap = (marker_radius + distance) * px
            for dx, dy in DIRECTIONS:
                # Diagonals at the same distance from the point as straight offsets.
                scale = 0.75 if dx and dy else 1.0
                bx, by = x + dx * gap * scale, y + dy * gap * scale
                box = _box_at(bx, by, w, h, *_align(dx, dy))
                cost = (1000 * sum(box.overlaps(b) for b in placed)
                        + 100 * sum(box.overlaps(b) for b in blocked)
                        + (10 if not box.inside(frame_box) else 0)
                        + sum(box.overlaps(b) for b in avoid))
                if best is None or cost < best[0]:
                    best = (cost, dx, dy, distance, box)
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        assert best is not None
        _, dx, dy, distance, box = best
        ha, va = _align(dx, dy)
        gap = marker_radius + distance
        scale = 0.75 if dx and dy else 1.0
        leader = ({"arrowstyle": "-", "color": "#555555", "lw": 0.6, "shrinkA": 1,
                   "shrinkB": marker_radius * 0.8} if distance >= LEADER_FROM else None)
        out.append(ax.annotate(texts[i], points[i], xytext=(dx * gap * scale, dy * gap * scale),
                               textcoords="offset points", ha=ha, va=va, fontsize=fontsize,
                               arrowprops=leader, annotation_clip=False))
        placed.append(box)
    return out
