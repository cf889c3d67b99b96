"""``autopeft plot``: a self-contained HTML report (plotly) and PNG figures (matplotlib).

The HTML embeds plotly.js once (about 4.8 MB), so it opens offline and can be mailed or
archived as one file. PNGs come from matplotlib's Agg backend, because plotly's own image
export needs kaleido (a browser), which servers and CI often lack.

Figures: the 3-objective front in 3-D and its three 2-D projections (front highlighted,
each method in its own colour and marker with legends grouped by family: ``style.py``;
front members labelled without overlap in the PNGs: ``labels.py``; hover shows the
candidate), score vs trainable fraction (log axis), hypervolume over time, and trials by
state. The study is read as it is now, so a
report of a running study shows its current state: run ``autopeft plot`` again to refresh.
"""
from __future__ import annotations

import datetime as _dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft.report.labels import place_labels
from autopeft.report.plotdata import STATES, Point, ReportData, collect
from autopeft.report.show import human_bytes, percent
from autopeft.report.style import Style, by_family, styles

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import

STATE_COLOURS = {"complete": "#2ca02c", "provisional": "#98df8a", "pruned": "#ff7f0e",
                 "failed": "#d62728",
                 "infeasible": "#7f7f7f", "running": "#1f77b4"}
FRONT_COLOUR = "#000000"
PNG_NAMES = ("front_3d.png", "front_2d.png", "score_vs_fraction.png", "hypervolume.png",
             "states.png")
AXES = {"score": "score", "params": "trainable parameters", "memory": "peak training memory",
        "memory_mib": "peak training memory (MiB)", "fraction": "trainable fraction of the model"}


@dataclass
class Report:
    html: Path
    pngs: list[Path] = field(default_factory=list)
    data: ReportData | None = None


def looks(data: ReportData) -> dict[str, Style]:
    """Each method's colour and marker (``report/style.py``), the same in HTML and PNG."""
    return styles(data.labels)


def write_report(study: Study, out: Path) -> Report:
    """Read ``study`` now and write ``out/report.html`` and ``out/*.png``."""
    data = collect(study)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(html=out / "report.html", data=data)
    report.html.write_text(render_html(data, optuna_figures(study)), encoding="utf-8")
    report.pngs = write_pngs(data, out)
    return report


# -- HTML (plotly) ----------------------------------------------------------------------

def _scatter_traces(go: Any, data: ReportData, x: str, y: str, z: str | None = None,
                    legend: bool = True) -> list[Any]:
    """One trace per method (its colour and marker), in legend groups by family (the group's
    title heads them), infeasible trials as grey crosses, and the front as open black
    diamonds drawn over its members."""
    Trace = go.Scatter3d if z else go.Scatter
    look = looks(data)

    def trace(points: list[Point], name: str, marker: dict[str, Any], show: bool, group: str,
              title: str = "") -> Any:
        coords = {"x": [getattr(p, x) for p in points], "y": [getattr(p, y) for p in points]}
        if z:
            coords["z"] = [getattr(p, z) for p in points]
        numbered = bool(z) and name == FRONT_NAME  # the 3-D front carries its trial numbers
        if numbered:
            coords.update(text=[str(p.number) for p in points], textposition="top center")
        return Trace(**coords, mode="markers+text" if numbered else "markers", name=name,
                     legendgroup=group, showlegend=show,
                     legendgrouptitle={"text": title} if title else None,
                     marker=marker, hovertext=[p.hover for p in points],
                     hovertemplate="%{hovertext}<extra></extra>",
                     customdata=[p.number for p in points])

    size = 5 if z else 9
    traces = []
    for family, labels in by_family(data.labels):
        first = True
        for label in labels:
            pts = [p for p in data.scored if p.label == label]
            if pts:
                st = look[label]
                symbol = SYMBOLS_3D.get(st.marker, "circle") if z else st.symbol
                traces.append(trace(pts, label, {"color": st.colour, "size": size,
                                                 "symbol": symbol, "opacity": 0.85},
                                    legend, family, family if first else ""))
                first = False
    bad = [p for p in data.points if p.state == "infeasible"]
    marks = "marks"
    if bad:
        traces.append(trace(bad, "infeasible", {"color": STATE_COLOURS["infeasible"], "size": size,
                                                "symbol": "x"}, legend, marks, marks))
    if data.front:
        ring = {"color": FRONT_COLOUR, "size": size + (4 if z else 7), "symbol": "diamond-open",
                "line": {"color": FRONT_COLOUR, "width": 2}}
        traces.append(trace(data.front, FRONT_NAME, ring, legend, marks,
                            "" if bad else marks))
    return traces


