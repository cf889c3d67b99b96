"""Experiment tracking (``--report-to``): one search on a tiny model, read back with each
library's own reader (TensorBoard's EventAccumulator, MLflow's client on its file store, the
W&B offline run's records), compared with what the study stored."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from autopeft import api
from autopeft.cli import main
from autopeft.results import CONFIRM_OF

SPACE = """
candidates: [lora, full]
learning_rate: 5.0e-3
methods:
  lora: {r: 4, targets: [query, value]}
"""


def wandb_records(path: Path) -> list:
    """The records of a W&B offline run file (``run-<id>.wandb``): LevelDB-log blocks of
    ``wandb_internal_pb2.Record`` protobufs, parsed with wandb's own schema."""
    from wandb.proto import wandb_internal_pb2

    data, block, out, parts = path.read_bytes(), 32768, [], b""
    assert data[:4] == b":W&B"
    pos = 7
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # the block's padding
            pos += left
            continue
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            out.append(wandb_internal_pb2.Record.FromString(parts))
            parts = b""
    return out


def wandb_runs(folder: Path) -> dict[str, dict]:
    """name -> {group, config, history {key: [(step, value)]}, summary, exit code}."""
    import json

    runs = {}
    for path in folder.glob("wandb/offline-run-*/run-*.wandb"):
        run: dict = {"history": {}, "summary": {}}
        for r in wandb_records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run |= {"name": r.run.display_name, "group": r.run.run_group,
                        "config": {u.key: json.loads(u.value_json) for u in r.run.config.update}}
            elif kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                for key, value in items.items():
                    run["history"].setdefault(key, []).append((items["_step"], value))
            elif kind == "summary":
                run["summary"] |= {u.key or "/".join(u.nested_key): json.loads(u.value_json)
                                   for u in r.summary.update}
            elif kind == "exit":
                run["exit"] = r.exit.exit_code
        runs[run["name"]] = run
    return runs


