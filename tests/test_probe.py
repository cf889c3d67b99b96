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
    assert 2 < plan.costs.row_tokens <= 48  # a padded row, what virtual tokens add to
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


def test_co_run_speed_is_one_alone_over_the_copies_at_once_at_the_slot_s_threads() -> None:
    """On the test's clock: a resource that serialises its users (each round 1 ms of the
    clock, whoever runs it) gives each of 3 copies a third of one alone's speed; the copies
    run at the slot's torch threads, and this process's count comes back after."""
    import threading

    import torch

    from faults import Clock

    clock, lock, seen = Clock(0.0), threading.Lock(), set()

    def work(rounds: int) -> None:
        seen.add(torch.get_num_threads())
        with lock:
            clock.t += rounds * 0.001

    before = torch.get_num_threads()
    assert probe_mod.co_run_speed(3, 1, work, clock) == pytest.approx(1 / 3)
    assert seen == {1} and torch.get_num_threads() == before
    assert probe_mod.co_run_speed(1, 1, work=None) == 1.0  # alone: nothing to measure


def test_worker_throughput_is_measured_on_cpu_capped_by_the_cores_and_stated_on_gpus() -> None:
    from autopeft.devices import place

    asked: list[tuple[int, int]] = []

    def measure(copies: int, threads: int) -> float:
        asked.append((copies, threads))
        return 0.9

    two = probe_mod.worker_throughput(place(2, [], 1, cpus=4), cores=4, measure=measure)
    assert (two.slots, two.speed, asked) == (2, 0.9, [(2, 2)])
    assert two.evidence == ("measured: 2 copies of a matrix-product proxy at 2 threads each on "
                            "4 cores ran at 0.90x one alone")
    # 4 workers on 2 cores, 1 thread each: a thread gets at most half a core, whatever the
    # proxy said (a busy machine can make the copies look free)
    four = probe_mod.worker_throughput(place(4, [], 1, cpus=2), cores=2, measure=measure)
    assert four.speed == 0.5 and four.evidence.endswith("at most 0.50: 2 cores for 4 x 1 threads")
    gpu = probe_mod.worker_throughput(place(4, ["0", "1"], 2), joining=1, measure=measure)
    assert (gpu.slots, gpu.speed, gpu.joining, gpu.parallel) == (4, 0.5, 1, 3.0)
    assert gpu.evidence.startswith("not measured: 2 trials sharing a GPU are planned at 1/2")
    own = probe_mod.worker_throughput(place(2, ["0", "1"], 1), measure=measure)
    assert own.speed == 1.0 and own.evidence.startswith("not measured: one trial a GPU")
    assert probe_mod.worker_throughput(place(1, [], 1), measure=measure).parallel == 1
    assert probe_mod.worker_throughput(place(1, [], 1), joining=2, measure=measure).parallel == 3
    assert len(asked) == 2  # GPUs and one process: nothing measured


def test_the_measured_contention_flows_into_the_stored_plan_and_a_resumed_study_keeps_it(
        tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    from autopeft.devices import place
    from autopeft.search.budget import Budget
    from autopeft.search.config import SearchConfig
    from autopeft.search.plan import Costs
    from autopeft.search.study import plan_for

    costs = Costs(step_seconds=0.05, eval_seconds=0.2, rung_eval_seconds=0.1, start_seconds=0.1)
    measured: list[tuple[int, int]] = []
    monkeypatch.setattr(probe_mod, "probe", lambda bench, rows: costs)
    monkeypatch.setattr(probe_mod, "co_run_speed",
                        lambda copies, threads: measured.append((copies, threads)) or 0.6)
    monkeypatch.setattr(probe_mod, "cpu_cores", lambda: 2)
    bench = Bench.load(str(tiny_model), DataSettings("sst2", str(tiny_data)),
                       TrainSettings(batch_size=4, max_length=48, epochs=2))
    budget = Budget(120.0, 0.0, clock=lambda: 10.0)  # 10 s to load and probe
    cfg = SearchConfig("sst2", str(tiny_model), budget="2m", workers=2, joining_workers=1)

    def study() -> optuna.Study:
        return optuna.create_study(directions=["maximize", "minimize", "minimize"])

    two = study()
    plan = plan_for(two, cfg, bench, budget, place(2, [], 1, cpus=2))
    assert measured == [(2, 1)]  # two copies at the slot's one thread each
    assert plan.throughput.parallel == pytest.approx(2.2)  # 2 at 0.6x and one joining
    assert plan.throughput.start_seconds == 10  # the worker loads as this process did
    assert ("2 workers, each at about 0.60x alone's speed (measured: 2 copies of a "
            "matrix-product proxy at 1 thread each on 2 cores ran at 0.60x one alone), starting "
            "about 10 s late (the search's own start-up), and 1 worker joining from other "
            "machines") in plan.describe()
    alone = plan_for(study(), SearchConfig("sst2", str(tiny_model), budget="2m"), bench, budget)
    assert alone.throughput.parallel == 1 and len(measured) == 1  # one process: not measured
    assert plan.expected_candidates >= 2 * alone.expected_candidates
    # resumed with other workers: the stored plan (its rungs, its sizing), nothing measured
    again = plan_for(two, cfg, bench, budget, place(4, [], 1, cpus=2))
    assert again.source == "study" and again.throughput == plan.throughput
    assert (again.trial_steps, again.rungs) == (plan.trial_steps, plan.rungs)
    assert len(measured) == 1
