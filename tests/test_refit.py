"""What a search's result means: the refit front, the provisional front of a budget that
ended early, noise ties, and no candidate trained twice (resumed, or two processes)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autopeft import api
from autopeft.results import (Record, front, hidden_best, rank_correlation, sampling_noise,
                              study_noise,
                              score_noise)

ONE_LORA = """
name: one-lora
candidates: [lora]
learning_rate: {choices: [1.0e-3, 3.0e-3]}
methods:
  lora: {r: {choices: [2, 4]}, targets: [query, value]}
"""


def small(model: Path, data: Path, **extra) -> dict:
    return dict(model=str(model), data_dir=str(data), batch_size=16, max_length=48,
                warm_start=False, **extra)


def rec(n: int, score: float, params: int, memory: int = 100, fidelity: str = "search",
        **kw) -> Record:
    return Record(n, "COMPLETE", "x", {}, score, params, memory, fidelity=fidelity, **kw)


def test_scores_inside_the_noise_are_ties_so_the_cheaper_candidate_wins() -> None:
    full, adapter = rec(0, 0.819, 22_000_000, 400), rec(1, 0.801, 220_000, 200)
    assert {r.number for r in front([full, adapter])} == {0, 1}
    assert [r.number for r in front([full, adapter], score_noise=0.02)] == [1]
    # the refit's own measurement, where larger, replaces the sampling error
    noise = study_noise("accuracy", 512, 872)
    refit = rec(2, 0.8, 10, fidelity="refit", seeds=3, score_std=0.03)
    assert score_noise({"noise": noise}, [refit]) == pytest.approx(0.03)
    # before any final score: the bound at p = 0.5; then at the best score held
    assert score_noise({"noise": noise}, []) == pytest.approx(0.5 / 872 ** 0.5, abs=1e-4)
    assert score_noise({"noise": noise}, [full, adapter]) == pytest.approx(
        (0.819 * 0.181 / 872) ** 0.5)
    # a study that stored a fixed noise (before the rows were kept) keeps it
    assert score_noise({"noise": {"rung": 0.028, "final": 0.006}}, []) == 0.006


def test_the_tie_noise_is_the_metrics_sampling_error_at_the_rows_scored() -> None:
    """Every metric with a sampling model gets ties (CoLA's MCC and STS-B's correlations had
    none), shrinking with the rows scored: rungs on a subset tie wider than the end."""
    assert sampling_noise("accuracy", 500) == pytest.approx(0.02236, abs=1e-5)
    assert sampling_noise("accuracy", 500, 0.85) == pytest.approx(0.01597, abs=1e-5)
    assert sampling_noise("matthews", 500) == pytest.approx(0.04472, abs=1e-5)
    assert sampling_noise("pearson_spearman", 400, 0.8) == pytest.approx(0.36 / 20)
    assert sampling_noise("f1_accuracy", 100) == pytest.approx(0.05)
    assert sampling_noise("bleu", 500) == 0.0 and sampling_noise("accuracy", 1) == 0.0
    noise = study_noise("matthews", 512, 1043)
    assert noise["rung"] > noise["final"] > 0 and noise["rung_rows"] == 512
    assert study_noise("accuracy", None, 300)["rung_rows"] == 300  # rungs score everything


def test_the_front_is_of_the_best_fidelity_present() -> None:
    search = [rec(0, 0.70, 100), rec(1, 0.80, 1000)]
    refit = [rec(2, 0.85, 100, fidelity="refit", refit_of=0, search_score=0.70)]
    provisional = [Record(3, "PRUNED", "y", {}, 0.9, 10, 10, fidelity="provisional")]
    assert [r.number for r in front(search + provisional)] == [1, 0]
    assert [r.number for r in front(search + refit + provisional)] == [2]
    unreached = rec(4, 0.90, 5000)  # the refit's budget did not reach it: it stays, as search
    assert [r.number for r in front(search + refit + [unreached])] == [4, 2]
    assert [r.number for r in front(provisional)] == [3]
    assert rank_correlation(refit) is None  # fewer than 3 pairs


@pytest.mark.slow
def test_the_refit_retrains_the_front_longer_and_stands_in_for_it(
        workdir: Path, tiny_model: Path, tiny_data: Path) -> None:
    (workdir / "one.yaml").write_text(ONE_LORA)
    study = api.search("sst2", study="refit", n_trials=3, space="one.yaml", pruner="none",
                       trial_steps=4, **small(tiny_model, tiny_data))
    plan = study.user_attrs["plan"]
    assert (plan["trial_steps"], plan["refit_steps"]) == (4, 13)
    trials = study.get_trials()
    searched = [t for t in trials if "confirm_of" not in t.user_attrs and t.state.name == "COMPLETE"]
    refits = [t for t in trials if "confirm_of" in t.user_attrs]
    assert searched and refits and all(t.user_attrs["steps"] == 4 for t in searched)
    by_number = {t.number: t for t in trials}
    for t in refits:
        a = t.user_attrs
        original = by_number[a["confirm_of"]]
        assert a["refit_steps"] == 13 and a["search_score"] == original.values[0]
        assert a["confirm_seeds"] == [0] and t.values[0] == a["confirm_scores"][0]
    shown = api.front(study)
    assert any(r.fidelity == "refit" and r.search_score is not None for r in shown)
    assert not {t.user_attrs["confirm_of"] for t in refits} & {r.number for r in shown}
    everything = {r.number: r for r in api.front(study, all_trials=True)}
    assert all(everything[t.user_attrs["confirm_of"]].superseded_by == t.number for t in refits)


def test_a_budget_that_ends_before_any_trial_completes_still_gives_a_provisional_front(
        workdir: Path, tiny_model: Path, tiny_data: Path, ticking) -> None:
    """On the test's clock (``ticking``: loading 1 s, each step 0.5 s) a 4 s budget ends
    long before a 13-step trial could (7.5 s), after its rung at step 2."""
    study = api.search("sst2", study="short", budget="4s", space="slow.yaml", rungs="2,13",
                       refit_share=0.0, **small(tiny_model, tiny_data))
    assert not [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert study.get_trials()[0].user_attrs["stopped_by_budget"] is True
    shown = api.front(study)
    assert shown and all(r.fidelity == "provisional" and r.steps == 2 for r in shown)
    assert shown[0].score == study.get_trials()[0].user_attrs["rung_scores"]["2"]


@pytest.mark.slow
def test_a_resumed_search_never_trains_a_complete_candidate_again(
        workdir: Path, tiny_model: Path, tiny_data: Path) -> None:
    (workdir / "one.yaml").write_text(ONE_LORA)
    opts = small(tiny_model, tiny_data, study="again", space="one.yaml", pruner="none")
    api.search("sst2", n_trials=3, **opts)
    study = api.search("sst2", n_trials=4, **opts)  # only 4 candidates exist in this space
    trained: dict[str, int] = {}
    for t in study.get_trials():
        if "confirm_of" in t.user_attrs or "steps" not in t.user_attrs:
            continue
        key = repr(t.user_attrs["candidate"])
        assert key not in trained, f"trial {t.number} re-trained trial {trained.get(key)}"
        trained[key] = t.number
    dups = [t for t in study.get_trials() if t.user_attrs.get("duplicate_of") is not None]
    assert all("steps" not in t.user_attrs for t in dups)


@pytest.mark.slow
def test_two_processes_on_one_study_do_not_train_the_same_candidate(
        workdir: Path, tiny_model: Path, tiny_data: Path) -> None:
    (workdir / "one.yaml").write_text(ONE_LORA)
    api.search("sst2", n_trials=1, study="pair", space="one.yaml", pruner="none",
               **small(tiny_model, tiny_data))  # the study exists before both start
    argv = ["search", "--task", "sst2", "--model", str(tiny_model), "--data-dir", str(tiny_data),
            "--study", "pair", "--space", "one.yaml", "--pruner", "none", "--no-warm-start",
            "--batch-size", "16", "--max-length", "48", "--n-trials", "3", "--quiet",
            "--isolation", "none"]
    procs = [subprocess.Popen([sys.executable, "-m", "autopeft", *argv], cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    study = api.load_study("pair")
    trained = [repr(t.user_attrs["candidate"]) for t in study.get_trials()
               if "steps" in t.user_attrs and "confirm_of" not in t.user_attrs]
    assert len(trained) == len(set(trained))


def test_a_refit_out_of_time_says_so_once_naming_the_members_it_left(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unseen sentence-pair task printed 'budget reached while re-training trial N' 32
    times; the members the time left cannot re-train are named in one line."""
    from types import SimpleNamespace

    from autopeft.protocols import NullReporter
    from autopeft.search import refit
    from autopeft.search.budget import Phase

    lora = {"methods": [{"name": "lora", "params": {"r": 8}}], "learning_rate": 1e-3, "seed": 0}
    members = [SimpleNamespace(number=n, label="lora", candidate=lora, fidelity="search",
                               steps=32, steps_trained=32, wall_seconds=30.0,
                               scoring_seconds=2.0, setup_seconds=0.5, refit_of=None,
                               trainable_params=74_498)
               for n in (3, 5, 9)]
    monkeypatch.setattr(refit, "records", lambda trials: [])
    monkeypatch.setattr(refit, "_search_front", lambda study: members)
    monkeypatch.setattr(refit, "by_promise", lambda ms, study: ms)
    monkeypatch.setattr(refit, "leaders_first", lambda ms, study: ms)
    notes: list[str] = []

    class Notes(NullReporter):
        def note(self, text: str) -> None:
            notes.append(text)

    plan = SimpleNamespace(refit_steps=96, schedule_steps=96)
    budget = Phase(100.0, started=0.0, clock=lambda: 95.0)  # 5 s left: no continuation fits
    study = SimpleNamespace(get_trials=lambda deepcopy=False: [])
    assert refit.refit_front(study, None, plan, 0, budget, Notes()) == 0
    assert notes == ["budget reached: the refit left trials 3, 5, 9 at their search fidelity"]


