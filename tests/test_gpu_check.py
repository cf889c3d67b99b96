"""bench/gpu_check.py's CPU-runnable parts, so the GPU check cannot rot between GPU runs:
every section runs on a tiny model and reports what it measured."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # seven sections, each in a process of its own, two trial processes: ~2 min
def test_the_gpu_check_runs_on_the_cpu(tiny_data: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_check

    out = tmp_path / "report.json"
    bench_md = tmp_path / "BENCHMARKS.md"
    assert gpu_check.main(["--device", "cpu", "--quick", "--data-dir", str(tiny_data),
                           "--work", str(tmp_path / "work"), "--out", str(out),
                           "--benchmarks", str(bench_md)]) == 0
    sections = json.loads(out.read_text())["sections"]
    assert list(sections) == list(gpu_check.SECTIONS)
    assert not [name for name, s in sections.items() if "error" in s]
    assert sections["loop"]["trial_ms_per_step"] > 0 and sections["loop"]["bare_ms_per_step"] > 0
    memory = {r["method"]: r for r in sections["memory"]["rows"]}
    assert {"lora", "bitfit", "full"} <= set(memory)
    assert memory["full"]["training_peak"] > memory["lora"]["training_peak"]
    assert all(r["static_prediction"] <= r["training_peak"] for r in memory.values())
    assert {r["precision"] for r in sections["precision"]["rows"]} == {"fp32", "bf16"}
    assert sections["sharing"]["rows"][0]["complete"] >= 1
    assert sections["cuda_error"]["ok"] and "device-side assert" in sections["cuda_error"]["failing_trial"]
    assert "<!-- gpu-check:start -->" in bench_md.read_text()
