"""Continue, never restart: a run stopped at a rung (its checkpoint kept) and continued in a
fresh bench ends bit for bit where the uninterrupted run ends: same loss, score, memory
and trained tensors, for LoRA, AdaLoRA (its rank allocator), Child-Tuning (D's masks, F's
random masks) with dropout on, and gradient accumulation across an epoch boundary."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from autopeft.candidate import Candidate, MethodSpec
from autopeft.checkpoint import Checkpoint, load
from autopeft.contract import register_step_hook, trainable_parameters
from autopeft.runner import Bench, DataSettings, Fidelity
from autopeft.train import TrainSettings, micro_batches, train
from test_train_loop import Bag, data

# 40 rows in micro-batches of 16: 3 an epoch (16, 16, 8); 2 per optimiser step, so every
# third step spans an epoch boundary.
DATA = dict(train_samples=40, eval_samples=32)
SETTINGS = TrainSettings(batch_size=16, grad_accum=2, max_length=32, device="cpu")
SCHEDULE, STOP, END = 12, 5, 9  # a 12-step schedule; stopped at step 5, run to step 9


class Stopped(Exception):
    pass


@pytest.fixture(scope="module")
def load_bench(tiny_model: Path, tiny_data: Path, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))

    def fresh() -> Bench:
        return Bench.load(str(tiny_model), DataSettings("sst2", str(tiny_data), **DATA), SETTINGS,
                          cache)
    return fresh


def cand(name: str, lr: float = 3e-3, **params) -> Candidate:
    return Candidate([MethodSpec(name, params)], lr, seed=3)


CANDIDATES = {
    "lora": cand("lora", r=2, dropout=0.1),
    # reallocation from step 2 to 9, final ranks fixed after: the stop falls inside it
    "adalora": cand("adalora", init_r=4, target_r=2, dropout=0.1, warmup_ratio=0.1,
                    final_ratio=0.25),
    "child_tuning_D": cand("child_tuning", 1e-3, mode="D", reserve_p=0.3, fisher_batches=2),
    "child_tuning_F": cand("child_tuning", 1e-3, mode="F", reserve_p=0.3),
}


def tensors(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainable_parameters(model)}


def assert_same_end(a, b) -> None:
    assert a.result.final_loss == b.result.final_loss
    assert a.result.score == b.result.score and a.result.metrics == b.result.metrics
    assert (a.result.steps, a.result.samples) == (b.result.steps, b.result.samples)
    assert a.result.peak_memory == b.result.peak_memory
    assert a.rung_scores == b.rung_scores


def stop_at(step: int):
    """An ``on_step`` that stops the run at ``step`` (as the budget does)."""
    def on_step(s: int, total: int, loss: float) -> None:
        if s == step:
            raise Stopped
    return on_step


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_a_run_continued_in_a_fresh_bench_ends_bit_for_bit_where_the_whole_run_ends(
        load_bench, tmp_path: Path, name: str) -> None:
    candidate = CANDIDATES[name]
    fidelity = Fidelity(schedule_steps=SCHEDULE, stop_at=END)
    rungs = [2, STOP, END]
    whole = load_bench().run(candidate, eval_at=rungs, fidelity=fidelity)

    path = str(tmp_path / "run.pt")
    with pytest.raises(Stopped):  # out of time after the rung: its checkpoint stays
        load_bench().run(candidate, on_step=stop_at(STOP + 2), eval_at=rungs, fidelity=fidelity,
                         checkpoint=path)
    kept = load(path)
    assert kept.step == STOP and set(kept.rung_scores) == {2, STOP}
    steps: list[int] = []
    continued = load_bench().run(candidate, on_step=lambda s, n, loss: steps.append(s),
                                 eval_at=rungs, fidelity=fidelity, resume=path, checkpoint=path)
    assert steps == list(range(STOP + 1, END + 1))  # no step trained twice
    assert continued.result.resumed_from == STOP and whole.result.resumed_from == 0
    assert 0 < whole.result.scoring_seconds < whole.result.seconds  # three scorings, timed
    assert 0 < whole.result.setup_seconds < whole.result.seconds - whole.result.scoring_seconds
    assert_same_end(whole, continued)
    a, b = tensors(whole.model), tensors(continued.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load(path).step == END  # the end's checkpoint replaced the rung's


@pytest.mark.slow  # spawns a trial process
def test_a_run_stopped_here_continues_bit_for_bit_in_a_child_process(
        load_bench, tiny_model: Path, tiny_data: Path, tmp_path: Path) -> None:
    from autopeft.isolation import IsolatedBench

    candidate, fidelity = CANDIDATES["adalora"], Fidelity(schedule_steps=SCHEDULE, stop_at=END)
    whole = load_bench().run(candidate, eval_at=[STOP], fidelity=fidelity)
    path, end = str(tmp_path / "rung.pt"), str(tmp_path / "end.pt")
    with pytest.raises(Stopped):
        load_bench().run(candidate, on_step=stop_at(STOP + 1), eval_at=[STOP], fidelity=fidelity,
                         checkpoint=path)
    with IsolatedBench(str(tiny_model), DataSettings("sst2", str(tiny_data), **DATA), SETTINGS,
                       str(tmp_path / "cache")) as child:
        with pytest.raises(TypeError, match="path"):
            child.run(candidate, fidelity=fidelity, resume=load(path))
        continued = child.run(candidate, eval_at=[STOP], fidelity=fidelity, resume=path,
                              checkpoint=end)
    assert continued.result.resumed_from == STOP
    assert_same_end(whole, continued)
    a, b = tensors(whole.model), load(end).tensors
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adalora_continues_its_rank_allocation_into_the_final_phase(load_bench, tmp_path) -> None:
    """Stopped after the final ranks were fixed (step 10 of 12): the rank pattern and the
    importance averages come back with the checkpoint."""
    candidate, fidelity = CANDIDATES["adalora"], Fidelity(schedule_steps=SCHEDULE)
    whole = load_bench().run(candidate, fidelity=fidelity)
    path = str(tmp_path / "a.pt")
    with pytest.raises(Stopped):
        load_bench().run(candidate, on_step=stop_at(11), eval_at=[10], fidelity=fidelity,
                         checkpoint=path)
    assert load(path).hooks[0]["rank_pattern"]  # fixed at step 9 (12 - tfinal 3)
    continued = load_bench().run(candidate, fidelity=fidelity, resume=path)
    assert_same_end(whole, continued)
    assert all(torch.equal(whole.model.state_dict()[k], v)
               for k, v in continued.model.state_dict().items())


def test_a_checkpoint_continues_only_its_own_run(load_bench, tmp_path: Path) -> None:
    path = str(tmp_path / "lora.pt")
    bench = load_bench()
    bench.run(CANDIDATES["lora"], fidelity=Fidelity(SCHEDULE, 3), checkpoint=path)
    other_seed = Candidate(CANDIDATES["lora"].methods, 3e-3, seed=4)
    with pytest.raises(ValueError, match="another candidate"):
        bench.run(other_seed, fidelity=Fidelity(SCHEDULE, 6), resume=path)
    with pytest.raises(ValueError, match="schedule"):
        bench.run(CANDIDATES["lora"], fidelity=Fidelity(SCHEDULE + 1, 6), resume=path)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load(str(tmp_path / "bad.pt"))


def test_the_micro_batch_stream_continues_from_its_position() -> None:
    enc = data(10)  # 3 batches an epoch
    whole = list(itertools.islice(micro_batches(enc, 4, seed=7), 8))
    stream = micro_batches(enc, 4, seed=7)
    first = list(itertools.islice(stream, 3))
    assert stream.position == (0, 3)  # the end of epoch 0: the next one opens epoch 1
    rest = list(itertools.islice(micro_batches(enc, 4, 7, stream.position), 5))
    assert all(np.array_equal(a, b) for a, b in zip(whole, first + rest))


def test_the_loop_continues_bit_for_bit_with_dropout_across_epochs() -> None:
    """The loop alone (no bench): dropout 0.5, two micro-batches a step over 3 a epoch."""
    settings = TrainSettings(batch_size=4, grad_accum=2, epochs=4, device="cpu")
    enc, score = data(10), lambda m: {"score": 0.0}
    whole_model = Bag()
    whole = train(whole_model, enc, score, 1e-2, 0, settings, 0)
    saved: list[Checkpoint] = []
    train(Bag(), enc, score, 1e-2, 0, settings, 0, stop_at=3, save_at={3}, save=saved.append)
    assert saved[0].position == (1, 3)  # 6 micro-batches drawn: two epochs
    model = Bag()
    continued = train(model, enc, score, 1e-2, 0, settings, 0, resume=saved[0])
    assert continued.final_loss == whole.final_loss and continued.samples == whole.samples
    assert all(torch.equal(a, b) for a, b in zip(whole_model.parameters(), model.parameters()))


def test_a_method_whose_hook_cannot_continue_trains_from_step_0_and_saves_nothing() -> None:
    class Opaque:
        can_continue = False

    settings = TrainSettings(batch_size=4, device="cpu")
    enc, score = data(12), lambda m: {"score": 0.0}
    donor: list[Checkpoint] = []
    train(Bag(), enc, score, 1e-2, 0, settings, 0, stop_at=2, save_at={2}, save=donor.append)
    model, saved = Bag(), []
    register_step_hook(model, Opaque())
    result = train(model, enc, score, 1e-2, 0, settings, 0, resume=donor[0], save_at={1, 2, 3},
                   save=saved.append)
    assert result.resumed_from == 0 and result.steps == 3 and saved == []


# -- the search continues runs: the refit, a resumed study, a missing checkpoint ----------
ONE = """
name: one
candidates: [lora]
learning_rate: 1.0e-3
methods:
  lora: {r: 2, targets: [query, value]}
