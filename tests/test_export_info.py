"""``ExportInfo``, the typed candidate.yaml: it reads and writes the file exactly as exports
have always been written (old ones load), checks every part, and is built from a study's
trial (``trial_info``) without training anything."""
from __future__ import annotations

import copy
import re
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from autopeft.candidate import Candidate
from autopeft.errors import UserError
from autopeft.export import ExportInfo, Measurements, Objectives, model_card, read_candidate
from autopeft.runner import Fidelity
from autopeft.settings import DataSettings, TrainSettings

DATA = {"task": "sst2", "data_dir": "/data", "train_samples": 32, "eval_samples": 16,
        "subset_seed": 0, "text_columns": None, "label_column": None, "validation": None, "task_type": None,
        "no_header": False, "validation_share": 0.1, "train_split": "train",
        "validation_split": None}
TRAIN = {"epochs": 1.0, "batch_size": 8, "eval_batch_size": 128, "max_length": 32,
         "warmup_ratio": 0.06, "weight_decay": 0.01, "max_grad_norm": 1.0, "grad_accum": 1,
         "gradient_checkpointing": False, "num_beams": 1, "max_new_tokens": 64, "device": "cpu",
         "precision": "auto"}
CANDIDATE = {"methods": [{"name": "lora", "params": {"r": 2}}], "learning_rate": 0.001, "seed": 2}
# A refit trial's candidate.yaml as `autopeft export` wrote it before ExportInfo existed.
EXPORTED = {
    "study": "s", "trial": 1, "model": "/models/tiny", "task": "sst2", "data": DATA,
    "train": TRAIN, "candidate": CANDIDATE,
    "objectives": {"score": 0.625, "trainable_params": 1000, "peak_memory_bytes": 12000,
                   "fidelity": "refit", "steps": 12, "trainable_fraction": 0.01,
                   "wall_seconds": 3.0, "confirm_mean": 0.625, "confirm_std": 0.035,
                   "confirm_seeds": [2, 3], "search_score": 0.5},
    "fidelity": {"schedule_steps": 12, "stop_at": 12}}
# The first exports: objectives straight from Optuna's values (floats), no steps or
# fidelity, and the data subsets' seed under its old name.
FIRST = {"study": "s", "trial": 0, "model": "m", "task": "sst2",
         "data": {k if k != "subset_seed" else "seed": v for k, v in DATA.items()},
         "train": TRAIN, "candidate": CANDIDATE,
         "objectives": {"score": 0.5, "trainable_params": 1000.0, "peak_memory_bytes": 9000.0,
                        "wall_seconds": 1.5, "confirm_seeds": 3}}


def yaml_text(raw: dict) -> str:
    return yaml.safe_dump(raw, sort_keys=False)


def test_a_candidate_yaml_round_trips_to_the_same_text(tmp_path: Path) -> None:
    (tmp_path / "candidate.yaml").write_text(yaml_text(EXPORTED))
    info = ExportInfo.read(tmp_path)
    assert info.to_dict() == EXPORTED and read_candidate(tmp_path) == EXPORTED
    (tmp_path / "again").mkdir()
    info.write(tmp_path / "again")
    assert (tmp_path / "again" / "candidate.yaml").read_text() == yaml_text(EXPORTED)


def test_a_first_version_candidate_yaml_loads_and_keeps_its_layout(tmp_path: Path) -> None:
    (tmp_path / "candidate.yaml").write_text(yaml_text(FIRST))
    info = ExportInfo.read(tmp_path)
    assert info.data.subset_seed == 0 and info.objectives.trainable_params == 1000.0
    # written back as it was, but for the seed's new name (settings.DataSettings)
    assert yaml_text(info.to_dict()) == yaml_text(FIRST | {"data": DATA})


