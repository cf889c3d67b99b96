"""``export --best/--pick`` writes a candidate.yaml that ``autopeft train --config`` re-trains
to the same candidate: same trainable parameter count, same score with the same seed (CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from autopeft.cli import main

SPACE = """
name: two-methods
candidates: [lora, bitfit]
learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
methods:
  lora: {r: {choices: [2, 4]}, targets: [query, value]}
  bitfit: {layers: all}
"""


def test_exported_yaml_retrains_to_the_same_candidate(
        workdir: Path, tiny_model: Path, tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    space = workdir / "space.yaml"
    space.write_text(SPACE)
    assert main(["search", "--task", "sst2", "--model", str(tiny_model), "--data-dir",
                 str(tiny_data), "--study", "t", "--space", str(space), "--n-trials", "2",
                 "--train-samples", "96", "--eval-samples", "48", "--batch-size", "16",
                 "--max-length", "32", "--sampler", "random", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["show", "t", "--all", "--json"]) == 0
    trials = {r["number"]: r for r in json.loads(capsys.readouterr().out) if r["score"] is not None}
    assert trials, "the tiny study must complete a trial"
    best = max(trials.values(), key=lambda r: (r["score"], -r["trainable_params"],
                                               -r["peak_memory_bytes"], -r["number"]))

    out = workdir / "exp"
    assert main(["export", "t", "--best", "score", "--out", str(out)]) == 0
    assert f"exported trial {best['number']} to" in capsys.readouterr().out
    info = yaml.safe_load((out / "candidate.yaml").read_text())
    assert info["trial"] == best["number"] and info["candidate"] == best["candidate"]
    card = (out / "README.md").read_text()
    assert "autopeft train --config candidate.yaml" in card and info["model"] in card

    trained = workdir / "trained"
    assert main(["train", "--config", str(out / "candidate.yaml"), "--out", str(trained),
                 "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["trainable_params"] == best["trainable_params"]
    assert measured["score"] == pytest.approx(best["score"], abs=1e-9)
    import autopeft  # the score may be the majority class's for any run: the loss is not

    searched = autopeft.load_study("t").trials[best["number"]].user_attrs
    assert measured["final_loss"] == pytest.approx(searched["final_loss"], rel=1e-6)
    assert measured["steps"] == searched["steps"]
    assert measured["seed"] == best["candidate"]["seed"]
    saved = json.loads((trained / "metrics.json").read_text())
    assert saved["trainable_params"] == best["trainable_params"]
    for name in ("candidate.yaml", "autopeft_weights.safetensors", "README.md"):
        assert (trained / name).is_file(), name
    card = (trained / "README.md").read_text()
    assert "this export (re-trained)" in card and f"{best['trainable_params']:,}" in card

    # --pick with the same meaning picks the same trial.
    assert main(["export", "t", "--pick", f"score>={best['score']},min params", "--out",
                 str(workdir / "picked")]) == 0
    assert f"exported trial {best['number']} to" in capsys.readouterr().out

    # A non-empty --out is refused before any training; a bad config is one line.
    assert main(["train", "--config", str(out), "--out", str(trained)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    bad = workdir / "bad.yaml"
    bad.write_text("candidate: {methods: []}\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks model, task, data, train" in err[0]