FRONT_NAME = "Pareto front"
# plotly's 3-D scatter has fewer symbols (no triangles): the nearest, and the colour tells
# the rest apart (diamond-open is the front's ring, x an infeasible trial).
SYMBOLS_3D = {"o": "circle", "s": "square", "^": "diamond", "v": "cross", "p": "circle-open",
              "h": "square-open", "<": "diamond", ">": "cross", "P": "cross", "*": "diamond",
              "d": "diamond-open"}


def figures(data: ReportData) -> list[tuple[str, str, Any, str]]:
    """(anchor, title, plotly figure, caption) for each section of the report."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    out: list[tuple[str, str, Any, str]] = []
    log = {"type": "log", "dtick": 1}  # a tick per power of ten, no 2/5 minor labels
    # The legend sits right of the plot, one group per method family under its title.
    side_legend = {"groupclick": "toggleitem", "tracegroupgap": 6, "font": {"size": 11}}

    fig = go.Figure(_scatter_traces(go, data, "params", "memory_mib", "score"))
    fig.update_layout(height=640, margin={"l": 0, "r": 0, "t": 40, "b": 0}, legend=side_legend,
                      scene={"xaxis": {**log, "title": {"text": "trainable params"}},
                             "yaxis": {"title": {"text": "peak memory (MiB)"}},
                             "zaxis": {"title": {"text": "score"}}, "aspectmode": "cube",
                             "camera": {"eye": {"x": 1.6, "y": -1.4, "z": 0.35},
                                        "center": {"x": 0, "y": 0, "z": -0.2}}})
    out.append(("front-3d", "The front in 3-D", fig,
                "Drag to turn, scroll to zoom; black diamonds mark the front. Hover a point to "
                "see its trial and candidate; click a method in the legend to hide it."))

    pairs = (("params", "score"), ("memory_mib", "score"), ("params", "memory_mib"))
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                        subplot_titles=[f"{AXES[b].split(' (')[0]} vs {AXES[a].split(' (')[0]}"
                                        for a, b in pairs])
    for col, (x, y) in enumerate(pairs, start=1):
        for tr in _scatter_traces(go, data, x, y, legend=col == 1):
            fig.add_trace(tr, row=1, col=col)
        fig.update_xaxes(**(log if x == "params" else {}), title_text=AXES[x], row=1, col=col)
        fig.update_yaxes(title_text=AXES[y], row=1, col=col)
    fig.update_layout(height=520, margin={"t": 60}, legend=side_legend)
    out.append(("front-2d", "The front projected on each pair of objectives", fig,
                "A front member can look beaten in one projection: it wins on the third objective."))

    fig = go.Figure(_scatter_traces(go, data, "fraction", "score"))
    fig.update_xaxes(type="log", title_text="trainable fraction of the model (log)",
                     tickformat=".2~p")
    fig.update_yaxes(title_text="score")
    fig.update_layout(height=480, margin={"t": 40}, legend=side_legend)
    out.append(("score-fraction", "Score vs trainable-parameter fraction", fig,
                "The share of the model's parameters that each candidate trains."))

    hv = data.hypervolume
    fig = go.Figure(go.Scatter(x=[t / 60 for t, _ in hv], y=[v for _, v in hv],
                               mode="lines+markers", line={"shape": "hv"}, name="hypervolume",
                               hovertemplate="%{x:.1f} min: %{y:.4f}<extra></extra>"))
    fig.update_xaxes(title_text="minutes since the study started")
    fig.update_yaxes(title_text="hypervolume", rangemode="tozero")
    fig.update_layout(height=360, margin={"t": 20})
    out.append(("hypervolume", "Hypervolume of the front over time", fig,
                "The volume the front dominates (higher is better; flat: no new front member). "
                f"Objectives {data.hypervolume_source}."))

    labels = sorted({p.label for p in data.points})
    fig = go.Figure([go.Bar(name=state, x=labels, marker_color=STATE_COLOURS[state],
                            y=[sum(p.label == lab and p.state == state for p in data.points)
                               for lab in labels])
                     for state in STATES if data.counts.get(state)])
    fig.update_layout(barmode="stack", height=360, margin={"t": 20},
                      yaxis={"title": {"text": "trials"}}, xaxis={"title": {"text": "method"}})
    counts = ", ".join(f"{n} {s}" for s, n in data.counts.items() if n)
    out.append(("states", "Trials by state", fig, f"{counts or 'No trials yet'}; per method."))
    return out


def optuna_figures(study: Study) -> list[tuple[str, str, Any, str]]:
    """Optuna's own views of the study (``optuna.visualization``, not redrawn here): which
    parameters mattered for the score, and the parameters of every trial against its score.
    A view Optuna cannot draw yet (too few complete trials, no parameter they all share) is
    a one-line note instead."""
    import warnings

    import optuna.visualization as vis

    def score(t: Any) -> float:
        return t.values[0]

    views = (("importance", "Parameter importance for the score (Optuna)",
              lambda: vis.plot_param_importances(study, target=score, target_name="score"),
              "fANOVA importance of each parameter that every complete trial has, for the "
              "score (optuna.visualization.plot_param_importances)."),
             ("parallel", "Parameters against the score (Optuna)",
              lambda: vis.plot_parallel_coordinate(study, target=score, target_name="score"),
              "Each line is a complete trial; drag along an axis to filter "
              "(optuna.visualization.plot_parallel_coordinate)."))
    out = []
    for anchor, title, draw, caption in views:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = draw()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            fig, caption = None, f"Optuna cannot draw this view of the study yet: {exc}"
        out.append((anchor, title, fig, caption))
    return out


def _front_table(data: ReportData) -> str:
    head = ("trial", "method", "placement", "score", "trainable", "% of model", "peak memory", "time")
    body = []
    for p in data.front:
        cells = (f"#{p.number}", p.method, p.placement, f"{p.score:.4f}", f"{p.params:,}",
                 percent(p.fraction), human_bytes(p.memory),
                 "-" if p.wall_seconds is None else f"{p.wall_seconds:.0f}s")
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    if not body:
        return "<p>No complete trial yet: the front is empty.</p>"
    return ("<table class='front'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>"
            + f"<p class='hint'>Export one: <code>autopeft export {html.escape(data.study)} "
              f"--trial N --out DIR</code> or <code>--pick 'score&gt;=0.9,min params'</code>.</p>")


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1280px;padding:0 16px;color:#222}h1{margin-bottom:4px}.meta{color:#555}
section{margin-top:28px}table.front{border-collapse:collapse;font-size:14px}
table.front td,table.front th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}
table.front td:nth-child(n+4){text-align:right;font-variant-numeric:tabular-nums}
.running{background:#eef6ff;border-left:4px solid #1f77b4;padding:6px 10px}.hint{color:#555}"""


