"""End to end through the CLI on a tiny random BERT and a few hundred real SST-2 rows."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autopeft.cli import main

LORA_SPACE = """
name: lora-only
candidates: [lora]
learning_rate: 5.0e-3
methods:
  lora: {r: 4, targets: [query, value]}
"""


def search_args(model: Path, data: Path, *extra: str) -> list[str]:
    return ["search", "--task", "sst2", "--model", str(model), "--data-dir", str(data),
            "--study", "t", "--batch-size", "16", "--max-length", "48", "--quiet", *extra]


def show_json(capsys: pytest.CaptureFixture, *extra: str) -> list[dict]:
    capsys.readouterr()
    assert main(["show", "t", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def dominated(a: dict, b: dict) -> bool:
    """True if b dominates a: score higher-or-equal, params and memory lower-or-equal, one strictly."""
    ge = (b["score"] >= a["score"], b["trainable_params"] <= a["trainable_params"],
          b["peak_memory_bytes"] <= a["peak_memory_bytes"])
    gt = (b["score"] > a["score"], b["trainable_params"] < a["trainable_params"],
          b["peak_memory_bytes"] < a["peak_memory_bytes"])
    return all(ge) and any(gt)


def test_search_show_and_resume(workdir: Path, tiny_model: Path, tiny_data: Path,
                                capsys: pytest.CaptureFixture) -> None:
    assert main(search_args(tiny_model, tiny_data, "--n-trials", "4")) == 0
    assert (workdir / "studies" / "t.db").is_file()
    listed = show_json(capsys, "--all")  # with the warm-start recipes still queued
    everything = [r for r in listed if r["state"] != "WAITING"]
    assert len(everything) == 4 and len(listed) == 7  # 6 recipes, the first at two rates
    done = [r for r in everything if r["state"] == "COMPLETE"]
    assert done, everything
    front = show_json(capsys)
    assert front and {r["number"] for r in front} <= {r["number"] for r in done}
    for member in front:  # truly non-dominated among every completed trial
        assert not any(dominated(member, other) for other in done)
    for r in done:  # and every completed trial off the front is dominated by someone
        if r["number"] not in {m["number"] for m in front}:
            assert any(dominated(r, other) for other in done)
    for r in done:
        assert r["candidate"]["methods"], "the candidate is stored with the trial"
        assert r["trainable_params"] > 0 and r["peak_memory_bytes"] > 0

    # The same command again resumes: nothing lost, the trial count grows.
    assert main(search_args(tiny_model, tiny_data, "--n-trials", "2")) == 0
    after = [r for r in show_json(capsys, "--all") if r["state"] != "WAITING"]
    assert len(after) == 6
    before = {r["number"]: (r["state"], r["score"]) for r in everything}
    assert {r["number"]: (r["state"], r["score"]) for r in after if r["number"] < 4} == before


def test_export_lora_loads_with_peft_and_reproduces_logits(
        workdir: Path, tiny_model: Path, tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    import autopeft
    from autopeft import api

    space = workdir / "lora.yaml"
    space.write_text(LORA_SPACE)
    assert main(search_args(tiny_model, tiny_data, "--n-trials", "1", "--space", str(space))) == 0
    out = workdir / "export"
    assert main(["export", "t", "--trial", "0", "--out", str(out), "--train"]) == 0
    for name in ("candidate.yaml", "adapter_config.json", "adapter_model.safetensors",
                 "autopeft_weights.safetensors", "README.md"):
        assert (out / name).is_file(), name
    torch.manual_seed(0)  # the tiny model has no head: both loads draw the same new one
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    torch.manual_seed(0)
    untouched = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).eval()
    with_peft = PeftModel.from_pretrained(base, out).eval()
    ours = autopeft.load(out)
    ids = torch.tensor([[2, 7, 616, 22, 3, 0], [2, 40, 41, 42, 43, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        a = with_peft(input_ids=ids, attention_mask=mask).logits
        b = ours(input_ids=ids, attention_mask=mask).logits
        c = untouched(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c, atol=1e-4), "the export must carry trained weights"
    # Re-training with the stored seed reproduces the search's score on CPU.
    trained = json.loads((out / "metrics.json").read_text())
    study_score = show_json(capsys)[0]["score"]
    assert trained["score"] == pytest.approx(study_score, abs=1e-9)
    searched = api.load_study("t").get_trials()[0]  # trial 0, the one exported
    assert trained["final_loss"] == pytest.approx(searched.user_attrs["final_loss"], abs=1e-9)

    # Exporting over a non-empty directory needs --force.
    assert main(["export", "t", "--trial", "0", "--out", str(out)]) == 2
    assert main(["export", "t", "--trial", "0", "--out", str(out), "--force"]) == 0


def test_console_script_reports_user_errors_in_one_line(workdir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "autopeft", "search", "--task", "nope",
                           "--model", "x", "--n-trials", "1"], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autopeft: error: unknown task 'nope'; known")
    assert not (workdir / "studies" / "sst2-x.db").exists()