def test_the_parts_are_typed() -> None:
    info = ExportInfo.from_dict(EXPORTED, "x")
    assert info.data == DataSettings(**DATA) and info.train == TrainSettings(**TRAIN)
    assert info.candidate == Candidate.from_dict(CANDIDATE) and info.candidate.seed == 2
    assert info.fidelity == Fidelity(schedule_steps=12, stop_at=12)
    assert info.objectives.confirm_seeds == [2, 3] and info.objectives.fidelity == "refit"
    assert (info.study, info.trial) == ("s", 1)


def test_settings_added_since_a_file_was_written_are_written_with_their_defaults() -> None:
    old = copy.deepcopy(FIRST)
    for key in ("no_header", "task_type", "validation_share", "train_split", "validation_split"):
        del old["data"][key]
    del old["train"]["precision"]
    del old["study"], old["trial"], old["objectives"]
    written = ExportInfo.from_dict(old, "x").to_dict()
    assert written["data"] == DATA and written["train"] == TRAIN
    assert list(written) == ["model", "task", "data", "train", "candidate"]


BAD = {
    "not-a-map": (lambda i: ["a", "list"], "x: not a candidate.yaml written by `autopeft export`"),
    "unknown": (lambda i: i | {"extra": 1}, "x: unknown key(s) extra"),
    "missing": (lambda i: {k: v for k, v in i.items() if k != "train"}, "x: lacks train"),
    "model": (lambda i: i | {"model": ""}, "x: model must be a non-empty string"),
    "trial": (lambda i: i | {"trial": "1"}, "x: trial must be a whole number, got '1'"),
    "study": (lambda i: i | {"study": 3}, "x: study must be a string"),
    "data-task": (lambda i: i | {"task": "cola"}, "x: data.task 'sst2' differs from task 'cola'"),
    "data-no-task": (lambda i: i | {"data": {"train_samples": 100}}, "x: data: data lacks task"),
    "train": (lambda i: i | {"train": {**TRAIN, "batch_size": 0}},
              "x: train: batch_size must be >= 1"),
    "candidate": (lambda i: i | {"candidate": {**CANDIDATE, "seed": -1}},
                  "x: candidate: seed must be >= 0"),
    "fidelity": (lambda i: i | {"fidelity": {"stop_at": 0}}, "x: fidelity: stop_at must be >= 1"),
    "objective-key": (lambda i: i | {"objectives": {"speed": 1}},
                      "x: objectives: objectives has unknown key(s) speed"),
    "objective-value": (lambda i: i | {"objectives": {"score": "high"}},
                        "x: objectives: score must be a number"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_part_is_checked_and_named(case: str) -> None:
    change, expected = BAD[case]
    with pytest.raises(UserError) as err:
        ExportInfo.from_dict(change(copy.deepcopy(EXPORTED)), "x")
    assert str(err.value).startswith(expected), str(err.value)


def test_overrides_are_applied_and_checked() -> None:
    info = ExportInfo.from_dict(EXPORTED, "x")
    other = info.overridden("cfg", model="/elsewhere", seed=7, device="cpu")
    assert (other.model, other.candidate.seed, other.train.device) == ("/elsewhere", 7, "cpu")
    assert info.candidate.seed == 2 and info.overridden("cfg") == info  # no override: the same
    with pytest.raises(UserError, match="^cfg: candidate: seed must be >= 0"):
        info.overridden("cfg", seed=-1)
    with pytest.raises(UserError, match="^cfg: train: device must be"):
        info.overridden("cfg", device="quantum")


def test_measurements_keep_the_metrics_json_layout() -> None:
    outcome = SimpleNamespace(
        result=SimpleNamespace(score=0.75, peak_memory=2048, memory_method="tensor accounting",
                               seconds=1.23456, steps=12, final_loss=0.5,
                               metrics={"accuracy": 0.75}),
        trainable=500, trained=480, total=10_000)
    m = Measurements.of(outcome, seed=4)
    expected = {
        "score": 0.75, "trainable_params": 500, "trained_params": 480, "stored_params": 500,
        "total_params": 10_000, "trainable_fraction": 0.05, "peak_memory_bytes": 2048,
        "memory_method": "tensor accounting", "wall_seconds": 1.235, "steps": 12,
        "final_loss": 0.5, "metrics": {"accuracy": 0.75}, "seed": 4}
    assert m.to_dict() == expected and list(m.to_dict()) == list(expected)  # and in order
    card = model_card(ExportInfo.from_dict(EXPORTED, "x"), m)
    assert "| this export (re-trained) | 0.7500 | 500 (5.0%) | 2.0 KiB |" in card
    assert "| in the search | 0.6250 | 1,000 (1.0%) |" in card
    assert "Confirmed over 2 seeds: score 0.6250 ± 0.0350" in card


def test_a_card_without_study_or_objectives() -> None:
    raw = {k: v for k, v in FIRST.items() if k not in ("study", "trial", "objectives")}
    card = model_card(ExportInfo.from_dict(raw, "x"))
    assert "from study `?`, trial ?" in card and "in the search" not in card
    assert "configuration only" in card


# -- trial_info: a study's trial as an ExportInfo (no training) ----------------------------

def fake_study(plan: bool = True):
    import optuna

    from autopeft.search.plan import Plan
    from autopeft.results import DIRECTIONS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", directions=list(DIRECTIONS))
    attrs = {"task": "sst2", "model": "/models/tiny", "data": DATA, "train": TRAIN}
    if plan:
        attrs["plan"] = Plan(max_steps=12, trial_steps=4, refit_steps=12, rungs=[4]).to_dict()
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1000, 10_000], user_attrs={
        "candidate": CANDIDATE, "label": "lora", "steps": 4, "trainable_params": 1000,
        "trainable_fraction": 0.01, "wall_seconds": 1.5}))
    study.add_trial(optuna.trial.create_trial(values=[0.625, 1000, 12_000], user_attrs={
        "candidate": CANDIDATE, "label": "lora", "steps": 12, "confirm_of": 0,
        "confirm_scores": [0.6, 0.65], "confirm_seeds": [2, 3], "confirm_mean": 0.625,
        "confirm_std": 0.035, "search_score": 0.5, "trainable_fraction": 0.01,
        "wall_seconds": 3.0}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                              user_attrs={"candidate": CANDIDATE}))
    return study