"""


def small(model: Path, data: Path, **extra) -> dict:
    return dict(model=str(model), data_dir=str(data), batch_size=16, max_length=48,
                warm_start=False, space="one.yaml", **extra)


def fresh_run(model: Path, data: Path, study, stop_at: int):
    """The study's candidate trained from step 0 in a fresh bench, to ``stop_at``."""
    from autopeft.search.plan import Plan

    plan = Plan.from_dict(study.user_attrs["plan"])
    trial = next(t for t in study.get_trials() if "candidate" in t.user_attrs)
    bench = Bench.load(str(model), DataSettings("sst2", str(data)),
                       TrainSettings(batch_size=16, max_length=48))
    return bench.run(Candidate.from_dict(trial.user_attrs["candidate"]),
                     fidelity=Fidelity(plan.schedule_steps, stop_at))


@pytest.mark.slow
def test_the_refit_continues_the_search_trial_and_ends_where_training_from_0_ends(
        workdir: Path, tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.report.show import rows

    runs = []  # every run the search makes: the trial, then the refit
    real_run = Bench.run
    monkeypatch.setattr(Bench, "run", lambda self, *a, **kw: runs.append(
        real_run(self, *a, **kw)) or runs[-1])
    (workdir / "one.yaml").write_text(ONE)
    study = api_search(study="refit", n_trials=1, pruner="none", trial_steps=4,
                       **small(tiny_model, tiny_data))
    searched, refit = study.get_trials()
    assert searched.user_attrs["steps_trained"] == 4 and refit.user_attrs["confirm_of"] == 0
    assert (refit.user_attrs["steps"], refit.user_attrs["steps_trained"],
            refit.user_attrs["continued_from"]) == (13, 9, 4)
    continued = runs[-1]
    assert continued.result.resumed_from == 4 and refit.values[0] == continued.result.score
    fresh = fresh_run(tiny_model, tiny_data, study, 13)
    assert (continued.result.score, continued.result.final_loss) == (
        fresh.result.score, fresh.result.final_loss)
    a, b = tensors(continued.model), tensors(fresh.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert searched.user_attrs["final_loss"] != fresh.result.final_loss  # 4 steps are not 13
    shown = {r.number: r for r in rows(study, all_trials=True)}  # what show --json prints
    assert (shown[1].steps, shown[1].steps_trained) == (13, 9)
    assert (shown[0].steps, shown[0].steps_trained) == (4, 4)


@pytest.mark.slow
def test_an_interrupted_trial_continues_in_the_resumed_study(
        workdir: Path, tiny_model: Path, tiny_data: Path) -> None:
    from autopeft.protocols import NullReporter
    from autopeft.paths import checkpoints_dir

    class CtrlC(NullReporter):
        def step(self, step: int, total: int, loss: float) -> None:
            if step == 3:
                raise KeyboardInterrupt

    (workdir / "one.yaml").write_text(ONE.replace("{r: 2,", "{r: {choices: [2, 4]},")
                                      .replace("1.0e-3", "{choices: [1.0e-3, 3.0e-3]}"))
    opts = dict(study="again", pruner="median-score", rungs="2,4", refit_share=0.0,
                **small(tiny_model, tiny_data))
    with pytest.raises(KeyboardInterrupt):
        api_search(n_trials=1, progress=CtrlC(), **opts)
    (kept,) = Path(checkpoints_dir("again")).glob("*.pt")
    assert load(str(kept)).step == 2  # its last rung
    study = api_search(n_trials=1, **opts)
    first, second = study.get_trials()
    assert first.state.name == "FAIL" and second.state.name == "COMPLETE"
    a = second.user_attrs  # queued first by the resumed search, the same candidate
    assert a["continues_trial"] == 0 and a["candidate"] == first.user_attrs["candidate"]
    assert (a["continued_from"], a["steps"], a["steps_trained"]) == (2, 4, 2)
    assert a["rung_scores"]["2"] == first.user_attrs["rung_scores"]["2"]
    fresh = fresh_run(tiny_model, tiny_data, study, 4).result
    assert (second.values[0], second.user_attrs["final_loss"]) == (fresh.score, fresh.final_loss)
    # the search ended with no refit to read the complete trial's checkpoint: deleted
    assert not kept.exists() and not list(Path(checkpoints_dir("again")).glob("*.pt"))


@pytest.mark.slow
def test_a_paused_trial_keeps_its_checkpoint_and_one_not_learning_leaves_none(
        workdir: Path, tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pruner pauses a trial at a rung: its checkpoint is saved there, for a promotion.
    The loss check stops a candidate that is not learning for good: nothing is kept."""
    import autopeft.search.objective as objective
    from autopeft.paths import checkpoints_dir
    from autopeft.search.pruner import Decision

    def decide(study, pruner, number, step, **_) -> Decision:  # on at step 2, paused at 4
        return Decision(step == 2, "ahead" if step == 2 else "behind at the rung")

    monkeypatch.setattr(objective, "decide_from_storage", decide)
    (workdir / "one.yaml").write_text(ONE)
    study = api_search(study="cut", n_trials=1, pruner="median-score", rungs="2,4,6",
                       refit_share=0.0, **small(tiny_model, tiny_data))
    (trial,) = study.get_trials()
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_at_step"] == 4
    assert trial.user_attrs["paused"] is True
    (kept,) = Path(checkpoints_dir("cut")).glob("*.pt")
    assert load(str(kept)).step == 4 and load(str(kept)).rung_scores == {
        int(k): v for k, v in trial.user_attrs["rung_scores"].items()}

    class Stuck:  # the loss check: not learning at step 3
        def __init__(self, *a) -> None: ...
        def add(self, step: int, loss: float) -> str | None:
            return "not learning: loss flat" if step == 3 else None
        def moved(self, step: int) -> bool:
            return True

    monkeypatch.setattr(objective, "LossCheck", Stuck)
    study = api_search(study="stuck", n_trials=1, pruner="median-score", rungs="2,4,6",
                       refit_share=0.0, **small(tiny_model, tiny_data))
    (trial,) = study.get_trials()
    assert trial.user_attrs["not_learning"] and not trial.user_attrs["paused"]
    assert not list(Path(checkpoints_dir("stuck")).glob("*.pt"))


def test_time_predictions_count_the_steps_a_trial_ran_itself() -> None:
    from autopeft.search.budget import predict_seconds

    continued = {"wall_seconds": 2.0, "steps": 4, "steps_trained": 2}  # 1 s a step, not 0.5
    refit = {"wall_seconds": 1.0, "steps": 13, "steps_trained": 22, "confirm_of": 0}
    assert predict_seconds([continued, refit], 10) == 10.0
    assert predict_seconds([{"wall_seconds": 2.0, "steps": 4}], 10) == 5.0  # older trials


def test_the_refit_trains_from_0_and_says_so_when_the_checkpoint_is_missing(tmp_path) -> None:
    from types import SimpleNamespace

    from autopeft.protocols import NullReporter
    from autopeft.results import Record
    from autopeft.search.budget import Phase
    from autopeft.search.continuation import Checkpoints, Found
    from autopeft.search.plan import Plan
    from autopeft.search.refit import _runs

    class Notes(NullReporter):
        said: list[str] = []

        def note(self, text: str) -> None:
            self.said.append(text)

    class Recorder:
        resumed: list = []

        def run(self, candidate, on_step=None, fidelity=None, resume=None, **_):
            self.resumed.append(resume)
            start = 4 if resume else 0
            return SimpleNamespace(result=SimpleNamespace(
                score=0.5, peak_memory=1, seconds=1.0, steps=13, resumed_from=start))

    candidate = CANDIDATES["lora"]
    plan = Plan(max_steps=100, trial_steps=4, refit_steps=13, rungs=[4])
    member = Record(0, "COMPLETE", "lora", candidate.to_dict(), 0.5, 10, 10, fidelity="search",
                    steps=4, steps_trained=4, wall_seconds=1.0)
    store = Checkpoints(str(tmp_path / "none-here"), SETTINGS)
    bench, notes = Recorder(), Notes()
    runs = _runs(member, bench, plan, 1, Phase(None), notes, store)
    assert bench.resumed == [None, None] and [r["steps_trained"] for r in runs] == [13, 13]
    assert any("no checkpoint of trial 0" in n and "step 0" in n for n in notes.said)
    # with its checkpoint there, the candidate's own seed continues; the extra seed does not
    path = store.path(candidate, plan.schedule_steps)
    there = SimpleNamespace(find=lambda *a: Found(path, 4, {}), path=store.path)
    bench.resumed.clear()
    runs = _runs(member, bench, plan, 1, Phase(None), notes, there)
    assert bench.resumed == [path, None] and [r["steps_trained"] for r in runs] == [9, 13]


def test_the_refit_continues_a_member_when_its_steps_and_one_scoring_fit() -> None:
    """MiniLM/SST-2 at R = 3: 45 steps in 4.66 s, 1.8 s of them scoring, and 8.5 s left.
    The 89 more steps need about 7.5 s and one scoring; counted per step with the trial's
    scoring in, they needed 9.2 s and the leader was never continued."""
    from types import SimpleNamespace

    from autopeft.protocols import NullReporter
    from autopeft.results import Record
    from autopeft.search.budget import Phase
    from autopeft.search.continuation import Found
    from autopeft.search.plan import Plan
    from autopeft.search.refit import _runs

    class Bench:
        def run(self, candidate, on_step=None, fidelity=None, resume=None, **_):
            return SimpleNamespace(result=SimpleNamespace(
                score=0.76, peak_memory=1, seconds=8.0, steps=134, resumed_from=0))

    plan = Plan(max_steps=134, trial_steps=45, refit_steps=134, rungs=[45])
    left = Phase(8.5, started=0.0, clock=lambda: 0.0)

    def member(scoring: float | None) -> Record:
        return Record(0, "COMPLETE", "lora", CANDIDATES["lora"].to_dict(), 0.61, 10, 10,
                      fidelity="search", steps=45, steps_trained=45, wall_seconds=4.66,
                      scoring_seconds=scoring)
    kept = SimpleNamespace(find=lambda *a: Found("trial-0.pt", 45, {}))  # its rung checkpoint
    runs = _runs(member(1.8), Bench(), plan, 0, left, NullReporter(), kept)
    assert [r["score"] for r in runs] == [0.76]
    assert _runs(member(None), Bench(), plan, 0, left, NullReporter(), kept) == []  # as before


def api_search(**options):
    from autopeft import api

    return api.search("sst2", options.pop("model"), **options)


def test_a_resumed_search_queues_the_trials_cut_short_that_have_a_checkpoint() -> None:
    from types import SimpleNamespace

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from autopeft.search.continuation import Found, requeue_cut_short

    def add(lr: float, state: TrialState, **attrs) -> None:
        cand = Candidate([MethodSpec("lora", {"r": 2})], lr).to_dict()
        study.add_trial(create_trial(
            state=state, params={"lr": lr}, distributions={"lr": FloatDistribution(1e-4, 1e-2)},
            user_attrs={"candidate": cand, **attrs},
            values=[0.5, 1, 1] if state == TrialState.COMPLETE else None))

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    add(1e-3, TrialState.PRUNED, stopped_by_budget=True)  # 0: queued
    add(2e-3, TrialState.FAIL, fail_reason="interrupted")  # 1: queued
    add(3e-3, TrialState.FAIL, fail_reason="interrupted", warm_start="lora")  # 2: a recipe
    add(4e-3, TrialState.PRUNED, stopped_by_budget=True)  # 3: taken up again by 4
    add(4e-3, TrialState.COMPLETE)
    add(5e-3, TrialState.PRUNED, stopped_by_budget=False)  # 5: pruned, not cut short
    here = SimpleNamespace(find=lambda *a: Found("x.pt", 2, {}))
    assert requeue_cut_short(study, here, 12, 4) == [0, 1]
    waiting = study.get_trials(states=[TrialState.WAITING])
    queued = [(t.system_attrs["fixed_params"], t.user_attrs["continues_trial"]) for t in waiting]
    assert queued == [({"lr": 1e-3}, 0), ({"lr": 2e-3}, 1)]
    assert requeue_cut_short(study, here, 12, 4) == []  # queued once
    nowhere = SimpleNamespace(find=lambda *a: None)  # no checkpoint on this machine
    assert requeue_cut_short(optuna.create_study(), nowhere, 12, 4) == []


def test_the_first_member_may_end_a_little_past_the_budget_the_next_must_fit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """MiniLM/SST-2 at R = 3: the leader's continuation needed 11.2 s of the 10.2 s left and
    the front kept its third-fidelity score. The first member now reads a budget 10% longer;
    a member after a refit trial reads the budget itself."""
    from types import SimpleNamespace

    from autopeft.protocols import NullReporter
    from autopeft.search import refit
    from autopeft.search.budget import Phase

    budget = Phase(54.0, started=0.0, clock=lambda: 43.8)  # 10.2 s left
    seen: list[float | None] = []
    members = [SimpleNamespace(number=n, label="lora") for n in (1, 2)]
    refits: list[SimpleNamespace] = []  # refit records in the study (none, then one)
    monkeypatch.setattr(refit, "records", lambda trials: refits)
    monkeypatch.setattr(refit, "_search_front", lambda study: members)
    monkeypatch.setattr(refit, "by_promise", lambda ms, study: ms)
    monkeypatch.setattr(refit, "leaders_first", lambda ms, study: ms)
    monkeypatch.setattr(refit, "spread", lambda ms, taken: ms)
    monkeypatch.setattr(refit, "kind", lambda r: r.refit_of)
    monkeypatch.setattr(refit, "_runs", lambda member, bench, plan, seeds, phase, *a: seen.append(
        phase.left()) or refits.append(SimpleNamespace(refit_of=member.number)) and [])
    study = SimpleNamespace(get_trials=lambda deepcopy=False: [])
    refit.refit_front(study, None, None, 0, budget, NullReporter())
    assert seen == [pytest.approx(10.2 + 5.4), pytest.approx(10.2)]
    # and a continuation that needs 11.2 s fits the first member's budget, not the next one's
    assert budget.stretched(refit.FIRST_MEMBER_GRACE).fits(11.2) and not budget.fits(11.2)


def test_a_study_name_used_again_for_other_data_finds_none_of_the_old_checkpoints(tmp_path) -> None:
    """Checkpoints live under the study's name; a study deleted and created again with that
    name for another model or data must not continue the old runs (same candidate and seed,
    other weights)."""
    from types import SimpleNamespace

    from autopeft.search.continuation import Checkpoints, origin_of

    def study(**data) -> SimpleNamespace:
        return SimpleNamespace(user_attrs={"task": "sst2", "model": "m", "data": data})

    a, again, other = (origin_of(study(train_samples=n)) for n in (1000, 1000, 2000))
    cand = CANDIDATES["lora"]
    old = Checkpoints(str(tmp_path), SETTINGS, a)
    assert Checkpoints(str(tmp_path), SETTINGS, again).path(cand, 100) == old.path(cand, 100)
    assert Checkpoints(str(tmp_path), SETTINGS, other).path(cand, 100) != old.path(cand, 100)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["none", "process"])
def test_a_trial_paused_on_a_thin_rung_is_promoted_when_it_ranks_and_continues(
        workdir: Path, tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch,
        isolation: str) -> None:
    """Pause-and-promote: the pruner stops trial 0 at step 2 while the rung's table is thin;
    its checkpoint stays; once the table ranks it (here: three entries), the search queues
    its continuation before any new candidate, which goes on from step 2 and ends exactly
    where a run from step 0 ends. Decisions no longer depend on arrival order."""
    import autopeft.search.objective as objective
    from autopeft.paths import checkpoints_dir
    from autopeft.search.pruner import Decision, MedianScore, rung_table

    def decide(study, pruner, number, step, **_) -> Decision:
        n = len(rung_table(study.get_trials(deepcopy=False), step))
        keep = number != 0 or n >= 3
        return Decision(keep, f"{n} at the rung")

    monkeypatch.setattr(objective, "decide_from_storage", decide)  # at the rung
    monkeypatch.setattr(MedianScore, "decide", lambda self, table, number, noise=0.0: Decision(
        number != 0 or len(table) >= 3, f"{len(table)} at the rung"))  # when promoting
    (workdir / "one.yaml").write_text(ONE.replace("1.0e-3", "{choices: [1.0e-3, 2.0e-3, 3.0e-3, "
                                                  "4.0e-3, 5.0e-3]}"))
    monkeypatch.setenv("AUTOPEFT_ISOLATION", isolation)  # the child saves it too
    study = api_search(study="pause", n_trials=4, pruner="median-score", rungs="2,6",
                       refit_share=0.0, sampler="random", seed=1, **small(tiny_model, tiny_data))
    trials = study.get_trials()
    paused, promoted = trials[0], next(t for t in trials if t.user_attrs.get("promotes") == 0)
    assert paused.state.name == "PRUNED" and paused.user_attrs["paused"]
    assert paused.user_attrs["prune_reason"].startswith("paused by median-score at step 2")
    assert promoted.number == 3  # right after the third entry at the rung: before a new one
    assert promoted.user_attrs["candidate"] == paused.user_attrs["candidate"]
    a = promoted.user_attrs
    assert promoted.state.name == "COMPLETE" and (a["continued_from"], a["steps"]) == (2, 6)
    assert a["rung_scores"]["2"] == paused.user_attrs["rung_scores"]["2"]
    fresh = fresh_run(tiny_model, tiny_data, study, 6).result  # trial 0's candidate from 0
    assert (promoted.values[0], a["final_loss"]) == (fresh.score, fresh.final_loss)
    from autopeft.report.show import rows, status_word

    shown = {r.number: r for r in rows(study, all_trials=True)}
    assert status_word(shown[0]) == "paused"
    assert shown[3].note == "promoted: continues paused trial 0"
    assert len({t.user_attrs["candidate"]["learning_rate"] for t in trials[:3]}) == 3
    # the search ended: no checkpoint of a complete trial stays; the paused one was promoted
    assert not list(Path(checkpoints_dir("pause")).glob("*.pt"))
