"""Trials in a child process: same results as in-process, and a crash fails one trial only."""
from __future__ import annotations

from pathlib import Path

import pytest

from autopeft.candidate import Candidate, MethodSpec
from autopeft.isolation import IsolatedBench, TrialCrashed
from autopeft.runner import Bench, DataSettings
from autopeft.train import Diverged, TrainSettings

# It spawns trial processes (torch import each): ~40 s. One worker runs this file
# (pytest-xdist): the module's child process is started once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_isolation")]

DATA = dict(train_samples=48, eval_samples=32)
SETTINGS = TrainSettings(batch_size=16, max_length=32)


@pytest.fixture(scope="module")
def isolated(tiny_model: Path, tiny_data: Path, tmp_path_factory):
    import os

    from faults import enable_faults

    enable_faults()  # the child registers the test-only `fault` method too
    bench = IsolatedBench(str(tiny_model), DataSettings("sst2", str(tiny_data), **DATA), SETTINGS,
                          str(tmp_path_factory.mktemp("cache")))
    yield bench
    bench.close()
    os.environ.pop("AUTOPEFT_PLUGINS")


def fault(kind: str, at_step: int = 1) -> Candidate:
    return Candidate([MethodSpec("fault", {"kind": kind, "at_step": at_step})], 1e-3)


def test_same_result_as_in_process(isolated, tiny_model: Path, tiny_data: Path) -> None:
    cand = Candidate([MethodSpec("lora", {"r": 2})], 3e-3, seed=1)
    steps = []
    child = isolated.run(cand, on_step=lambda s, n, loss: steps.append(s), eval_at=[1])
    bench = Bench.load(str(tiny_model), DataSettings("sst2", str(tiny_data), **DATA), SETTINGS)
    local = bench.run(cand, eval_at=[1])
    assert (child.result.score, child.result.final_loss) == (local.result.score, local.result.final_loss)
    assert child.rung_scores == local.rung_scores
    other = bench.run(Candidate(cand.methods, 3e-3, seed=2), eval_at=[1])  # could have failed
    assert other.result.final_loss != local.result.final_loss
    assert child.trainable == local.trainable and child.result.peak_memory == local.result.peak_memory
    assert steps == list(range(1, child.result.steps + 1))


def test_a_segfault_fails_the_trial_and_the_next_one_runs(isolated) -> None:
    """The crash ends the child; a new one trains the next candidate exactly as before."""
    bitfit = Candidate([MethodSpec("bitfit")], 1e-3)
    before = isolated.run(bitfit)
    pid = isolated._proc.pid
    with pytest.raises(TrialCrashed, match="SIGSEGV"):
        isolated.run(fault("segfault"))
    after = isolated.run(bitfit)
    assert isolated._proc.pid != pid  # a fresh child
    assert after.result.steps == before.result.steps == 3  # 48 rows, batch 16: to the end
    assert after.result.score == before.result.score
    assert after.result.final_loss == before.result.final_loss
    assert after.trainable == before.trainable > 0


def test_errors_keep_their_type_and_the_child_lives(isolated) -> None:
    with pytest.raises(RuntimeError, match="injected fault"):
        isolated.run(fault("raise"))
    pid = isolated._proc.pid
    with pytest.raises(MemoryError):
        isolated.run(fault("memory"))
    with pytest.raises(Diverged):
        isolated.run(fault("nan", at_step=0))
    assert isolated._proc.pid == pid  # no restart needed for ordinary failures


def test_a_cuda_error_restarts_the_child_and_blames_only_its_trial(isolated) -> None:
    isolated.run(Candidate([MethodSpec("bitfit")], 1e-3))
    pid = isolated._proc.pid
    with pytest.raises(RuntimeError, match="device-side assert"):
        isolated.run(fault("cuda"))
    assert isolated._proc is None  # the broken child ended; the next trial starts a fresh one
    assert isolated.run(Candidate([MethodSpec("bitfit")], 1e-3)).result.steps == 3
    assert isolated._proc.pid != pid


def test_a_callback_that_raises_stops_the_childs_trial(isolated) -> None:
    class Pruned(Exception):
        pass

    def prune(step: int, score: float) -> None:
        raise Pruned(step)

    with pytest.raises(Pruned):
        isolated.run(Candidate([MethodSpec("bitfit")], 1e-3), eval_at=[1], on_eval=prune)
    assert isolated.run(Candidate([MethodSpec("bitfit")], 1e-3)).result.steps == 3


def test_used_as_a_context_manager_it_answers_from_the_local_bench_and_ends_the_child(
        tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    data = DataSettings("sst2", str(tiny_data), **DATA)
    alone = IsolatedBench(str(tiny_model), data, SETTINGS)
    assert alone.settings == SETTINGS
    with pytest.raises(AttributeError, match="without a local Bench has no 'base'"):
        alone.base
    local = Bench.load(str(tiny_model), data, SETTINGS)
    with IsolatedBench.around(local, str(tiny_model), data, str(tmp_path)) as bench:
        assert bench.base is local.base and bench.task is local.task
        assert bench.train_data is local.train_data and bench.eval_data is local.eval_data
        assert bench.run(Candidate([MethodSpec("bitfit")], 1e-3)).trainable > 0
        proc = bench._proc
        assert proc.is_alive()
    assert bench._proc is None and not proc.is_alive()
