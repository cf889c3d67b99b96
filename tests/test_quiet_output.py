"""No stray line from a dependency: building a model (peft imports bitsandbytes, which looks up
a CPU kernel on the Hugging Face hub when it is imported) prints only autopeft's own lines,
online or offline (``models.import_bitsandbytes_quietly``)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# One worker runs this file (pytest-xdist): its online and offline look-ups share the
# Hugging Face hub cache (a search here failed once with the other worker running this file's
# online look-up; its output was not kept, so the shared cache is a suspicion, not a finding).
pytestmark = pytest.mark.xdist_group("test_quiet_output")

# What bitsandbytes' hub kernel look-up prints: kernels' offline notice, bitsandbytes' failure.
STRAY = ("kernels-community", "publisher trust", "gemm_4bit_forward")

BUILD_LORA = """
import sys
from transformers import AutoModelForSequenceClassification
from autopeft.build import build, count_trainable
from autopeft.candidate import Candidate, MethodSpec

base = AutoModelForSequenceClassification.from_pretrained(sys.argv[1])
model = build(base, Candidate([MethodSpec("lora", {"r": 2})]))
assert "bitsandbytes" in sys.modules or not __import__("importlib").util.find_spec("bitsandbytes")
print("built", count_trainable(model))
"""


def _env(offline: bool) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def _stray(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(s in line for s in STRAY)]


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "online"])
def test_building_a_lora_candidate_prints_nothing_of_bitsandbytes(tiny_model: Path,
                                                                   offline: bool) -> None:
    proc = subprocess.run([sys.executable, "-c", BUILD_LORA, str(tiny_model)],
                          capture_output=True, text=True, env=_env(offline), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("built ")
    assert _stray(proc.stdout + proc.stderr) == []


def test_kernels_still_importable_after_the_quiet_import() -> None:
    """The look-up is off only while bitsandbytes imports; ``kernels`` is not broken."""
    code = ("from autopeft.models import import_bitsandbytes_quietly as q; q(); q(); "
            "import kernels; print(kernels.get_kernel.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(True), timeout=300)
    if "No module named 'kernels'" in proc.stderr:
        pytest.skip("kernels is not installed here")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "get_kernel"
    assert _stray(proc.stderr) == []


@pytest.mark.slow
def test_a_lora_search_prints_only_autopeft_lines(tiny_model: Path, tiny_data: Path,
                                                  tmp_path: Path) -> None:
    space = tmp_path / "lora.yaml"
    space.write_text("candidates: [lora]\nmethods:\n  lora:\n    r: {choices: [2, 4]}\n")
    cmd = [sys.executable, "-m", "autopeft", "search", "--task", "sst2", "--model",
           str(tiny_model), "--data-dir", str(tiny_data), "--space", str(space), "--n-trials", "1",
           "--no-warm-start", "--train-samples", "64", "--eval-samples", "32",
           "--batch-size", "16", "--max-length", "32", "--study", "quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(True), cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert _stray(proc.stdout + proc.stderr) == []
