"""The report (``autopeft plot``), the ``show`` table and the progress reporters.

A real tiny study (three trials on the tiny random BERT) is run once for the module; the
rest uses a hand-made study (``test_pick.hand_made_study``) and costs nothing.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from autopeft import api
from autopeft.cli import main
from autopeft.report.plotdata import collect, hypervolume_history
from autopeft.report.plots import PNG_NAMES
from autopeft.report.progress import (ConsoleReporter, JsonLogReporter, LiveReporter,
                                      NullReporter, state_counts)
from test_pick import hand_made_study

# One worker runs this file (pytest-xdist): its study is searched and its report written once.
pytestmark = pytest.mark.xdist_group("test_report")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_study(tiny_model: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """Three trials on the tiny model; the search's JSON event log is kept for a test."""
    folder = tmp_path_factory.mktemp("report-study")
    log = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOPEFT_STUDIES_DIR", str(folder / "studies"))
        study = api.search("sst2", str(tiny_model), data_dir=str(tiny_data), study="rep",
                           n_trials=3, train_samples=64, eval_samples=32, batch_size=16,
                           max_length=32, sampler="random", seed=1,
                           progress=JsonLogReporter(stream=log, step_every=0.0))
    return study, f"sqlite:///{folder / 'studies' / 'rep.db'}", log.getvalue()


@pytest.fixture(scope="module")
def report(tiny_study, tmp_path_factory: pytest.TempPathFactory):
    study, _, _ = tiny_study
    return api.plot(study, str(tmp_path_factory.mktemp("report") / "out"))


def test_html_report_holds_the_front_and_works_offline(tiny_study, report) -> None:
    study, _, _ = tiny_study
    front = [r.number for r in api.front(study)]
    assert front, "the tiny study must have a front"
    text = report.html.read_text(encoding="utf-8")
    for number in front:
        assert f"<td>#{number}</td>" in text  # the front table
        assert f"trial {number}" in text       # the hover text of its point
    # 3-D, 2-D, fraction, HV, states, and Optuna's own importance and parallel coordinates
    assert len(re.findall(r"Plotly\.newPlot", text)) == 7
    for view in ("importance", "parallel"):
        assert f"id='{view}'" in text and f'id="fig-{view}"' in text
    assert "<script src=" not in text, "plotly.js must be inline: the report works offline"
    assert 3_000_000 < report.html.stat().st_size < 8_000_000  # plotly.js (~4.8 MB) + data


def test_each_png_is_a_valid_non_blank_image(report) -> None:
    from PIL import Image

    assert [p.name for p in report.pngs] == list(PNG_NAMES)
    for path in report.pngs:
        raw = path.read_bytes()
        assert raw[:8] == PNG_SIGNATURE and len(raw) > 10_000, path.name
        with Image.open(path) as img:
            img.load()
            assert img.width > 300 and img.height > 200
            colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is None or len(colours) > 20, f"{path.name} looks blank"


