"""The examples run as users run them (``python examples/X.py``), on their tiny offline
causal LM: a study of complete trials, the front printed, and none of the Trainer's own
progress bars or log dicts among autopeft's lines."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from autopeft import api

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script, study", [("trainer_search.py", "trainer-example"),
                                           ("sft_search.py", "sft-example")])
def test_an_example_searches_with_its_own_trainer(script: str, study: str, workdir: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [script, "--out", str(workdir / "out"), "--n-trials", "1"])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    printed = capsys.readouterr()
    trials = api.load_study(study).trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 1 and done[0].user_attrs["steps"] == 8  # the plan: the Trainer's length
    assert done[0].user_attrs["label"] == "lora"  # the first warm-start recipe
    front = api.front(study)
    assert front and all(f"trial {r.number}: {r.label}" in printed.out for r in front)
    search = printed.err[printed.err.index("plan ("):]  # from the search's start: autopeft's lines
    assert "'loss'" not in printed.out + search and "it/s" not in search, search
    assert "Warning" not in search and "[RANK" not in search, search


def test_paths_are_taken_as_os_pathlike_everywhere(workdir: Path, tiny_model: Path,
                                                   tiny_data: Path) -> None:
    """A ``pathlib.Path`` wherever a path is taken: the model, the data, the space, the
    storage, the export folder (a notebook's paths are Paths)."""
    space = workdir / "space.yaml"
    space.write_text("candidates: [lora]\nlearning_rate: 1.0e-3\n")
    study = api.search("sst2", tiny_model, data_dir=tiny_data, space=space, study="p",
                       storage=f"sqlite:///{workdir / 'p.db'}", n_trials=1, train_samples=32,
                       eval_samples=16, batch_size=16, max_length=32)
    trial = study.trials[0]
    assert trial.state.name == "COMPLETE" and study.user_attrs["model"] == str(tiny_model)
    assert study.user_attrs["data"]["data_dir"] == str(tiny_data)
    out = api.export(study, trial.number, workdir / "exported", model=tiny_model)
    assert (out / "candidate.yaml").is_file()
    trained = api.train(out / "candidate.yaml", workdir / "trained", model=tiny_model,
                        data_dir=tiny_data)
    assert trained["trainable_params"] == trial.user_attrs["trainable_params"]
    assert (workdir / "trained" / "metrics.json").is_file()
