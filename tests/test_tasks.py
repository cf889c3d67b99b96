"""GLUE tasks and own data: loaders on small files in the offline layout, metrics against
hand-computed values, and a 2-trial search for every task kind."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autopeft.cli import main
from autopeft.errors import UserError
from autopeft.metrics import METRICS
from autopeft.tasks import TASKS, OwnData, load_task

WORDS = "a fine good bad movie film plot dull great awful story acting".split()


def sentence(i: int) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(3 + i % 4))


def write_glue(root: Path, name: str, n: int = 40) -> None:
    task = TASKS[name]
    folder = root / "glue" / name
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", task.validation, *task.extra_validation):
        with open(folder / f"{split}.tsv", "w") as fh:
            fh.write("\t".join([*task.text_columns, "label"]) + "\n")
            for i in range(n):
                label = f"{(i % 26) / 5:.1f}" if task.kind == "regression" else str(i % task.num_labels)
                fh.write("\t".join([sentence(i + j) for j in range(len(task.text_columns))] + [label]) + "\n")


# --- metrics, by hand -----------------------------------------------------------------------

def test_accuracy_and_matthews_by_hand() -> None:
    preds, labels = [1, 0, 1, 1], [1, 0, 0, 1]
    assert METRICS["accuracy"](preds, labels)["score"] == 0.75
    # TP=2 TN=1 FP=1 FN=0: (2*1 - 1*0) / sqrt(3*2*1*2) = 2/sqrt(12)
    assert METRICS["matthews"](preds, labels)["score"] == pytest.approx(2 / math.sqrt(12))


def test_f1_accuracy_by_hand() -> None:
    m = METRICS["f1_accuracy"]([1, 0, 1, 1], [1, 0, 0, 1])
    # precision 2/3, recall 1: F1 = 0.8; accuracy 0.75; score the mean
    assert m["f1"] == pytest.approx(0.8) and m["accuracy"] == 0.75
    assert m["score"] == pytest.approx(0.775)


def test_pearson_spearman_by_hand() -> None:
    m = METRICS["pearson_spearman"]([1.0, 2.0, 3.0, 5.0], [1.0, 2.0, 3.0, 4.0])
    # Spearman: same ranks -> 1. Pearson of x=[1,2,3,5], y=[1,2,3,4]: cov 4.25/3, sd ...
    x, y = [1, 2, 3, 5], [1, 2, 3, 4]
    mx, my = sum(x) / 4, sum(y) / 4
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    r = cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert m["spearman"] == pytest.approx(1.0) and m["pearson"] == pytest.approx(r)
    assert m["score"] == pytest.approx((1 + r) / 2)
    assert METRICS["pearson_spearman"]([2.0, 2.0], [1.0, 3.0])["score"] == 0.0  # constant


# --- loaders ----------------------------------------------------------------------------------

# SST-2 is tested on the real ../shared/data copy (test_data.py)
GLUE = sorted(n for n, t in TASKS.items() if t.hub and t.hub[0] == "nyu-mll/glue" and n != "sst2")


@pytest.mark.parametrize("name", GLUE)
def test_every_glue_task_loads_from_the_offline_layout(name: str, tmp_path: Path) -> None:
    write_glue(tmp_path, name)
    data = load_task(name, str(tmp_path))
    task = TASKS[name]
    assert set(data.train) == {*task.text_columns, "label"}
    assert len(data.validation["label"]) == 40
    if task.kind == "regression":
        assert data.train["label"][6] == pytest.approx(1.2)
    else:
        assert set(data.train["label"]) == set(range(task.num_labels))
    assert set(data.extra) == set(task.extra_validation)


def test_jsonl_layout_and_missing_split(tmp_path: Path) -> None:
    folder = tmp_path / "glue" / "rte"
    folder.mkdir(parents=True)
    rows = [{"sentence1": sentence(i), "sentence2": sentence(i + 1), "label": i % 2} for i in range(6)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(UserError, match="validation"):
        load_task("rte", str(tmp_path))
    (folder / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert load_task("rte", str(tmp_path)).validation["sentence2"][0] == sentence(1)


def test_own_csv_with_string_labels_and_held_out_validation(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("review,verdict\n" + "".join(f'"{sentence(i)}, number {i}",{["neg", "pos"][i % 2]}\n'
                                                  for i in range(50)))
    own = OwnData(text_columns=("review",), label_column="verdict")
    data = load_task(f"csv:{path}", own=own)
    assert data.task.kind == "classification" and data.task.label_names == ("neg", "pos")
    assert len(data.validation["verdict"]) == 5 and len(data.train["verdict"]) == 45
    assert set(data.train["verdict"]) == {0, 1}
    assert not set(data.validation["review"]) & set(data.train["review"])  # held out, not copied
    again = load_task(f"csv:{path}", own=own)
    assert again.validation == data.validation  # the same seeded split every time


def test_own_jsonl_regression_is_inferred_and_overridable(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text("\n".join(json.dumps({"text": sentence(i), "label": i / 10}) for i in range(20)))
    assert load_task(f"jsonl:{path}").task.kind == "regression"
    ints = tmp_path / "ints.jsonl"
    ints.write_text("\n".join(json.dumps({"text": sentence(i), "label": i % 3}) for i in range(20)))
    assert load_task(f"jsonl:{ints}").task.num_labels == 3
    forced = load_task(f"jsonl:{ints}", own=OwnData(kind="regression"))
    assert forced.task.kind == "regression" and isinstance(forced.train["label"][0], float)


def test_own_data_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_task(f"csv:{tmp_path / 'nope.csv'}")
    (tmp_path / "one.csv").write_text("text,label\na,x\nb,x\n")
    with pytest.raises(UserError, match="only one label"):
        load_task(f"csv:{tmp_path / 'one.csv'}")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(UserError, match="bad.jsonl:2"):
        load_task(f"jsonl:{tmp_path / 'bad.jsonl'}")


# --- a 2-trial search per task kind ---------------------------------------------------------

def search(model: Path, task: str, *extra: str) -> list[dict]:
    argv = ["search", "--task", task, "--model", str(model), "--n-trials", "2", "--study", "k",
            "--batch-size", "8", "--max-length", "32", "--quiet", "--json", "--sampler", "random",
            *extra]
    return argv


def multiple_of(value: float, n: int) -> bool:
    """``value`` is a count of right answers out of ``n``: k / n for a whole k."""
    return abs(value * n - round(value * n)) < 1e-9 and 0 <= value <= 1


def completed(study_name: str) -> list:
    import autopeft

    trials = [t for t in autopeft.load_study(study_name).trials if t.state.name != "WAITING"]
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"], \
        [t.user_attrs.get("fail_reason") for t in trials]
    return trials


@pytest.mark.parametrize("name", ["rte", "stsb", "mnli"])
def test_two_trial_search_per_glue_kind(name: str, workdir: Path, tiny_model: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    write_glue(workdir / "data", name, n=24)
    assert main(search(tiny_model, name, "--data-dir", str(workdir / "data"))) == 0
    capsys.readouterr()
    assert main(["show", "k", "--all", "--json"]) == 0
    shown = {t["number"]: t for t in json.loads(capsys.readouterr().out)}
    for t in completed("k"):
        metrics = t.user_attrs["metrics"]
        assert metrics["score"] == pytest.approx(shown[t.number]["score"]) == t.values[0]
        assert t.user_attrs["steps"] == 3  # 24 rows, batch 8
        if name == "stsb":  # the mean of two correlations
            assert -1 <= metrics["pearson"] <= 1 and -1 <= metrics["spearman"] <= 1
            assert metrics["score"] == pytest.approx((metrics["pearson"] + metrics["spearman"]) / 2)
        else:  # right answers out of the 24 validation rows
            assert multiple_of(metrics["accuracy"], 24) and metrics["score"] == metrics["accuracy"]
        if name == "mnli":
            assert multiple_of(metrics["validation_mismatched/accuracy"], 24)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "tsv"])
def test_two_trial_search_on_own_file(kind: str, workdir: Path, tiny_model: Path) -> None:
    """Two text columns and a label column, named: 30 rows, 3 held out for validation."""
    rows = [(sentence(i), sentence(i + 3), ["no", "yes"][i % 2]) for i in range(30)]
    path = workdir / f"pairs.{kind}"
    if kind == "jsonl":
        path.write_text("\n".join(json.dumps({"a": a, "b": b, "y": y}) for a, b, y in rows))
    else:
        sep = "," if kind == "csv" else "\t"
        path.write_text(sep.join(["a", "b", "y"]) + "\n"
                        + "".join(sep.join(r) + "\n" for r in rows))
    assert main(search(tiny_model, f"{kind}:{path}", "--text-column", "a", "--text-column", "b",
                       "--label-column", "y")) == 0
    import autopeft

    data = autopeft.load_study("k").user_attrs["data"]
    assert (data["text_columns"], data["label_column"]) == (["a", "b"], "y")
    for t in completed("k"):
        a = t.user_attrs
        assert a["samples"] == 27 and a["steps"] == 4  # 27 training rows, batch 8
        assert multiple_of(a["metrics"]["accuracy"], 3) and a["metrics"]["score"] == t.values[0]