def test_a_search_reports_each_trial_to_tensorboard_mlflow_and_wandb(
        workdir: Path, tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_MODE", "WANDB_DIR",
                "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    (workdir / "space.yaml").write_text(SPACE)
    # full fine-tuning is over --max-params: PRUNED without training; the refit re-trains
    # the front with one more seed (new trials, reported when the search ends)
    search = ["search", "--task", "sst2", "--model", str(tiny_model), "--data-dir",
              str(tiny_data), "--study", "t", "--space", "space.yaml", "--batch-size", "16",
              "--max-length", "32", "--train-samples", "64", "--eval-samples", "32",
              "--rungs", "2,4", "--max-params", "5%", "--quiet"]
    assert main([*search, "--n-trials", "2", "--confirm-seeds", "1",
                 "--report-to", "tensorboard,mlflow,wandb"]) == 0
    # resumed: its trial joins the same parent run
    assert main([*search, "--n-trials", "1", "--report-to", "tensorboard,mlflow,wandb"]) == 0
    study = api.load_study("t")
    trials = {t.number: t for t in study.trials if t.state.name != "WAITING"}
    searched = {n for n, t in trials.items() if CONFIRM_OF not in t.user_attrs}
    refits = set(trials) - searched
    assert len(searched) == 3 and refits, trials
    states = {n: t.state.name for n, t in trials.items()}
    assert "PRUNED" in states.values() and "COMPLETE" in states.values()
    pruned = next(t for t in trials.values() if t.state.name == "PRUNED")
    assert "infeasible" in pruned.user_attrs["prune_reason"]
    folder = workdir / "studies" / "t"

    # TensorBoard: a run (event folder) per trial, read by TensorBoard's own accumulator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    runs = sorted(p.name for p in (folder / "tensorboard").iterdir())
    assert runs == [f"trial-{n:04d}" for n in sorted(trials)]
    for number, trial in trials.items():
        acc = EventAccumulator(str(folder / "tensorboard" / f"trial-{number:04d}"))
        acc.Reload()
        scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
        start = plugin_data_pb2.HParamsPluginData.FromString(
            acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
        hp = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
        assert hp["method"] == trial.user_attrs["label"] and hp["state"] == trial.state.name
        if trial.state.name == "COMPLETE":
            assert scalars["objective/score"][0][1] == pytest.approx(trial.values[0])
            assert scalars["objective/trainable_params"][0][1] == trial.values[1]
        if number in searched and trial.state.name == "COMPLETE":
            assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
            assert {str(s): pytest.approx(v) for s, v in scalars["rung/score"]} == trial.user_attrs["rung_scores"]
        if trial.state.name == "PRUNED":
            assert "train/loss" not in scalars and "objective/score" not in scalars

    # MLflow: nested runs under the study's parent, on the file store
    from mlflow.tracking import MlflowClient

    client = MlflowClient((folder / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("t")
    every = client.search_runs([experiment.experiment_id])
    parent = [r for r in every if r.data.tags.get("autopeft.role") == "study"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    front = parent[0].data.tags["autopeft.front"].split(",")
    assert front and all(int(n) in trials for n in front)
    children = {int(r.data.tags["autopeft.trial"]): r for r in every if r not in parent}
    assert set(children) == set(trials)
    for number, run in children.items():
        trial = trials[number]
        assert run.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        assert run.data.tags["autopeft.state"] == trial.state.name
        assert run.info.status == "FINISHED"
        assert run.data.params["method"] == trial.user_attrs["label"]
        assert float(run.data.params["learning_rate"]) == trial.user_attrs["candidate"]["learning_rate"]
        if trial.state.name == "PRUNED":
            assert run.data.tags["autopeft.reason"] == trial.user_attrs["prune_reason"]
        else:
            assert run.data.metrics["objective/peak_memory_bytes"] == trial.values[2]
        if number in refits:
            assert run.data.tags["autopeft.refit_of"] == str(trial.user_attrs[CONFIRM_OF])
    complete = next(n for n in searched if trials[n].state.name == "COMPLETE")
    losses = client.get_metric_history(children[complete].info.run_id, "train/loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]
    assert [m.value for m in losses] == pytest.approx(
        [v for _, v in scalars_of(folder, complete, "train/loss")])

    # W&B: offline runs grouped by study, their records read back
    runs_wb = wandb_runs(folder)
    assert set(runs_wb) == {f"trial-{n}" for n in trials}
    for number, trial in trials.items():
        run = runs_wb[f"trial-{number}"]
        assert run["group"] == "t" and run["config"]["method"] == trial.user_attrs["label"]
        assert run["summary"]["state"] == trial.state.name and run["exit"] == 0
        if trial.state.name == "COMPLETE":
            assert run["summary"]["objective/score"] == pytest.approx(trial.values[0])
    assert [s for s, _ in runs_wb[f"trial-{complete}"]["history"]["train/loss"]] == [1, 2, 3, 4]
    assert [v for _, v in runs_wb[f"trial-{complete}"]["history"]["rung/score"]] == pytest.approx(
        list(trials[complete].user_attrs["rung_scores"].values()))


def scalars_of(folder: Path, number: int, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / "tensorboard" / f"trial-{number:04d}"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_a_tracker_that_is_not_installed_or_unknown_is_one_line(
        workdir: Path, tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    base = ["search", "--task", "sst2", "--model", str(tiny_model), "--data-dir", str(tiny_data),
            "--n-trials", "1", "--quiet", "--report-to"]
    assert main([*base, "tensorboard,wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("autopeft: error: report_to wandb: the wandb package is not installed; "
                   "pip install wandb (or autopeft[tracking])")
    assert main([*base, "comet"]) == 2
    assert "unknown tracker(s) comet" in capsys.readouterr().err
    assert not (workdir / "studies").exists()  # refused before any study was created
    from autopeft.tracking import parse_report_to

    assert parse_report_to("all") == ["tensorboard", "mlflow"]  # the installed ones
    assert parse_report_to("none") == [] and parse_report_to(None) == []
    assert parse_report_to(["MLflow", " tensorboard"]) == ["mlflow", "tensorboard"]