def test_trial_info_is_what_export_writes() -> None:
    from autopeft.trial_info import trial_info

    study = fake_study()
    assert trial_info(study, 1).to_dict() == EXPORTED
    search = trial_info(study, 0, model="/moved")
    assert search.model == "/moved" and search.fidelity == Fidelity(12, 4)
    assert search.objectives == Objectives(score=0.5, trainable_params=1000,
                                           peak_memory_bytes=10_000, fidelity="search", steps=4,
                                           trainable_fraction=0.01, wall_seconds=1.5)
    assert trial_info(fake_study(plan=False), 0).fidelity is None


@pytest.mark.parametrize("trial,expected", [(2, "trial 2 is fail with no score"),
                                            (9, "study 's' has no trial 9 (trials 0..2)")])
def test_trial_info_refuses_trials_without_a_result(trial: int, expected: str) -> None:
    from autopeft.trial_info import trial_info

    with pytest.raises(UserError, match=re.escape(expected)):
        trial_info(fake_study(), trial)


def test_trial_info_checks_the_study_settings() -> None:
    from autopeft.trial_info import trial_info

    study = fake_study()
    study.set_user_attr("train", {**TRAIN, "device": "quantum"})
    with pytest.raises(UserError, match=r"^study 's': train: device must be"):
        trial_info(study, 0)


def test_export_info_is_a_dataclass_of_the_file_keys() -> None:
    from autopeft.export import INFO_KEYS

    assert tuple(f.name for f in dataclasses.fields(ExportInfo)) == INFO_KEYS
