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
    monkeypatch.setattr(sys, "argv", [script, "--out", str(workdir / "out"), "--n-trials", "2"])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    printed = capsys.readouterr()
    trials = api.load_study(study).trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and all(t.user_attrs["steps"] == 8 for t in done)
    assert any(t.user_attrs["label"] == "lora" for t in done)
    front = api.front(study)
    assert front and all(f"trial {r.number}: {r.label}" in printed.out for r in front)
    search = printed.err[printed.err.index("plan ("):]  # from the search's start: autopeft's lines
    assert "'loss'" not in printed.out + search and "it/s" not in search, search
    assert "Warning" not in search and "[RANK" not in search, search