def test_a_shorter_run_never_dominates_a_longer_one_on_the_front() -> None:
    """Like with like: a 32-step (IA)3 at 0.706 with 537 MiB 'dominated' the 96-step refit
    of its kind at 0.708 with 795 MiB (peak memory grows with the batches a run has seen),
    and scored below the majority class on the test split. The longer run stays; it may
    still dominate a shorter one."""
    MiB = 2**20
    short = rec(1, 0.706, 3_000, 537 * MiB, steps=32)
    long = rec(2, 0.708, 3_000, 795 * MiB, fidelity="refit", steps=96)
    assert {r.number for r in front([short, long], 0.03)} == {1, 2}
    assert hidden_best([short, long], 0.03) is None
    better_long = rec(3, 0.80, 2_000, 500 * MiB, fidelity="refit", steps=96)
    assert [r.number for r in front([short, better_long], 0.03)] == [3]


def test_a_refit_with_room_for_two_members_takes_the_other_size_band_before_a_variant() -> None:
    """Three front members: two LoRAs tied at the best score (40K and 45K parameters, one
    size band; the larger uses less memory) and a small LoRA (4K) scoring less. The tied
    leaders come first (``leaders_first``); the budget has room for two members, so
    ``spread`` gives the second place to the other size band: a distinct point of the front
    before a variant of one."""
    from types import SimpleNamespace

    import optuna
    from optuna.distributions import FloatDistribution

    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.protocols import NullReporter
    from autopeft.search.budget import Phase
    from autopeft.search.plan import Plan
    from autopeft.search.refit import _search_front, by_promise, leaders_first, refit_front
    from autopeft.search.summary import Scales

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("hv_scales", Scales(1_000_000).to_dict())
    members = {"best": (0.80, 40_000, 9_000_000, 3e-3), "variant": (0.80, 45_000, 8_000_000, 1e-3),
               "small": (0.70, 4_000, 8_500_000, 2e-3)}
    for label, (score, params, memory, lr) in members.items():
        cand = Candidate([MethodSpec("lora", {"r": 2})], lr).to_dict()
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, distributions={"lr": FloatDistribution(1e-4, 1e-2)},
            values=[score, params, memory],
            user_attrs={"candidate": cand, "label": label, "trainable_params": params,
                        "steps": 4, "steps_trained": 4, "wall_seconds": 4.0}))
    order = [m.label for m in leaders_first(by_promise(_search_front(study), study), study)]
    assert order[2] == "small"  # without spread the two 40K LoRAs would take the budget

    clock = SimpleNamespace(t=0.0)

    class Bench:  # each run takes 10 s of the test's clock
        def run(self, candidate, on_step=None, fidelity=None, resume=None, **_):
            clock.t += 10.0
            return SimpleNamespace(result=SimpleNamespace(
                score=0.9, peak_memory=1, seconds=10.0, steps=13, resumed_from=0))

    plan = Plan(max_steps=13, trial_steps=4, refit_steps=13, rungs=[4])
    # 9 s predicted per member (4 s for 4 steps, 9 more to go): room for two, not three
    budget = Phase(24.0, started=0.0, clock=lambda: clock.t)
    assert refit_front(study, Bench(), plan, 0, budget, NullReporter()) == 2
    refitted = [t.user_attrs["label"] for t in study.get_trials() if "confirm_of" in t.user_attrs]
    assert refitted == [order[0], "small"]