def test_cli_plot_writes_the_report(tiny_study, tmp_path: Path, capsys) -> None:
    _, url, _ = tiny_study
    assert main(["plot", "rep", "--storage", url, "--out", str(tmp_path / "r")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"report.html", *PNG_NAMES}


def test_search_json_log_is_one_object_per_event(tiny_study) -> None:
    study, _, log = tiny_study
    events = [json.loads(line) for line in log.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("started") == 1 and kinds[-1] == "finished"
    ended = kinds.count("trial_finished") + kinds.count("trial_failed") + kinds.count("trial_pruned")
    assert kinds.count("trial_started") == ended == 3
    assert "step" in kinds and all("time" in e and "elapsed" in e for e in events)
    assert events[-1]["front"] == [r.to_dict() for r in api.front(study)]


def test_report_of_a_running_study_shows_its_current_state(tmp_path: Path) -> None:
    study = hand_made_study()
    study.ask()  # a trial in flight, as another worker would leave it
    report = api.plot(study, str(tmp_path))
    data = report.data
    assert data.counts == {"complete": 5, "pruned": 1, "failed": 1, "infeasible": 1, "running": 1}
    assert {p.number for p in data.front} == {0, 1, 3, 4}
    assert "still running (1 trial(s) in flight)" in report.html.read_text(encoding="utf-8")
    volumes = [v for _, v in data.hypervolume]
    assert volumes == sorted(volumes) and volumes[-1] > 0  # the front only grows


def test_report_of_an_empty_study(tmp_path: Path) -> None:
    import optuna

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    report = api.plot(study, str(tmp_path))
    assert "the front is empty" in report.html.read_text(encoding="utf-8")
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in report.pngs)


def test_hypervolume_prefers_the_searchs_record_and_falls_back_to_its_own(tmp_path: Path) -> None:
    study = hand_made_study()
    own = collect(study)
    assert own.hypervolume_source.startswith("normalised to the ranges seen")
    assert len(own.hypervolume) == 5  # one point per complete, feasible trial
    assert hypervolume_history([]) == []
    study.set_user_attr("hypervolume_history", [[30.0, 0.5], [10.0, 0.2], [50.0, 0.6]])
    recorded = collect(study)
    assert recorded.hypervolume == [(10.0, 0.2), (30.0, 0.5), (50.0, 0.6)]  # sorted by time
    assert recorded.hypervolume_source == "as recorded by the search"


def many_methods_study(per_method: int = 3, seed: int = 0, methods: list[str] | None = None):
    """Every registered method (or ``methods``) and four combinations, a few complete trials
    each, scores rising with log parameters: a long front crowded with close points (half
    the trials)."""
    import math
    import random

    import optuna
    from optuna.trial import create_trial

    from autopeft.methods.registry import METHODS

    rng = random.Random(seed)
    study = optuna.create_study(study_name="many", directions=["maximize", "minimize", "minimize"])
    for label in [*(methods or METHODS), "lora+bitfit", "adapter+lora", "prefix+lora",
                  "ia3+bitfit"]:
        for _ in range(per_method):
            params = 22_000_000 if label == "full" else int(10 ** rng.uniform(3.5, 7.3))
            score = 0.70 + 0.035 * math.log10(params) + rng.uniform(-0.01, 0.01)
            memory = int((300 + 40 * math.log10(params) + rng.uniform(-15, 15)) * 2**20)
            study.add_trial(create_trial(
                values=[score, params, memory], system_attrs={"constraints": [-1.0]},
                user_attrs={"label": label, "trainable_fraction": params / 22_000_000,
                            "wall_seconds": 12.0, "candidate": {"methods": [
                                {"name": n, "params": {}} for n in label.split("+")],
                                "learning_rate": 1e-3, "seed": 0}}))
    return study


def test_every_method_has_its_own_colour_and_marker_grouped_by_family() -> None:
    from autopeft.methods.registry import METHODS
    from autopeft.report.plots import figures
    from autopeft.report.style import SHADES, by_family, registered_styles, styles

    own = {n for n, m in METHODS.items() if m.apply.__module__.startswith("autopeft.")}
    fixed = {n: st for n, st in registered_styles().items() if n in own}  # not test plugins
    assert set(fixed) == own and len(own) >= 18
    pairs = [(s.colour, s.marker) for s in fixed.values()]
    assert len(set(pairs)) == len(pairs), "two methods look alike"
    assert len({s.colour for s in fixed.values()}) == len(fixed), "two methods share a colour"
    for name, st in fixed.items():  # the family is the hue: its shades and no other's
        assert st.family == METHODS[name].category and st.colour in SHADES[st.family]
    combos = [f"a{i}+b" for i in range(30)]  # combinations: hybrids, each its own look
    looks = styles([*own, *combos])
    assert len({(s.colour, s.marker) for s in looks.values()}) == len(looks)
    assert all(looks[c].family == "hybrid" for c in combos)
    assert [f for f, _ in by_family(["lora+bitfit", "lora", "ia3", "full", "bitfit"])] == [
        "baseline", "additive", "partial", "reparameterized", "hybrid"]

    data = collect(many_methods_study(per_method=1, methods=sorted(own)))  # the same looks
    traces = [t for t in figures(data)[1][2].data if t.showlegend and t.legendgroup != "marks"]
    assert len(traces) == len(data.labels)
    assert len({(t.marker.color, t.marker.symbol) for t in traces}) == len(traces)
    assert all(t.marker.color == styles(data.labels)[t.name].colour for t in traces)
    titles = [t.legendgrouptitle.text for t in traces if t.legendgrouptitle.text]
    assert titles == [f for f, _ in by_family(data.labels)]  # one title per family


def test_labels_on_a_crowded_front_do_not_overlap(tmp_path: Path) -> None:
    from matplotlib.text import Text

    from autopeft.report.plots import front_2d_figure

    data = collect(many_methods_study())
    assert len(data.front) >= 25, "a crowded front"  # memory within 5% ties: 29 of 66
    fig = front_2d_figure(data, tmp_path / "front.png")
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:3]:
        labels = [t for t in ax.texts if t.get_text().isdigit()]
        assert sorted(int(t.get_text()) for t in labels) == sorted(p.number for p in data.front)
        boxes = [Text.get_window_extent(t, renderer) for t in labels]  # the text, not its line
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), "two trial labels overlap"
    assert (tmp_path / "front.png").read_bytes()[:8] == PNG_SIGNATURE


