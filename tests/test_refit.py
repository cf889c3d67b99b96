"""What a search's result means: the refit front, the provisional front of a budget that
ended early, noise ties, and no candidate trained twice (resumed, or two processes)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autopeft import api
from autopeft.results import (SEED_NOISE, Record, default_noise, front, rank_correlation,
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
    assert default_noise("accuracy") == SEED_NOISE and default_noise("bleu")["final"] == 0.0
    # the refit's own measurement, where larger, replaces the default
    refit = rec(2, 0.8, 10, fidelity="refit", seeds=3, score_std=0.03)
    assert score_noise({"noise": SEED_NOISE}, [refit]) == pytest.approx(0.03)
    assert score_noise({"noise": SEED_NOISE}, []) == SEED_NOISE["final"]


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
