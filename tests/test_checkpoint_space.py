"""Checkpoints with a life cycle: written off the training thread, kept only while something
can read them, and never more on disk than ``--checkpoint-space`` (``autopeft/checkpoint.py``,
``autopeft/search/continuation.py``)."""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
import torch

from autopeft import checkpoint
from autopeft.candidate import Candidate, MethodSpec
from autopeft.checkpoint import Checkpoint, held, load, save
from autopeft.errors import UserError
from autopeft.train import TrainSettings

SETTINGS = TrainSettings(batch_size=16, max_length=32, device="cpu")


def state(step: int, numbers: int) -> Checkpoint:
    """A checkpoint holding ``numbers`` float32 values (4 bytes each)."""
    return Checkpoint(step, 10, (0, 0), 0, 0.0, None, 0, {"w": torch.zeros(numbers)}, {}, {},
                      {}, [])


def size_of(ckpt: Checkpoint, tmp_path: Path) -> int:
    save(ckpt, str(tmp_path / "measure" / "x.pt"))
    return (tmp_path / "measure" / "x.pt").stat().st_size


def test_a_checkpoint_is_written_only_where_it_fits_beside_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap holds for the folder's files together: a checkpoint that does not fit is not
    written (the run's previous one stays), and one that fits only without the run's
    previous one replaces it; nothing ever exceeds the cap, not even while writing."""
    folder = tmp_path / "ckpts"
    small, big = state(1, 1000), state(2, 3000)
    one, large = size_of(small, tmp_path), size_of(big, tmp_path)
    cap = 2 * one + large - 1  # room for two small ones and less than a large one beside
    writing: list[int] = []  # what the folder holds once each write has reserved its room
    reserve = checkpoint._reserve
    monkeypatch.setattr(checkpoint, "_reserve", lambda fd, size: reserve(fd, size) or
                        writing.append(held(str(folder))))
    assert save(small, str(folder / "a.pt"), cap) and save(small, str(folder / "b.pt"), cap)
    assert held(str(folder)) == 2 * one <= cap
    assert not save(big, str(folder / "c.pt"), cap)  # beside a and b: no room
    assert not (folder / "c.pt").exists() and held(str(folder)) == 2 * one
    assert save(big, str(folder / "b.pt"), cap)  # b's run goes on: its old file makes room
    assert load(str(folder / "b.pt")).step == 2 and held(str(folder)) == one + large <= cap
    assert not list(folder.glob(".tmp-*"))
    assert len(writing) == 3 and max(writing) <= cap
    assert save(big, str(folder / "c.pt"))  # no cap: written
    with pytest.raises(UserError, match="checkpoint-space"):
        from autopeft.search.continuation import checkpoint_space
        checkpoint_space("lots", str(folder))


def test_checkpoint_space_reads_a_size_or_a_share_of_the_free_disk(tmp_path: Path) -> None:
    import shutil

    from autopeft.search.continuation import DEFAULT_SPACE_SHARE, checkpoint_space

    folder = tmp_path / "studies" / "s" / "checkpoints"  # not there yet: its disk is read
    assert checkpoint_space("500MiB", str(folder))[0] == 500 * 2**20
    assert checkpoint_space("20GB", str(folder))[0] == 20 * 10**9
    free = shutil.disk_usage(tmp_path).free
    for text, share in ((None, DEFAULT_SPACE_SHARE), ("0.3", 0.3), ("30%", 0.3)):
        size, why = checkpoint_space(text, str(folder))
        assert size == pytest.approx(share * free, rel=0.01) and f"{share:.0%}" in why
    for bad in ("0%", "150%", "-1", "big"):
        with pytest.raises(UserError, match="--checkpoint-space"):
            checkpoint_space(bad, str(folder))


def test_the_search_makes_room_dropping_what_is_furthest_from_being_read_first(
        tmp_path: Path) -> None:
    """Under the cap, ``make_room`` drops a file no trial reads, then paused trials (the
    lowest rung first, the lowest score within it), then trials cut short, then complete
    front members; never a running trial's, one queued to continue, or the one being
    written. A dropped paused trial is recorded as never to be promoted."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from autopeft.results import dropped_checkpoints
    from autopeft.search.continuation import Checkpoints, make_room

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    store = Checkpoints(str(tmp_path), SETTINGS, space=0)
    size = 1000

    def add(state: TrialState, lr: float, file: bool = True, **attrs) -> str:
        cand = Candidate([MethodSpec("lora", {"r": 2})], lr)
        study.add_trial(create_trial(
            state=state, params={"lr": lr}, distributions={"lr": FloatDistribution(1e-5, 1.0)},
            user_attrs={"candidate": cand.to_dict(), **attrs},
            values=[attrs.pop("score", 0.5), 1, 1] if state == TrialState.COMPLETE else None))
        path = store.path(cand, 12)
        if file:
            Path(path).write_bytes(b"x" * size)
        return path

    paused = dict(paused=True, pruned_at_step=2)
    add(TrialState.PRUNED, 1e-3, **paused, rung_scores={"2": 0.6})  # 0
    add(TrialState.PRUNED, 2e-3, **paused, rung_scores={"2": 0.5})  # 1: before 0
    add(TrialState.PRUNED, 3e-3, paused=True, pruned_at_step=6, rung_scores={"6": 0.4})  # 2
    add(TrialState.PRUNED, 4e-3, stopped_by_budget=True, steps=4)  # 3: cut short
    add(TrialState.COMPLETE, 5e-3, score=0.7)  # 4: a front member the refit would continue
    add(TrialState.RUNNING, 6e-3)  # 5: running: never
    add(TrialState.PRUNED, 7e-3, **paused, rung_scores={"2": 0.1})  # 6: promoted, queued: never
    study.enqueue_trial({"lr": 7e-3}, user_attrs={"promotes": 6, "continues_trial": 6})
    writing = add(TrialState.RUNNING, 8e-3)  # 8: the run about to write: never
    (tmp_path / "0123456789abcdef01234567.pt").write_bytes(b"x" * size)  # of no trial here

    assert make_room(study, store, 12, size, writing)  # everything that may go, in order
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == sorted(
        Path(p).name for p in (store.path(Candidate([MethodSpec("lora", {"r": 2})], lr), 12)
                               for lr in (6e-3, 7e-3, 8e-3)))
    dropped = dropped_checkpoints(study.user_attrs)
    assert set(dropped) == {0, 1, 2, 3, 4}
    assert all("can no longer be promoted" in dropped[n] for n in (0, 1, 2))
    assert "can no longer be promoted" not in dropped[3] + dropped[4]

    # the order: with room for all but k files, the first k of the order go
    order = ["orphan", 1, 0, 2, 3, 4]
    for k in range(1, len(order) + 1):
        for p in tmp_path.glob("*.pt"):
            p.unlink()
        for t in study.get_trials():
            if "candidate" in t.user_attrs:
                Path(store.path(Candidate.from_dict(t.user_attrs["candidate"]), 12)).write_bytes(
                    b"x" * size)
        (tmp_path / "0123456789abcdef01234567.pt").write_bytes(b"x" * size)
        capped = Checkpoints(str(tmp_path), SETTINGS, space=(9 - k) * size)  # 9 files held
        lines = make_room(study, capped, 12, size, writing)
        assert len(lines) == k
        got = ["orphan" if not line.startswith("trial") else int(line.split()[1].rstrip(":"))
               for line in lines]
        assert got == order[:k]
        assert held(str(tmp_path)) - size + size <= capped.space  # the next one fits


@pytest.fixture(scope="module")
def bench(tiny_model: Path, tiny_data: Path, tmp_path_factory):
    from autopeft.runner import Bench, DataSettings

    return Bench.load(str(tiny_model), DataSettings("sst2", str(tiny_data), train_samples=40,
                                                    eval_samples=32), SETTINGS,
                      str(tmp_path_factory.mktemp("cache")))


LORA = Candidate([MethodSpec("lora", {"r": 2})], 3e-3, seed=3)


def test_checkpoints_are_written_while_training_goes_on_and_the_run_waits_for_the_last(
        bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rung-2 checkpoint's write is still going when training reaches step 3 (it waits
    for that step here: a write on the training thread would never see it); the run returns
    with its last checkpoint on disk; a failed write fails the run."""
    from autopeft.runner import Fidelity

    real_save, at_step_3 = checkpoint.save, threading.Event()
    writes: list[tuple[int, str, bool]] = []

    def slow_save(ckpt, path, space=None):
        trained_on = at_step_3.wait(timeout=30) if ckpt.step == 2 else True
        writes.append((ckpt.step, threading.current_thread().name, trained_on))
        return real_save(ckpt, path, space)

    def on_step(step: int, total: int, loss: float) -> None:
        if step == 3:
            at_step_3.set()

    monkeypatch.setattr(checkpoint, "save", slow_save)
    path = str(tmp_path / "run.pt")
    bench.run(LORA, on_step=on_step, eval_at=[2, 4], fidelity=Fidelity(8, 4), checkpoint=path)
    assert writes == [(2, "checkpoint-writer", True), (4, "checkpoint-writer", True)]
    assert load(path).step == 4  # on disk when the run returned
    writes.clear()
    bench.run(LORA, eval_at=[2, 4], fidelity=Fidelity(8, 4, keep_end=False),
              checkpoint=str(tmp_path / "no-end.pt"))
    assert [w[0] for w in writes] == [2]  # nothing reads a complete trial's: no end write
    assert load(str(tmp_path / "no-end.pt")).step == 2

    def full_disk(ckpt, path, space=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        bench.run(LORA, eval_at=[2, 4], fidelity=Fidelity(8, 4), checkpoint=str(tmp_path / "x"))


ONE = """name: one
seed: 0
learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
candidates: [lora]
methods:
  lora: {r: 2, targets: [query, value]}
"""


def test_a_search_under_a_small_cap_never_holds_more_and_keeps_no_complete_trial(
        workdir: Path, tiny_model: Path, tiny_data: Path, bench,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Four trials, no refit, room for two checkpoints: the even ones pause at step 2 (their
    checkpoints stay), the odd ones complete (theirs go when they complete). Trial 3's
    rung checkpoint needs room: the lower-scoring paused trial's goes, recorded as never to
    be promoted, and ``show`` says so; the folder never holds more than the cap."""
    import autopeft.search.objective as objective
    from autopeft import api
    from autopeft.paths import checkpoints_dir
    from autopeft.protocols import NullReporter
    from autopeft.report.show import checkpoint_line, rows, status_word
    from autopeft.results import dropped_checkpoints
    from autopeft.runner import Fidelity
    from autopeft.search.pruner import Decision, MedianScore

    one = workdir / "one.pt"  # the size of one such checkpoint, measured here
    bench.run(Candidate([MethodSpec("lora", {"r": 2, "targets": ["query", "value"]})], 1e-3),
              eval_at=[2], fidelity=Fidelity(4, 2), checkpoint=str(one))
    cap = 2 * one.stat().st_size + one.stat().st_size // 2
    one.unlink()
    folder = Path(checkpoints_dir("capped"))
    most, real_save = [0], checkpoint.save

    def watched(ckpt, path, space=None):
        assert space == cap
        written = real_save(ckpt, path, space)
        most[0] = max(most[0], held(str(folder)))
        return written

    class Finished(NullReporter):
        kept: list[int] = []  # complete trials whose checkpoint was there when one completed

        def trial_finished(self, study, number: int) -> None:  # right after it completed
            there = [load(str(p)).candidate for p in folder.glob("*.pt")]
            self.kept += [t.number for t in study.get_trials(deepcopy=False)
                          if t.state.name == "COMPLETE" and t.user_attrs["candidate"] in there]

    monkeypatch.setattr(checkpoint, "save", watched)
    monkeypatch.setattr(objective, "decide_from_storage", lambda study, pruner, number, step,
                        **_: Decision(number % 2 == 1, "even trials pause"))
    monkeypatch.setattr(MedianScore, "decide", lambda *a, **k: Decision(False, "never promoted"))
    (workdir / "one.yaml").write_text(ONE)
    study = api.search("sst2", str(tiny_model), study="capped", n_trials=4, pruner="median-score",
                       rungs="2,4", refit_share=0.0, sampler="random", seed=1, warm_start=False,
                       space="one.yaml", data_dir=str(tiny_data), batch_size=16, max_length=48,
                       checkpoint_space=cap, progress=Finished())
    assert Finished.kept == []
    states = [t.state.name for t in study.get_trials()]
    assert states == ["PRUNED", "COMPLETE", "PRUNED", "COMPLETE"]
    assert 0 < most[0] <= cap
    dropped = dropped_checkpoints(study.user_attrs)
    paused = {t.number: t.user_attrs["rung_scores"]["2"] for t in study.get_trials()
              if t.user_attrs.get("paused")}
    assert len(dropped) == 1 and "can no longer be promoted" in next(iter(dropped.values()))
    (gone,) = dropped
    assert gone in (0, 2) and paused[gone] <= paused[2 - gone]  # the lower of the first two
    assert gone == 0 or paused[0] > paused[2]  # a tie: the one paused first
    kept = {load(str(p)).candidate["learning_rate"] for p in folder.glob("*.pt")}
    assert kept == {study.trials[n].user_attrs["candidate"]["learning_rate"]
                    for n in (2 - gone,)}
    shown = {r.number: r for r in rows(study, all_trials=True)}
    assert status_word(shown[gone]) == "paused" and "can no longer be promoted" in shown[gone].note
    assert "can no longer" not in shown[2 - gone].note
    assert checkpoint_line(study).startswith("checkpoints hold ") and "in 1 file " in \
        checkpoint_line(study)


def test_a_paused_trial_whose_checkpoint_was_dropped_is_never_promoted(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from autopeft.protocols import NullReporter
    from autopeft.search.continuation import Checkpoints
    from autopeft.search.objective import TrialRunner
    from autopeft.search.plan import Plan
    from autopeft.search.pruner import Decision

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    store = Checkpoints(str(tmp_path), SETTINGS)
    plan = Plan(max_steps=12, trial_steps=6, refit_steps=6, rungs=[2, 6], schedule_steps=12)
    study.set_user_attr("checkpoint_dropped:0", "deleted under the cap")
    for lr, file in ((1e-3, False), (2e-3, True)):  # trial 0's checkpoint was dropped
        cand = Candidate([MethodSpec("lora", {"r": 2})], lr)
        study.add_trial(create_trial(
            state=TrialState.PRUNED, params={"lr": lr},
            distributions={"lr": FloatDistribution(1e-5, 1.0)},
            user_attrs={"candidate": cand.to_dict(), "paused": True, "pruned_at_step": 2,
                        "rung_scores": {"2": 0.9}}))
        if file:
            Path(store.path(cand, 12)).write_bytes(b"x")
    ranks = SimpleNamespace(decide=lambda table, number, noise=0.0: Decision(True, "ranks now"))
    runner = TrialRunner(study, None, None, ranks, None, None, NullReporter(), plan,
                         checkpoints=store)
    assert runner.promote() == 1  # trial 0 ranks too, and is earlier, but cannot continue
    assert runner.promote() is None


@pytest.mark.parametrize("refit", [True, False])
def test_a_complete_trial_keeps_its_checkpoint_only_while_the_refit_would_continue_it(
        tmp_path: Path, refit: bool) -> None:
    """As each trial completes, the complete trials off the refit's front lose their
    checkpoints (with no refit planned, every complete trial does); a paused trial's and a
    cut-short one's stay."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from autopeft.protocols import NullReporter
    from autopeft.search.continuation import Checkpoints
    from autopeft.search.objective import TrialRunner
    from autopeft.search.plan import Plan

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    store = Checkpoints(str(tmp_path), SETTINGS)
    files = []
    for lr, state, attrs in ((1e-3, TrialState.COMPLETE, {}), (2e-3, TrialState.COMPLETE, {}),
                             (3e-3, TrialState.PRUNED, {"paused": True}),
                             (4e-3, TrialState.PRUNED, {"stopped_by_budget": True})):
        cand = Candidate([MethodSpec("lora", {"r": 2})], lr)
        study.add_trial(create_trial(
            state=state, params={"lr": lr}, distributions={"lr": FloatDistribution(1e-5, 1.0)},
            user_attrs={"candidate": cand.to_dict(), **attrs},
            values=[lr, 1, 1] if state == TrialState.COMPLETE else None))
        files.append(Path(store.path(cand, 12)))
        files[-1].write_bytes(b"x")
    plan = Plan(max_steps=12, trial_steps=6, refit_steps=12 if refit else 6, rungs=[2, 6],
                schedule_steps=12)
    runner = TrialRunner(study, None, None, None, None, None, NullReporter(), plan,
                         checkpoints=store, refit_readers=lambda s: {1})  # trial 1: the front
    assert runner.fidelity.keep_end is refit  # a run keeps its end only for the refit
    runner._release()
    assert [f.exists() for f in files] == [False, refit, True, True]


def test_a_full_fine_tuning_probe_counts_its_checkpoint_write_in_the_plan_s_costs(
        tiny_model: Path, tiny_data: Path, bench, workdir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where full fine-tuning is what the probe trains, the write of its checkpoint (12
    bytes a trained parameter, at the disk's measured speed: here 1 MB/s) is part of what
    every run of the plan costs, and the plan's line says it."""
    from autopeft.checkpoint import checkpoint_bytes
    from autopeft.search import probe as probe_mod
    from autopeft.search.plan import make_plan

    speeds: list[int] = []
    monkeypatch.setattr(probe_mod, "write_speed", lambda folder, size: speeds.append(size) or 1e6)
    monkeypatch.setattr(probe_mod, "PROBES", probe_mod.PROBES[2:])  # full fine-tuning
    monkeypatch.setattr(probe_mod, "PROBE_STEPS", 2)
    costs = probe_mod.probe(bench, None)
    full = sum(p.numel() for p in bench.base.model.parameters())  # all of them train
    assert costs.probe == "full" and speeds == [checkpoint_bytes(full)]
    assert costs.write_seconds == pytest.approx(checkpoint_bytes(full) / 1e6, abs=1e-3)
    unwritten = dataclasses.replace(costs, write_seconds=0.0)
    assert costs.run_seconds(100) == pytest.approx(unwritten.run_seconds(100) + costs.write_seconds)
    plan = make_plan(1000, 600.0, costs, 3, 1, None, None, None, 0.0)
    assert f"{costs.write_seconds:.2f} s to write a checkpoint" in plan.describe()
