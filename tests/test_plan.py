"""The fidelity plan: chosen from the budget and measured step costs, stored with the study,
obeyed by every trial; overrides; what a short budget still gives."""
from __future__ import annotations

from pathlib import Path

import pytest

from autopeft import api
from autopeft.errors import UserError
from autopeft.search import plan as plan_mod
from autopeft.search.plan import (MIN_RUNG_STEPS, MIN_TRIAL_STEPS, TARGET_CANDIDATES, Costs, Plan,
                                  candidate_seconds, ladder, make_plan, parse_rungs)

MINILM_CPU = Costs(step_seconds=0.2, eval_seconds=3.0, rung_eval_seconds=1.8, start_seconds=0.5)


def test_the_ladder_starts_where_scores_separate() -> None:
    assert ladder(810, 3) == [90, 270, 810]
    assert ladder(270, 3) == [90, 270]  # 30 steps would be chance: dropped
    assert ladder(100, 3) == [100]
    assert ladder(7, 3) == [7]  # a tiny trial: scored once, at its end
    assert all(r >= MIN_RUNG_STEPS for r in ladder(5000, 3))


def test_a_budget_buys_the_target_number_of_candidates_and_a_refit_at_the_longest_fidelity() -> None:
    budget = 1200.0
    p = make_plan(max_steps=2105, budget_seconds=budget, costs=MINILM_CPU)

    def spent(t: int) -> float:  # the search's candidates, then the refit one rung further
        refit = min(2105, 3 * t)
        return (TARGET_CANDIDATES * candidate_seconds(t, 3, MINILM_CPU)
                + plan_mod.REFIT_MEMBERS * (refit * 0.2 + 3.0 + 0.5))

    assert MIN_TRIAL_STEPS <= p.trial_steps < 2105
    assert spent(p.trial_steps) <= budget < spent(p.trial_steps + 1)  # the longest that fits
    assert p.rungs == ladder(p.trial_steps, 3) and p.rungs[-1] == p.trial_steps
    assert p.refit_steps == 3 * p.trial_steps
    assert p.refit_share * budget == pytest.approx(spent(p.trial_steps)
                                                   - TARGET_CANDIDATES * candidate_seconds(p.trial_steps, 3, MINILM_CPU), rel=1e-3)
    assert p.expected_candidates >= TARGET_CANDIDATES
    # more budget: never a shorter trial; a large one: full fidelity, nothing to refit
    longer = make_plan(2105, budget * 2, MINILM_CPU)
    assert longer.trial_steps >= p.trial_steps and longer.refit_steps >= p.refit_steps
    huge = make_plan(2105, 1e6, MINILM_CPU)
    assert huge.trial_steps == huge.refit_steps == 2105 and huge.refit_share == 0.0
    seeded = make_plan(2105, 1e6, MINILM_CPU, seeds=3)  # extra seeds: a refit even then
    assert seeded.refit_share > 0


def test_a_short_budget_trains_the_minimum_fidelity_and_says_how_many_candidates_fit() -> None:
    p = make_plan(2105, 240.0, MINILM_CPU)
    assert p.trial_steps == MIN_TRIAL_STEPS
    assert p.expected_candidates < TARGET_CANDIDATES
    assert any("fits about" in note for note in p.notes)
    assert "plan (budget)" in p.describe() and "0.200 s/step" in p.describe()


def test_without_a_budget_trials_train_everything_and_overrides_win() -> None:
    p = make_plan(500, None, None)
    assert (p.trial_steps, p.refit_steps, p.rungs) == (500, 500, [167, 500])
    o = make_plan(500, 600.0, MINILM_CPU, trial_steps=90)
    assert o.trial_steps == 90 and o.source == "override"
    r = make_plan(500, None, None, rungs=[10, 40])
    assert (r.trial_steps, r.rungs, r.refit_steps) == (40, [10, 40], 500)
    assert make_plan(500, None, None, trial_steps=40, refit_share=0.0).refit_steps == 40
    assert Plan.from_dict(o.to_dict()) == o  # stored with the study, read back the same
    assert parse_rungs("30, 90,270") == [30, 90, 270]
    for bad in ("90,30", "0,5", "a,b", ""):
        with pytest.raises(UserError):
            parse_rungs(bad)


def small(model: Path, data: Path, **extra) -> dict:
    return dict(model=str(model), data_dir=str(data), batch_size=16, max_length=48,
                warm_start=False, **extra)


def test_the_search_measures_costs_stores_the_plan_and_every_trial_follows_it(
        workdir: Path, tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake step costs (the probe's measurement) make the plan known in advance."""
    import autopeft.search.probe as probe_mod

    fake = Costs(step_seconds=0.05, eval_seconds=0.2, rung_eval_seconds=0.1, start_seconds=0.1)
    monkeypatch.setattr(probe_mod, "probe", lambda bench, rows: fake)
    from autopeft.report.progress import NullReporter

    notes: list[str] = []

    class Notes(NullReporter):
        def note(self, text: str) -> None:
            notes.append(text)

    study = api.search("sst2", study="planned", budget="20m", n_trials=2, progress=Notes(),
                       **small(tiny_model, tiny_data))
    stored = Plan.from_dict(study.user_attrs["plan"])
    assert stored.costs == fake and stored.trial_steps == 13  # 200 rows / batch 16: all of it
    assert any(n.startswith("plan (budget)") for n in notes)
    for t in study.get_trials():
        if t.state.name == "COMPLETE" and "confirm_of" not in t.user_attrs:
            assert t.user_attrs["rungs"] == stored.rungs and t.user_attrs["steps"] == 13
    from autopeft.results import SEED_NOISE

    assert study.user_attrs["noise"] == SEED_NOISE  # accuracy: the measured seed noise


def test_workers_stop_searching_when_the_refit_share_begins(
        workdir: Path, tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline every worker obeys is the end of the search phase, not of the budget: a
    worker that starts in the refit's share asks the study for no trial. The clock is the
    test's (``faults.Clock``), so the deadlines are exact and nothing waits."""
    import functools

    import optuna

    import autopeft.search.study as study_mod
    from faults import Clock

    clock = Clock()
    start = clock()
    monkeypatch.setattr(study_mod, "run_search", functools.partial(study_mod.run_search,
                                                                   clock=clock))
    study = api.search("sst2", study="share", budget="60s", n_trials=1, trial_steps=4,
                       refit_share=0.5, **small(tiny_model, tiny_data))
    assert study.user_attrs["budget"] == {"seconds": 60.0, "started": start, "refit_share": 0.5}
    assert study.user_attrs["deadline"] == start + 30  # the search phase's end
    before = len(study.get_trials())

    def no_ask(self, *args, **kwargs):  # raising, not counting: a worker that asks would
        raise AssertionError("a worker asked for a trial after the search phase")  # never end

    monkeypatch.setattr(optuna.Study, "ask", no_ask)
    clock.t = start + 45  # in the refit's share: the budget is not over, the search is
    after = study_mod.run_worker("share", isolation="none", clock=clock)
    assert len(after.get_trials()) == before