def render_html(data: ReportData, extra: list[tuple[str, str, Any, str]] = ()) -> str:
    """The whole report as one HTML page with plotly.js inline; ``extra``: more sections
    (Optuna's views, ``optuna_figures``; a section without a figure shows its caption)."""
    from plotly.offline import get_plotlyjs

    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    counts = ", ".join(f"{n} {s}" for s, n in data.counts.items() if n) or "no trials yet"
    running = (f"<p class='running'>The study is still running ({data.counts['running']} trial(s) "
               f"in flight): this is its state at {now}. Run <code>autopeft plot "
               f"{html.escape(data.study)}</code> again to refresh.</p>"
               if data.counts.get("running") else "")
    sections = [f"<section><h2>Pareto front ({len(data.front)} trials)</h2>{_front_table(data)}"
                "</section>"]
    config = {"displaylogo": False, "responsive": True}
    for anchor, title, fig, caption in [*figures(data), *extra]:
        if fig is None:
            sections.append(f"<section id='{anchor}'><h2>{html.escape(title)}</h2>"
                            f"<p class='hint'>{html.escape(caption)}</p></section>")
            continue
        fig.update_layout(template="plotly_white")
        div = fig.to_html(full_html=False, include_plotlyjs=False, config=config,
                          div_id=f"fig-{anchor}")
        sections.append(f"<section id='{anchor}'><h2>{html.escape(title)}</h2>"
                        f"<p class='hint'>{html.escape(caption)}</p>{div}</section>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>autopeft report: {html.escape(data.study)}</title><style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>autopeft report: {html.escape(data.study)}</h1>
<p class="meta">task <b>{html.escape(data.task)}</b> · model <code>{html.escape(data.model)}</code>
 · {counts} · generated {now}</p>{running}
{"".join(sections)}
<p class="hint">Objectives: score (higher is better), trainable parameters and peak training
memory (lower is better). The front holds the trials no other trial beats on all three.</p>
</body></html>
"""


# -- PNG (matplotlib) -------------------------------------------------------------------

def _empty(ax: Any, text: str = "no complete trial yet") -> None:
    if hasattr(ax, "text2D"):  # 3-D axes place text in data coordinates unless told
        ax.text2D(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555")
    else:
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555")


def _short_count(v: float) -> str:
    """Tick labels a person reads at a glance: 10K, 31.6K, 1M, 22.7M."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.3g}"


def _human_ticks(axis: Any, what: str) -> None:
    from matplotlib.ticker import FuncFormatter

    fmt = {"params": lambda v, _: _short_count(v), "fraction": lambda v, _: percent(v)}.get(what)
    if fmt is not None:
        axis.set_major_formatter(FuncFormatter(fmt))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


DPI = 110
LEGEND_ROW_INCHES = 0.175  # one legend line at fontsize 8
LEGEND_COLUMN_INCHES = 1.55  # room for "parallel_adapter" beside its marker


def _scatter(ax: Any, data: ReportData, x: str, y: str) -> None:
    """Every scored trial in its method's colour and marker, infeasible ones as grey
    crosses, the front as open black diamonds around its members."""
    look = looks(data)
    for label in data.labels:
        pts = [p for p in data.scored if p.label == label]
        st = look[label]
        ax.scatter([getattr(p, x) for p in pts], [getattr(p, y) for p in pts],
                   s=70 if st.marker == "*" else 32, color=st.colour, marker=st.marker,
                   alpha=0.9, edgecolors="white", linewidths=0.4, zorder=2)
    bad = [p for p in data.points if p.state == "infeasible"]
    if bad:
        ax.scatter([getattr(p, x) for p in bad], [getattr(p, y) for p in bad], marker="x",
                   color=STATE_COLOURS["infeasible"], zorder=2)
    front = data.front
    ax.scatter([getattr(p, x) for p in front], [getattr(p, y) for p in front], s=110,
               facecolors="none", edgecolors=FRONT_COLOUR, linewidths=1.3, marker="D", zorder=3)
    if x in ("params", "fraction"):
        ax.set_xscale("log")
    _human_ticks(ax.xaxis, x)
    _human_ticks(ax.yaxis, y)
    ax.set_xlabel(AXES[x])
    ax.set_ylabel(AXES[y])
    ax.grid(alpha=0.3)


def _label_front(ax: Any, data: ReportData, x: str, y: str) -> list[Any]:
    """Each front member's trial number beside it, no two overlapping (``labels.py``)."""
    front = data.front
    others = [p for p in data.points if not p.on_front and getattr(p, x) is not None
              and getattr(p, y) is not None and p.state in ("complete", "provisional",
                                                            "infeasible")]
    return place_labels(ax, [(getattr(p, x), getattr(p, y)) for p in front],
                        [str(p.number) for p in front],
                        others=[(getattr(p, x), getattr(p, y)) for p in others])


def _legend_columns(data: ReportData) -> list[list[tuple[Any, str]]]:
    """The legend as columns: one per method family (its name first, in bold), then the
    marks (front, infeasible). Entries are (handle, text); a header's handle is None."""
    from matplotlib.lines import Line2D

    look = looks(data)
    columns = []
    for family, labels in by_family(data.labels):
        column: list[tuple[Any, str]] = [(None, family)]
        for label in labels:
            st = look[label]
            column.append((Line2D([], [], linestyle="none", marker=st.marker, color=st.colour,
                                  markeredgecolor="white", markeredgewidth=0.4,
                                  markersize=10 if st.marker == "*" else 7), label))
        columns.append(column)
    marks: list[tuple[Any, str]] = [(None, "marks")]
    if data.front:
        marks.append((Line2D([], [], linestyle="none", marker="D", markerfacecolor="none",
                             markeredgecolor=FRONT_COLOUR, markersize=8), "Pareto front"))
    if any(p.state == "infeasible" for p in data.points):
        marks.append((Line2D([], [], linestyle="none", marker="x",
                             color=STATE_COLOURS["infeasible"]), "infeasible"))
    if len(marks) > 1:
        columns.append(marks)
    return columns


def _finish(fig: Any, data: ReportData, path: Path,
            labelled: tuple[tuple[Any, str, str], ...] = ()) -> None:
    """Legend under the axes (one column per family), layout, front labels, save. The
    labels come last: they are placed in the final layout's pixels."""
    from matplotlib.lines import Line2D

    columns = _legend_columns(data) if data.scored else []
    rows = max((len(c) for c in columns), default=0)
    width, height = fig.get_size_inches()
    extra = rows * LEGEND_ROW_INCHES + 0.3 if columns else 0.0
    fig.set_size_inches(max(width, LEGEND_COLUMN_INCHES * len(columns)), height + extra)
    fig.tight_layout(rect=(0, extra / (height + extra), 1, 1))
    if columns:
        blank = Line2D([], [], linestyle="none")
        handles, texts = [], []
        for column in columns:  # matplotlib fills a legend column by column
            column = column + [(None, "")] * (rows - len(column))
            handles += [h if h is not None else blank for h, _ in column]
            texts += [t for _, t in column]
        legend = fig.legend(handles, texts, loc="lower center", bbox_to_anchor=(0.5, 0.0),
                            ncol=len(columns), frameon=False, fontsize=8, handletextpad=0.3,
                            columnspacing=1.6, borderaxespad=0.3)
        headers = {t for column in columns for h, t in column if h is None}
        for handle_text, text in zip(legend.get_texts(), texts):
            if text in headers:
                handle_text.set_fontweight("bold")
    fig.canvas.draw()  # final axis limits and layout, in pixels
    for ax, x, y in labelled:
        _label_front(ax, data, x, y)
    fig.savefig(path, dpi=DPI)


def _figure(width: float, height: float) -> Any:
    """A Figure drawn by Agg: pyplot's global backend and state are left alone (no display
    needed; a notebook's backend is untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


PAIRS = (("params", "score"), ("memory_mib", "score"), ("params", "memory_mib"))


def front_2d_figure(data: ReportData, path: Path) -> Any:
    """The front projected on each pair of objectives, front members labelled."""
    fig = _figure(15, 4.6)
    axes = fig.subplots(1, 3)
    for ax, (x, y) in zip(axes, PAIRS):
        if data.scored:
            _scatter(ax, data, x, y)
        else:
            _empty(ax)
    fig.suptitle(f"{data.study}: the front projected on each pair of objectives")
    _finish(fig, data, path, tuple((ax, x, y) for ax, (x, y) in zip(axes, PAIRS))
            if data.scored else ())
    return fig


def front_3d_figure(data: ReportData, path: Path) -> Any:
    """The three objectives in 3-D, axes named, front members ringed and numbered."""
    import numpy as np
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    has = bool(data.scored)
    fig = _figure(7, 6)
    ax = fig.add_subplot(projection="3d")
    look = looks(data)
    for label in data.labels:
        pts = [p for p in data.scored if p.label == label]
        ax.scatter(np.log10([p.params for p in pts]), [p.memory_mib for p in pts],
                   [p.score for p in pts], color=look[label].colour, marker=look[label].marker,
                   s=60 if look[label].marker == "*" else 26, depthshade=False)
    if has:
        f = data.front
        ax.scatter(np.log10([p.params for p in f]), [p.memory_mib for p in f],
                   [p.score for p in f], s=90, facecolors="none", edgecolors=FRONT_COLOUR,
                   marker="D", depthshade=False)
    else:
        _empty(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # log10 axis: ticks at decades
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short_count(10 ** v)))
    for p in data.front:  # each front member carries its trial number, as in the 2-D PNGs
        ax.text(np.log10(p.params), p.memory_mib, p.score, f"    {p.number}", fontsize=7,
                zorder=5)
    ax.set_xlabel("trainable params (log)", labelpad=8)
    ax.set_ylabel("peak memory (MiB)", labelpad=8)
    ax.set_zlabel("score")
    ax.set_title(f"{data.study}: the front in 3-D")
    _finish(fig, data, path)
    return fig


def write_pngs(data: ReportData, out: Path) -> list[Path]:
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    has = bool(data.scored)
    paths = [out / name for name in PNG_NAMES]

    front_3d_figure(data, paths[0])

    front_2d_figure(data, paths[1])

    fig = _figure(7, 4.6)
    ax = fig.subplots()
    fraction = has and all(p.fraction for p in data.scored)
    if fraction:
        _scatter(ax, data, "fraction", "score")
    else:
        _empty(ax)
    ax.set_title(f"{data.study}: score vs trainable fraction")
    _finish(fig, data, paths[2], ((ax, "fraction", "score"),) if fraction else ())

    fig = _figure(7, 4)
    ax = fig.subplots()
    if data.hypervolume:
        ax.step([t / 60 for t, _ in data.hypervolume], [v for _, v in data.hypervolume],
                where="post", marker="o")
        ax.set_ylim(bottom=0)
    else:
        _empty(ax)
    ax.set_xlabel("minutes since the study started")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"{data.study}: hypervolume of the front over time", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths[3], dpi=DPI)

    labels = [lab for _, group in by_family(sorted({p.label for p in data.points}))
              for lab in group]  # methods side by side with their family
    fig = _figure(max(7.0, 2.0 + 0.42 * len(labels)), 4.6)
    ax = fig.subplots()
    bottom = np.zeros(len(labels))
    for state in STATES:
        counts = np.array([sum(p.label == lab and p.state == state for p in data.points)
                           for lab in labels], dtype=float)
        if counts.any():
            ax.bar(range(len(labels)), counts, bottom=bottom, color=STATE_COLOURS[state],
                   label=state)
            bottom += counts
    if labels:
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right",
                      rotation_mode="anchor", fontsize=8)
        ax.legend(fontsize=8)
    else:
        _empty(ax, "no trials yet")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("trials")
    ax.set_title(f"{data.study}: trials by state")
    fig.tight_layout()
    fig.savefig(paths[4], dpi=DPI)
    return paths
