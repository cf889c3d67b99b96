"""Does the cost probe's step time match the trials' step time, in real time? (Moved here
from tests/test_probe.py: a 20% window on wall-clock time flakes on a loaded machine; the
test now checks what the probe reads on an injected clock.)

Probe and trial back to back in the trial process (``IsolatedBench``), MiniLM on SST-2 rows
from ../shared/data: the probe's step against the trial's mean step (what the budget pays),
three pairs. The behaviour: each ratio within 20% of 1 on a quiet machine.

    python bench/probe_check.py          # prints the three ratios; exit 1 if none is within 20%
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from _report import minilm

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AUTOPEFT_TEST_DATA", ROOT.parent / "shared" / "data"))


def main() -> int:
    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.isolation import IsolatedBench
    from autopeft.runner import Bench, DataSettings, Fidelity
    from autopeft.search.probe import probe
    from autopeft.train import TrainSettings

    model = minilm()
    data = DataSettings("sst2", str(DATA), train_samples=2000, eval_samples=256)
    local = Bench.load(model, data, TrainSettings(batch_size=16, max_length=48))
    trial = Candidate([MethodSpec("lora", {"r": 8, "alpha": 16, "targets": ["query", "value"]})], 5e-4)
    ratios = []
    with IsolatedBench.around(local, model, data, None) as bench:
        for _ in range(3):
            costs = probe(bench, None)
            stamps: list[float] = []
            bench.run(trial, on_step=lambda s, *_: s and stamps.append(time.perf_counter()),
                      fidelity=Fidelity(schedule_steps=300, stop_at=40))
            ratios.append(costs.step_seconds / statistics.fmean(np.diff(stamps)[1:]))
    print("probe / trial step time:", " ".join(f"{r:.3f}" for r in ratios))
    return 0 if any(abs(r - 1) <= 0.2 for r in ratios) else 1


if __name__ == "__main__":
    sys.exit(main())