def test_show_table_is_readable_and_adds_seed_columns_when_confirmed(tmp_path: Path) -> None:
    from rich.console import Console

    from autopeft.report.show import rows, table

    study = hand_made_study()
    plain = Console(record=True, width=220)
    plain.print(table(rows(study, all_trials=True), "all"))
    text = plain.export_text()
    assert "75.00K" in text and "0.34%" in text and "476.8 MiB" in text
    assert "infeasible" in text and "failed" in text and "boom" in text and "seeds" not in text
    assert "lora; lr=1.0e-03" in text  # the placement column, on a wide console
    narrow = Console(record=True, width=80)
    narrow.print(table(rows(study, all_trials=True), "all"))
    lines = narrow.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert any(line.split()[:2] == ["0", "full"] and "22.00M" in line for line in lines), \
        "numbers stay on one line in a narrow terminal"
    assert any(line.split() == ["6", "boom"] for line in lines), "reasons are listed below"

    study = hand_made_study(extra_attrs={1: {"confirm_scores": [0.91, 0.90, 0.92]}})
    confirmed = Console(record=True, width=220)
    confirmed.print(table(rows(study), "front"))
    text = confirmed.export_text()
    assert "mean ± std" in text and "seeds" in text and "0.9100 ± 0.0100" in text
    row = next(r for r in rows(study) if r.number == 1)
    assert (row.seeds, row.score_mean) == (3, pytest.approx(0.91))


LONG = {"label": "prefix+lora+bitfit",
        "candidate": {"methods": [{"name": "prefix", "params": {"num_virtual_tokens": 20}},
                                  {"name": "lora", "params": {"r": 16, "alpha": 32,
                                   "targets": ["query", "key", "value", "dense"],
                                   "layers": [0, 1, 2, 3, 4, 5]}},
                                  {"name": "bitfit", "params": {}}],
                      "learning_rate": 3e-4, "seed": 0}}
LONG_PLACEMENT = ("prefix tokens=20; lora r=16 alpha=32 [query,key,value,dense] L=0,1,2,3,4,5; "
                  "bitfit; lr=3.0e-04")


