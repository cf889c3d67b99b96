"""Any dataset ``datasets`` loads, ``--task hf:NAME[:CONFIG]``: written here with ``datasets``
itself (``save_to_disk`` and parquet files in ``tmp_path``), read through the same code path
as a hub id (``tasks.load_hub_dataset``): class names from ``ClassLabel``, the splits, the
held-out share, the one-line errors, and a search on it that completes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import autopeft.tasks as tasks
from autopeft import api
from autopeft.cli import main
from autopeft.errors import UserError
from autopeft.settings import DataSettings
from autopeft.tasks import OwnData, get_task, hold_out, load_task

from conftest import sst2_rows

datasets = pytest.importorskip("datasets")

LORA_SPACE = """
name: lora-only
candidates: [lora]
learning_rate: 5.0e-3
methods:
  lora: {r: {choices: [2, 4]}, targets: [query, value]}
"""


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_dataset`` of data files writes an Arrow cache: keep it in ``tmp_path``, and
    forget what earlier tests loaded (paths are reused across tests)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(tasks, "_DATASETS", {})


def _sst2(split: str, n: int) -> dict[str, list]:
    rows = sst2_rows(split, n)
    return {"sentence": [s for s, _ in rows], "label": [int(lab) for _, lab in rows]}


def write_saved(folder: Path, n_train: int = 200, validation: bool = False) -> Path:
    """SST-2 rows as a DatasetDict with a ``ClassLabel`` (negative, positive) and an
    unlabelled test split (labels -1, as on the hub), written with ``save_to_disk``."""
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    parts = {"train": _sst2("train", n_train),
             "test": {"sentence": ["a film", "another film"], "label": [-1, -1]}}
    if validation:
        parts["validation"] = _sst2("validation", 48)
    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict(v, features=features)
                               for k, v in parts.items()})
    dd.save_to_disk(str(folder))
    return folder


def write_parquet(folder: Path) -> Path:
    """Sentence pairs with string labels (no ClassLabel) as parquet files per split."""
    folder.mkdir(parents=True)
    for split, n in (("train", 40), ("validation", 12)):
        rows = sst2_rows(split, n)
        datasets.Dataset.from_dict({
            "premise": [s for s, _ in rows], "hypothesis": [s[::-1] for s, _ in rows],
            "verdict": ["yes" if lab == "1" else "no" for _, lab in rows],
        }).to_parquet(str(folder / f"{split}.parquet"))
    return folder


def test_class_names_come_from_the_classlabel_feature(tmp_path: Path) -> None:
    spec = f"hf:{write_saved(tmp_path / 'ds', validation=True)}"
    own = OwnData(text_columns=("sentence",))
    task = get_task(spec, own)
    assert task.label_names == ("negative", "positive") and task.num_labels == 2
    assert task.metric == "accuracy" and task.kind == "classification"
    data = load_task(spec, own=own)
    assert data.note == ""  # a labelled validation split: scored on it
    assert len(data.validation["label"]) == 48 and len(data.train["label"]) == 200
    assert data.train["label"] == _sst2("train", 200)["label"]  # indices kept in name order


def test_parquet_files_load_through_the_same_path(tmp_path: Path) -> None:
    """A folder of data files goes to ``load_dataset``; string labels are classes, sorted;
    two text columns make a pair."""
    spec = f"hf:{write_parquet(tmp_path / 'pq')}"
    own = OwnData(text_columns=("premise", "hypothesis"), label_column="verdict")
    data = load_task(spec, own=own)
    assert data.task.label_names == ("no", "yes") and data.task.text_columns == ("premise", "hypothesis")
    assert data.task.hub_splits == {"train": "train", "validation": "validation"}
    assert len(data.train["verdict"]) == 40 and len(data.validation["verdict"]) == 12
    assert set(data.train["verdict"]) == {0, 1}


def test_without_a_labelled_validation_split_a_seeded_share_is_held_out(tmp_path: Path) -> None:
    """The test split's labels are -1: not labelled, never scored on; a seeded share of train
    is held out instead: the same rows for the same seed, disjoint from training."""
    spec = f"hf:{write_saved(tmp_path / 'ds')}"
    own = OwnData(text_columns=("sentence",), validation_share=0.2)
    a = load_task(spec, seed=3, own=own)
    b = load_task(spec, seed=3, own=own)
    c = load_task(spec, seed=4, own=own)
    assert "seeded 20% of split 'train' (40 rows)" in a.note
    assert a.validation == b.validation and a.train == b.train
    assert a.validation["sentence"] != c.validation["sentence"]
    assert len(a.validation["sentence"]) == 40 and len(a.train["sentence"]) == 160
    all_rows = _sst2("train", 200)["sentence"]
    assert sorted(a.validation["sentence"] + a.train["sentence"]) == sorted(all_rows)  # disjoint


def test_hold_out_is_the_own_file_rule() -> None:
    """The held-out share is one helper for own files and datasets (10%: n // 10 rows, as
    before the share had a flag)."""
    rows = {"x": list(range(57))}
    train, val = hold_out(rows, 0.1, 0, "x")
    assert len(val["x"]) == 5 and sorted(train["x"] + val["x"]) == rows["x"]


@pytest.mark.parametrize("own, message", [
    (OwnData(), "lacks column(s) text (has sentence, label); choose them with --text-column"),
    (OwnData(text_columns=("sentence",), label_column="stars"), "lacks column(s) stars (has sentence, label)"),
    (OwnData(text_columns=("sentence",), train_split="training"),
     "has no split 'training' (has train, test); choose one with --train-split"),
    (OwnData(text_columns=("sentence",), validation_split="dev"),
     "has no split 'dev' (has train, test); choose one with --validation-split"),
    (OwnData(text_columns=("sentence",), train_split="test"), "split 'test' is not labelled"),
    (OwnData(text_columns=("sentence",), validation="dev.csv"), "--validation names a file"),
    (OwnData(text_columns=("sentence",), kind="regression"), "cannot be a regression target"),
    (OwnData(text_columns=("a", "b", "c")), "one or two --text-column"),
])
def test_mistakes_are_one_line_errors(tmp_path: Path, own: OwnData, message: str) -> None:
    spec = f"hf:{write_saved(tmp_path / 'ds')}"
    with pytest.raises(UserError, match="^.*$") as err:
        load_task(spec, own=own)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_unlabelled_validation_split_is_refused_when_named(tmp_path: Path) -> None:
    spec = f"hf:{write_saved(tmp_path / 'ds')}"
    with pytest.raises(UserError, match="split 'test' is not labelled .*--validation-share"):
        load_task(spec, own=OwnData(text_columns=("sentence",), validation_split="test"))


def test_unknown_datasets_and_wrong_options(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot load dataset"):
        get_task(f"hf:{tmp_path / 'nothing-here'}")
    with pytest.raises(UserError, match="hf: needs a dataset"):
        get_task("hf:")
    with pytest.raises(UserError, match="--train-split and --validation-split are for hub"):
        get_task("sst2", OwnData(validation_split="test"))
    with pytest.raises(UserError, match="validation_share must be between 0 and 1"):
        DataSettings(task="sst2", validation_share=1.0)


def test_a_search_on_a_dataset_completes_and_stores_its_data_settings(
        workdir: Path, tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    """Two trials through the CLI; the data options are stored with the study (so a worker
    or a resume sees the same data) and exported in candidate.yaml."""
    folder = write_saved(workdir / "ds")
    space = workdir / "lora.yaml"
    space.write_text(LORA_SPACE)
    args = ["search", "--task", f"hf:{folder}", "--model", str(tiny_model), "--study", "hub",
            "--text-column", "sentence", "--validation-share", "0.25", "--subset-seed", "1",
            "--space", str(space), "--n-trials", "2", "--no-warm-start", "--pruner", "none",
            "--batch-size", "16", "--max-length", "48", "--quiet"]
    assert main(args) == 0
    study = api.load_study("hub")
    data = study.user_attrs["data"]
    assert data["task"] == f"hf:{folder}" and data["text_columns"] == ["sentence"]
    assert data["validation_share"] == 0.25 and data["train_split"] == "train"
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and all(0.0 <= t.values[0] <= 1.0 for t in done)
    capsys.readouterr()
    assert main(["show", "hub", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    out = workdir / "export"
    api.export(study, done[0].number, str(out))
    exported = yaml.safe_load((out / "candidate.yaml").read_text())
    assert exported["data"]["validation_share"] == 0.25
    assert exported["data"]["text_columns"] == ["sentence"]
    # a resume with another held-out share would score on other rows: refused, one line
    changed = [a if a != "0.25" else "0.3" for a in args]
    capsys.readouterr()
    assert main(changed) == 2
    assert "exists with a different data" in capsys.readouterr().err
