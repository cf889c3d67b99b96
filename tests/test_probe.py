"""The cost probe measures a step as the trials run it (warm, same batches, in the trial
process), and the default ``--budget`` path runs the real probe, its fallback included."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

import pytest

from autopeft import api
from autopeft.candidate import Candidate, MethodSpec
from autopeft.runner import Bench, DataSettings
from autopeft.search import probe as probe_mod
from autopeft.search.plan import Plan
from autopeft.search.probe import PROBES, fitted_step_seconds, probe, step_seconds, step_tokens
from autopeft.train import TrainSettings


def test_the_probe_times_the_steps_apart_from_the_build_and_the_scoring(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On the test's clock: a bench whose build takes 0.7 s, each step 0.05 s and a scoring
    of 100 rows 0.4 s. The probe reads exactly those, whatever the machine. (Probe against
    trial in real time, in the trial process: bench/probe_check.py.)"""
    from faults import Clock

    clock = Clock(0.0)
    monkeypatch.setattr(probe_mod, "time", SimpleNamespace(perf_counter=clock))
    warm_runs: list[str] = []

    class Bench:
        eval_data = list(range(100))

        def run(self, candidate, on_step=None, fidelity=None, **_):
            clock.t += 0.7  # copy and build
            for step in range(1, fidelity.stop_at + 1):
                clock.t += 0.05
                try:
                    on_step(step, fidelity.schedule_steps, 0.69)
                except Exception:
                    warm_runs.append(candidate.label)
                    raise
            clock.t += 0.4  # the scoring
            return None

    costs = probe(Bench(), 50)
    assert warm_runs == ["lora"]  # one untimed warm run, then the timed one
    assert (costs.step_seconds, costs.eval_seconds, costs.rung_eval_seconds) == (0.05, 0.4, 0.2)
    assert (costs.start_seconds, costs.probe) == (0.7, "lora")


def test_the_default_budget_path_runs_the_real_probe_and_falls_back(
        workdir: Path, tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--budget` with the default isolation (a trial process): the probe trains there. A
    LoRA probe that cannot be built on this model (rank 64 on a 32-wide layer), a BitFit
    probe on layers it lacks: the full fine-tuning probe measures."""
    bad_lora = Candidate([MethodSpec("lora", {"r": 64, "targets": ["query", "value"]})], 5e-4)
    bad_bitfit = Candidate([MethodSpec("bitfit", {"layers": [7]})], 1e-3)
    monkeypatch.setattr(probe_mod, "PROBES", (bad_lora, bad_bitfit, PROBES[2]))
    seen: list[str] = []
    real = probe_mod.probe

    def spy(bench, rows):
        seen.append(type(bench).__name__)
        return real(bench, rows)

    monkeypatch.setattr(probe_mod, "probe", spy)
    study = api.search("sst2", model=str(tiny_model), data_dir=str(tiny_data), study="probed",
                       budget="2m", n_trials=1, batch_size=16, max_length=48, warm_start=False,
                       isolation="process")
    plan = Plan.from_dict(study.user_attrs["plan"])
    assert seen == ["IsolatedBench"]  # measured in the trial process, where trials train
    assert plan.costs.probe == "full" and plan.costs.step_seconds > 0 and plan.costs.eval_seconds > 0
    assert plan.ratio and plan.ratio > 1 and f"R = {plan.ratio:.1f}" in plan.describe()


def test_the_step_time_is_read_at_an_epoch_s_mean_batch_not_the_median_step() -> None:
    """Length-grouped batches: a few long ones cost most. Steps of 0.01 s + 1e-4 s a token;
    the median step (short batches) under-predicts the epoch's mean; one slowed step moves
    nothing."""
    tokens = [100, 120, 110, 900, 105, 115, 800, 125, 100, 130]
    durations = [0.01 + 1e-4 * x for x in tokens]
    durations[2] += 0.5  # a neighbour's burst
    mean_tokens = 400.0
    assert fitted_step_seconds(durations, tokens, mean_tokens) == pytest.approx(0.05)
    assert step_seconds([0.0, *np.cumsum(durations)], skip=1) < 0.03  # the median's answer
    assert fitted_step_seconds([0.2, 0.3, 0.25], [64, 64, 64], 64) == 0.25  # one size: median


def test_step_tokens_are_the_trainer_s_padded_batches(tiny_data: Path, tiny_model: Path) -> None:
    from autopeft.data import collate
    from autopeft.train import micro_batches

    bench = Bench.load(str(tiny_model), DataSettings("sst2", str(tiny_data)),
                       TrainSettings(batch_size=4, max_length=48, grad_accum=2))
    tokens = step_tokens(bench.train_data, 4, 2, 7, 5)
    stream = micro_batches(bench.train_data, 4, 7)
    padded = [collate(bench.train_data, next(stream), 0)["input_ids"].numel() for _ in range(10)]
    assert tokens == [padded[i] + padded[i + 1] for i in range(0, 10, 2)]