def test_show_into_a_pipe_prints_every_column_in_full(tmp_path: Path, capsys,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`autopeft show > front.txt`, a CI log: no terminal, so no width limit and no cut, even
    where the terminal it would have had is 80 columns wide."""
    monkeypatch.setenv("COLUMNS", "80")
    url = f"sqlite:///{tmp_path / 'hand.db'}"
    hand_made_study(storage=url, extra_attrs={2: LONG})
    assert main(["show", "hand", "--storage", url, "--all"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "..." not in out
    for whole in ("0.9500", "0.9200", "0.9100", "0.8800", "0.8500", "infeasible", "complete",
                  "failed", "pruned", "prefix+lora+bitfit", LONG_PLACEMENT, "peak mem", "time"):
        assert whole in out, whole
    assert max(map(len, out.splitlines())) > 80  # one row per trial, however long
    assert all(line == line.rstrip() for line in out.splitlines()), "no trailing padding"

    reporter = ConsoleReporter()  # a search's plain log on a terminal-less stderr
    reporter.trial_finished(hand_made_study(extra_attrs={0: LONG}), 0)
    err = capsys.readouterr().err
    assert "…" not in err and LONG_PLACEMENT in err and "front so far" in err
    assert "shown" not in err  # every front row fits the five printed
    ConsoleReporter(front_rows=1).trial_finished(hand_made_study(), 0)
    err = capsys.readouterr().err
    assert re.search(r"front so far \(\d+ trials, the best 1 shown\)", err), err


@pytest.mark.parametrize("width", [60, 80, 100])
def test_a_narrow_terminal_drops_columns_never_the_numbers(width: int) -> None:
    from rich.console import Console

    from autopeft.report.show import DROP_ORDER, rows, table

    study = hand_made_study(extra_attrs={2: LONG, 1: {"confirm_scores": [0.91, 0.90, 0.92]}})
    term = Console(record=True, width=width, force_terminal=True)
    term.print(table(rows(study, all_trials=True), "all"))
    text = term.export_text()
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width and "…" not in text
    header = next(line.split() for line in lines if line.split()[:2] == ["trial", "method"])
    for number, score, params, memory in ((5, "0.9500", "10.00K", "286.1 MiB"),
                                          (0, "0.9200", "22.00M", "1.1 GiB"),
                                          (2, "0.9100", "75.00K", "572.2 MiB")):
        row = next(line for line in lines if line.split()[:1] == [str(number)])
        assert score in row and params in row and memory in row, row
    assert "prefix+lora+bitfit" in text and LONG_PLACEMENT.split(";")[0] in text
    dropped = [name for name in DROP_ORDER if name not in " ".join(header)]
    assert dropped == list(DROP_ORDER[:len(dropped)]), "the least important go first"
    assert ("time" not in header) and (width > 60 or "status" not in header)


def test_reporters_take_every_event() -> None:
    """The search may send rung / pruned events to any reporter, including the silent one;
    each one that writes says what happened (read back from its output)."""
    from rich.console import Console

    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.search.budget import Budget

    study = hand_made_study()
    cand = Candidate([MethodSpec("lora", {"r": 8, "targets": ["query", "value"]})], 1e-3)
    buf = io.StringIO()
    console = ConsoleReporter()
    console.console = Console(file=io.StringIO(), width=150)  # instead of stderr
    live = LiveReporter(console=Console(file=io.StringIO(), force_terminal=True, width=150))
    for reporter in (NullReporter(), JsonLogReporter(stream=buf), live, console):
        reporter.started(study, "memory", Budget(60.0), 5)
        reporter.trial_started(9, cand)
        reporter.step(1, 4, 0.7)
        reporter.rung(9, 2, 0.81)
        reporter.trial_pruned(9, "below the rung's top 1/3")
        reporter.trial_failed(10, "boom")
        reporter.trial_finished(study, 1)
        reporter.note("budget reached")
        reporter.finished(study)
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["started", "trial_started", "rung", "trial_pruned",
                                            "trial_failed", "trial_finished", "note",
                                            "finished"]  # step throttled (10 s)
    by_event = {e["event"]: e for e in events}
    assert by_event["rung"]["number"] == 9 and by_event["rung"]["score"] == pytest.approx(0.81)
    assert by_event["trial_failed"]["reason"] == "boom"
    assert by_event["note"]["text"] == "budget reached"
    done = f"done: {state_counts(study)['complete']} complete"
    for reporter in (live, console):
        text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", reporter.console.file.getvalue())
        for needle in ("at memory", "trial 9 pruned: below the rung's top 1/3",
                       "trial 10 failed: boom", "trial 1 ", "budget reached", done):
            assert needle in text, (type(reporter).__name__, needle)
    assert "trial 9 rung at step 2: score 0.8100" in console.console.file.getvalue()


def test_a_search_where_nothing_learned_says_so_at_the_end() -> None:
    import optuna
    from optuna.trial import TrialState, create_trial

    from autopeft.report.progress import _done_line
    from autopeft.report.show import front_notes

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for _ in range(3):  # as every RTE candidate on MiniLM: stopped at the chance loss
        study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"not_learning": True}))
    study.enqueue_trial({}, user_attrs={"warm_start": "ia3"})  # a recipe the budget left queued
    line = _done_line(study)
    assert "0 complete" in line and "3 pruned" in line
    assert "nothing learned: the loss check stopped all 3 trials" in line
    assert "autopeft show" not in line  # there is no front to show
    assert any(n.startswith("Nothing learned: the loss check") for n in front_notes(study))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={}))  # one ranked out
    assert "nothing learned" not in _done_line(study)


def test_a_front_no_better_than_one_constant_answer_says_nothing_was_learned() -> None:
    """MiniLM on CoLA: every trial learned the majority class (MCC 0), so the front ranked
    size and memory only. The study knows what one constant answer scores on its labels;
    a best score within twice the noise of it is said as nothing learned."""
    import optuna
    from optuna.trial import create_trial

    from autopeft.metrics import constant_score
    from autopeft.report.progress import _done_line
    from autopeft.report.show import front_notes

    cola = [0] * 150 + [1] * 350
    assert constant_score("matthews", cola) == 0.0
    assert constant_score("accuracy", cola) == 0.7  # the majority class
    assert constant_score("f1_accuracy", [0, 1, 1, 1]) == pytest.approx((6 / 7 + 0.75) / 2)
    assert constant_score("pearson_spearman", [0.5, 2.0, 4.5], regression=True) == 0.0
    # STS-B's 400 validation scores: their mean, repeated, has a float std of 4e-16 and
    # scipy's correlation of it was NaN (so "nothing learned" fired on every STS-B study)
    stsb = np.random.default_rng(0).uniform(0, 5, 400).round(2)
    assert constant_score("pearson_spearman", stsb, regression=True) == 0.0
    assert constant_score("bleu", ["a b"]) is None
    assert constant_score("neg_loss", [np.array([1, 2])]) is None

    def study_at(*scores: float) -> optuna.Study:
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
        study.set_user_attr("no_skill", 0.0)
        study.set_user_attr("noise", {"rung": 0.045, "final": 0.045, "metric": "matthews",
                                      "rung_rows": 500, "final_rows": 500})
        for i, score in enumerate(scores):
            study.add_trial(create_trial(values=[score, 1000.0 * (i + 1), 1e8], user_attrs={
                "trainable_params": 1000 * (i + 1), "steps": 100, "label": "lora"}))
        return study

    flat = study_at(0.0, 0.0, 0.03)
    line = _done_line(flat)
    assert "3 complete" in line and "nothing learned: no trial scored above 0.000" in line
    assert "twice the noise (0.089; best 0.030)" in line
    assert any(n.startswith("Nothing learned: no trial") for n in front_notes(flat))
    assert "nothing learned" not in _done_line(study_at(0.0, 0.2))  # one learned
    unknown = study_at(0.0)
    unknown.set_user_attr("no_skill", None)  # BLEU, a loss: not judged
    assert "nothing learned" not in _done_line(unknown)
    unknown.set_user_attr("no_skill", float("nan"))  # as a study stored before the fix
    assert "nothing learned" not in _done_line(unknown)


def test_live_panel_shows_trial_budget_counts_and_front() -> None:
    from rich.console import Console

    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.search.budget import Budget

    study = hand_made_study()
    live = LiveReporter(console=Console(file=io.StringIO(), width=160))
    live.started(study, "memory", Budget(600.0), None)
    live.trial_started(8, Candidate([MethodSpec("lora", {"r": 4})], 1e-3))
    live.step(3, 10, 0.6931)
    live.rung(8, 3, 0.77)
    out = Console(record=True, width=160)
    out.print(live.render())
    text = out.export_text()
    live.finished(study)
    for needle in ("trial 8", "lora r=4", "step 3/10", "loss 0.6931", "step 3: score 0.7700",
                   "left of 10m00s", "5 complete", "1 pruned", "1 failed", "front (4 trials"):
        assert needle in text, needle


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Injected into a copy of the report: records console errors and uncaught exceptions in an
# attribute that --dump-dom prints (headless Chromium logs every console level as INFO).
CATCH = """<script>(function(){var e=[];function keep(m){e.push(String(m));
document.documentElement.setAttribute('data-errors', JSON.stringify(e));}
var orig=console.error;console.error=function(){keep([].join.call(arguments,' '));
orig.apply(console,arguments);};window.addEventListener('error',function(ev){keep(ev.message);});
window.addEventListener('unhandledrejection',function(ev){keep(ev.reason);});})();</script>"""


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = tmp_path / "report.html"
    page.write_text(report.html.read_text(encoding="utf-8").replace("<head>", "<head>" + CATCH, 1),
                    encoding="utf-8")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--enable-unsafe-swiftshader", f"--user-data-dir={tmp_path / 'profile'}",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000",
             "--window-size=1300,2400"]
    env = {**os.environ, "HOME": str(tmp_path)}
    shot = tmp_path / "shot.png"  # one launch (seconds each) dumps the DOM and takes the shot
    dom = subprocess.run([*flags, "--dump-dom", f"--screenshot={shot}", page.as_uri()],
                         capture_output=True, text=True, timeout=180, env=env)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [c for c in console if "Uncaught" in c], console
    errors = re.search(r'data-errors="([^"]*)"', dom.stdout)
    assert errors is None, f"console errors: {errors.group(1) if errors else ''}"
    # plotly.js drew every figure: one plot div each, with its SVG layers (WebGL for 3-D).
    # (Count elements, not strings: the inline plotly.js source holds these names too.)
    plots = re.findall(r'<div[^>]*class="[^"]*\bjs-plotly-plot\b', dom.stdout)
    svgs = re.findall(r'<svg[^>]*class="main-svg"', dom.stdout)
    # five of autopeft's and Optuna's parameter-importance and parallel-coordinate views
    assert len(plots) == 7 and len(svgs) >= 2 * 7, "plots did not render"
    assert re.search(r'<div[^>]*class="gl-container"', dom.stdout), "the 3-D scene did not render"

    from PIL import Image

    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 22)
    assert colours is None or len(colours) > 50, "the screenshot is blank"


def test_plot_and_train_of_unknown_things_are_one_line_errors(workdir: Path, capsys) -> None:
    assert main(["plot", "ghost"]) == 2
    assert main(["train", "--config", str(workdir / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no study database" in err[0] and "no candidate.yaml in" in err[1]
