"""What a new user meets first: whole tables in a pipe, the task said at the start, the CSV
as full as the JSON, honest counts, an export that says what it re-trained to and leaves
nothing behind when it fails, and a study that Optuna's own tools read by name."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

import autopeft
from autopeft import api
from autopeft.cli import main

from test_cli import LORA_SPACE, search_args


def _out(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 0
    return capsys.readouterr().out


def test_methods_and_tasks_print_every_cell_whole_into_a_pipe(
        capsys: pytest.CaptureFixture) -> None:
    listed = _out(capsys, ["methods"])
    assert "…" not in listed
    for m in api.methods():  # the longest cells, each on one line, in full
        assert m["summary"] in listed, m["name"]
    one = _out(capsys, ["methods", "lora"])
    assert "…" not in one
    assert all(f["help"] in one for f in api.methods("lora")[0]["fields"])
    tasks = _out(capsys, ["tasks"])
    assert "…" not in tasks and "hf:NAME[:CONFIG]" in tasks
    assert all(t["summary"] in tasks for t in api.tasks())


def test_the_task_line_names_kind_classes_and_metric_and_says_inferred(tmp_path: Path) -> None:
    from autopeft.tasks import OwnData, TASKS, describe, get_task

    assert describe(TASKS["sst2"]) == "task sst2: classification, 2 classes (0, 1); metric accuracy"
    assert describe(TASKS["stsb"]) == "task stsb: regression; metric pearson_spearman"
    assert describe(get_task("trainer:accuracy")) == (
        "task trainer:accuracy: trained and scored by your own Trainer; metric accuracy")
    floats = tmp_path / "f.csv"
    floats.write_text("text,label\na,0.5\nb,1.5\nc,2.0\n")
    inferred = describe(get_task(f"csv:{floats}", OwnData()))
    assert inferred == (f"task csv:{floats}: regression (inferred from the labels; --task-type "
                        "classification to change it); metric pearson_spearman")
    given = get_task(f"csv:{floats}", OwnData(kind="regression"))
    assert "inferred" not in describe(given, OwnData(kind="regression"))
    words = tmp_path / "w.csv"
    words.write_text("text,label\na,neg\nb,pos\n")
    assert describe(get_task(f"csv:{words}", OwnData())).startswith(
        f"task csv:{words}: classification, 2 classes (neg, pos) (inferred from the labels; "
        "--task-type regression to change it)")


def test_a_search_study_reads_well_everywhere(workdir: Path, tiny_model: Path, tiny_data: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    import optuna

    args = [a for a in search_args(tiny_model, tiny_data, "--n-trials", "1") if a != "--quiet"]
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    # The first line of the search names the task, its classes and the metric.
    assert err.splitlines()[0] == "task sst2: classification, 2 classes (0, 1); metric accuracy"
    assert "front so far (1 trial)" in err and "(1 trials" not in err
    # The next run resumes: one trial ran, the other recipes are still queued.
    study = optuna.load_study(study_name="t", storage="sqlite:///studies/t.db")
    queued = sum(t.state.name == "WAITING" for t in study.trials)
    assert queued >= 1
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"(resuming: 1 trial already, {queued} queued)" in err

    # Optuna's tools see the objectives by name and autopeft's tie-aware front.
    study = optuna.load_study(study_name="t", storage="sqlite:///studies/t.db")
    assert study.metric_names == ["score", "trainable_params", "peak_memory_bytes"]
    shown = autopeft.front(study)
    assert study.user_attrs["front"] == [{"number": r.number, "ties": r.repeats} for r in shown]

    # --csv has what --json has: fidelity, steps, search_score...
    table = list(csv.DictReader(io.StringIO(_out(capsys, ["show", "t", "--csv"]))))
    assert table and {"fidelity", "steps", "steps_trained", "search_score",
                      "repeats"} <= set(table[0])
    assert [row["fidelity"] for row in table] == [r.fidelity for r in shown]
    assert [row["steps"] for row in table] == [str(r.steps) for r in shown]


def test_export_says_its_score_and_a_failed_one_leaves_nothing(
        workdir: Path, tiny_model: Path, tiny_data: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import autopeft.export

    space = workdir / "lora.yaml"
    space.write_text(LORA_SPACE)
    assert main(search_args(tiny_model, tiny_data, "--n-trials", "1", "--space", str(space))) == 0
    number = autopeft.front(autopeft.load_study("t"))[0].number
    recorded = autopeft.front(autopeft.load_study("t"))[0].score

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("training failed")

    with monkeypatch.context() as m:
        m.setattr(autopeft.export, "retrain", broken)
        with pytest.raises(RuntimeError):
            main(["export", "t", "--trial", str(number), "--out", "e", "--train"])
    assert not (workdir / "e" / "candidate.yaml").exists()
    # so the same export goes through at once, and says what it re-trained to
    out = _out(capsys, ["export", "t", "--trial", str(number), "--out", "e", "--train"])
    line = out.splitlines()[-1]
    assert line.startswith("re-trained: score ") and line.endswith(
        f"(the study recorded {recorded:.4f})")
    retrained = float(line.split()[2])
    assert retrained == pytest.approx(recorded, abs=1e-4)


def _lab(colour: str) -> tuple[float, float, float]:
    """sRGB hex -> CIELAB (D65), to measure how far apart two colours look (CIE76)."""
    rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb)
    xyz = ((0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047,
           0.2126 * r + 0.7152 * g + 0.0722 * b,
           (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883)
    fx, fy, fz = (t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in xyz)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def test_every_method_looks_unlike_every_other() -> None:
    import itertools
    import math

    from autopeft.report.style import OUTLINES, registered_styles

    from autopeft.methods.registry import METHODS

    # the package's own methods (a test plugin, e.g. the GPU check's faults, may add more)
    looks = {n: st for n, st in registered_styles().items()
             if METHODS[n].apply.__module__.startswith("autopeft.")}
    for (a, sa), (b, sb) in itertools.combinations(looks.items(), 2):
        apart = math.dist(_lab(sa.colour), _lab(sb.colour))
        assert apart >= 25, (a, b, apart)
        if OUTLINES[sa.marker] == OUTLINES[sb.marker]:  # same outline: the colour must carry it
            assert apart >= 40, (a, b, apart)
    # The pairs a user could not tell apart before.
    assert OUTLINES[looks["lokr"].marker] != OUTLINES[looks["lora"].marker]
    assert OUTLINES[looks["bitfit"].marker] != OUTLINES[looks["vera"].marker]


def test_the_3d_figures_name_their_axes_and_number_the_front(tmp_path: Path) -> None:
    from autopeft.report.plotdata import collect
    from autopeft.report.plots import figures, front_3d_figure
    from test_pick import hand_made_study

    data = collect(hand_made_study())
    assert data.front
    ax = front_3d_figure(data, tmp_path / "f.png").axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_zlabel()) == (
        "trainable params (log)", "peak memory (MiB)", "score")
    assert sorted(t.get_text().strip() for t in ax.texts) == sorted(
        str(p.number) for p in data.front)
    scene = figures(data)[0][2].layout.scene
    assert [scene[a].title.text for a in ("xaxis", "yaxis", "zaxis")] == [
        "trainable params", "peak memory (MiB)", "score"]
    ring = [t for t in figures(data)[0][2].data if t.name == "Pareto front"][0]
    assert list(ring.text) == [str(p.number) for p in data.front]


def test_the_report_shows_a_front_entry_with_its_ties_as_show_does() -> None:
    import optuna

    from autopeft.report.plotdata import collect
    from autopeft.report.plots import render_html

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("noise", {"rung": 0.028, "final": 0.006})
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for score, lr in ((0.780, 1.5e-2), (0.777, 1.7e-2), (0.775, 8.7e-3)):
        study.add_trial(optuna.trial.create_trial(
            params={"x": lr}, distributions=dist, values=[score, 3_074, 400 * 2**20],
            user_attrs={"label": "ia3", "trainable_params": 3_074, "steps": 100,
                        "candidate": {"methods": [{"name": "ia3", "params": {}}],
                                      "learning_rate": lr, "seed": 0}}))
    data = collect(study)
    assert [(p.number, p.ties, p.method) for p in data.front] == [(0, [1, 2], "ia3 +2 ties")]
    assert "<td>ia3 +2 ties</td>" in render_html(data)
