"""The fidelity plan: chosen from the budget and measured step costs, stored with the study,
obeyed by every trial; overrides; what a short budget still gives."""
from __future__ import annotations

from pathlib import Path

import pytest

from autopeft import api
from autopeft.errors import UserError
from autopeft.search import plan as plan_mod
from autopeft.search.plan import (REFIT_MEMBERS, TARGET_CANDIDATES, Costs, Plan, Throughput,
                                  candidate_seconds,
                                  first_rung, ladder, make_plan, parse_rungs, refit_seconds,
                                  continuation_seconds, refit_shortfall)

MINILM_CPU = Costs(step_seconds=0.2, eval_seconds=3.0, rung_eval_seconds=1.8, start_seconds=0.5)


def test_rungs_are_geometric_up_to_full_fidelity_and_start_after_the_warm_up() -> None:
    # MiniLM/SST-2, 270 steps, warm-up 6%: 16 warm-up steps + a loss window -> no rung at 30
    # (every recipe scored chance there: BENCHMARKS.md, "fidelity"), one at 90.
    first = first_rung(270, 0.06, MINILM_CPU)
    assert 30 < first <= 90
    assert ladder(270, 3, min_rung=first) == [90, 270]
    # a short full fidelity still gets rungs (the old 90-step floor left 125 steps with none)
    assert len(ladder(125, 3, min_rung=first_rung(125, 0.06, MINILM_CPU))) >= 2
    # the first rung moves with the warm-up, and never costs more to score than to reach
    assert first_rung(270, 0.2) > first_rung(270, 0.06)
    slow_eval = Costs(step_seconds=0.01, eval_seconds=3.0, rung_eval_seconds=1.8)
    assert first_rung(125, 0.06, slow_eval) >= 180
    assert ladder(810, 3, levels=3, min_rung=1) == [90, 270, 810]
    assert ladder(7, 3, min_rung=50) == [7]  # a tiny run: scored once, at its end


@pytest.mark.parametrize("max_steps", [125, 270, 2105])
@pytest.mark.parametrize("ratio", [1.0, 1.3, 2.0, 3.0, 10.0, 40.0, 200.0])
def test_at_every_ratio_above_one_the_best_members_reach_full_fidelity_within_the_budget(
        max_steps: int, ratio: float) -> None:
    asked = ratio * MINILM_CPU.run_seconds(max_steps)
    p = make_plan(max_steps, asked, MINILM_CPU)
    assert p.ratio == pytest.approx(ratio, abs=0.01) and f"R = {ratio:.1f}" in p.describe()
    budget = asked * (1 - plan_mod.PLAN_RESERVE)  # what the plan may spend
    if budget < MINILM_CPU.run_seconds(max_steps):  # R = 1: one run, the whole schedule
        assert p.expected_candidates == 1 and p.trial_steps == p.refit_steps == p.schedule_steps
        assert p.trial_steps == max_steps  # into the reserve, not past the budget asked
        assert MINILM_CPU.run_seconds(p.trial_steps) <= asked * 1.0001
        return
    assert p.refit_steps == p.schedule_steps == max_steps  # the refit (or the trials) end there
    assert p.rungs[-1] == p.trial_steps and p.rungs == sorted(p.rungs)
    members = p.refit_members or 0
    spent = (refit_seconds(p.trial_steps, max_steps, members, 1, MINILM_CPU)
             + (p.expected_candidates or 1) * candidate_seconds(p.trial_steps, 3, MINILM_CPU, rungs=p.rungs))
    assert spent <= budget * 1.001  # what the plan expects to run fits
    if p.trial_steps < max_steps:  # the search stops part-way: the refit continues members
        assert 1 <= members <= REFIT_MEMBERS and p.refit_share > 0
        assert p.refit_share * budget == pytest.approx(
            refit_seconds(p.trial_steps, max_steps, members, 1, MINILM_CPU), rel=1e-3)
    else:
        assert p.refit_share == 0.0
    if ratio >= 40:  # a long budget: many candidates, pruned at geometric rungs to the end
        assert p.expected_candidates >= TARGET_CANDIDATES and len(p.rungs) >= 2


def test_more_budget_never_buys_less() -> None:
    plans = [make_plan(2105, r * MINILM_CPU.run_seconds(2105), MINILM_CPU) for r in (1.5, 3, 10, 40)]
    assert [p.expected_candidates for p in plans] == sorted(p.expected_candidates for p in plans)
    assert [p.trial_steps for p in plans] == sorted(p.trial_steps for p in plans)


def test_below_one_the_plan_says_so_and_trains_the_first_recipe_as_long_as_it_can() -> None:
    budget = 0.5 * MINILM_CPU.run_seconds(2105)
    p = make_plan(2105, budget, MINILM_CPU)
    assert p.ratio == 0.5 and "below 1" in p.describe()
    assert any("no full-fidelity run" in n for n in p.notes)
    assert p.refit_steps < 2105 and p.schedule_steps == p.refit_steps  # its schedule ends
    run = MINILM_CPU.run_seconds(p.refit_steps)
    assert run <= budget < run + 0.3 * budget  # nearly all of the budget trains it
    # a long schedule and cheap scoring: probes are worth their share, then the most
    # promising one goes on
    cheap = Costs(step_seconds=0.2, eval_seconds=0.3, rung_eval_seconds=0.2, start_seconds=0.1)
    q = make_plan(20000, 0.5 * cheap.run_seconds(20000), cheap, warmup_ratio=0.0)
    assert q.expected_candidates >= 3 and q.trial_steps < q.refit_steps < 20000
    assert q.refit_members == 1 and "probes" in q.notes[0]


@pytest.mark.parametrize("ratio", [0.9, 0.97, 1.05])
def test_within_the_probe_s_error_of_one_run_the_first_recipe_trains_to_full_fidelity(
        ratio: float) -> None:
    """R 0.9-1.1: one full run, a little past the budget if it must (a cut schedule at R 0.91
    ended at chance where the full one learned)."""
    costs = Costs(step_seconds=0.0576, eval_seconds=2.4, rung_eval_seconds=2.4, start_seconds=0.11)
    p = make_plan(162, ratio * costs.run_seconds(162), costs)
    assert (p.trial_steps, p.refit_steps, p.schedule_steps, p.rungs) == (162, 162, 162, [162])
    assert p.expected_candidates == 1 and not p.refit_share and "full fidelity" in p.notes[0]
    assert "no run reaches full fidelity" not in p.describe()
    cut = make_plan(162, 0.85 * costs.run_seconds(162), costs)  # below it: cut to what fits
    assert cut.trial_steps < 162 and "below 1" in cut.describe()


def test_extra_seeds_are_reserved_at_the_full_cost() -> None:
    huge = make_plan(2105, 1e6, MINILM_CPU)
    assert huge.trial_steps == huge.refit_steps == 2105 and huge.refit_share == 0.0
    seeded = make_plan(2105, 1e6, MINILM_CPU, seeds=3)  # extra seeds: a refit even then
    assert seeded.refit_share > 0


def test_without_a_budget_trials_train_everything_and_overrides_win() -> None:
    p = make_plan(500, None, None)
    assert (p.trial_steps, p.refit_steps, p.rungs) == (500, 500, [56, 167, 500])
    o = make_plan(500, 600.0, MINILM_CPU, trial_steps=90)
    assert o.trial_steps == 90 and o.source == "override" and o.refit_steps == 500
    r = make_plan(500, None, None, rungs=[10, 40])
    assert (r.trial_steps, r.rungs, r.refit_steps) == (40, [10, 40], 500)
    assert make_plan(500, None, None, trial_steps=40, refit_share=0.0).refit_steps == 40
    assert Plan.from_dict(o.to_dict()) == o  # stored with the study, read back the same
    old = {k: v for k, v in o.to_dict().items() if k not in ("ratio", "budget_seconds", "refit_members")}
    assert Plan.from_dict(old).trial_steps == 90  # a plan stored by an earlier version
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
    searched = [t for t in study.get_trials()
                if t.state.name == "COMPLETE" and "confirm_of" not in t.user_attrs]
    assert len(searched) == 2  # n_trials=2, pruner on: both ran every rung here
    for t in searched:
        assert t.user_attrs["rungs"] == stored.rungs and t.user_attrs["steps"] == 13
    # the ties come from the rows scored (binomial at 0.5): rungs and end score all 64 rows
    rows = study.user_attrs["noise"]["final_rows"]
    assert rows == 64 and study.user_attrs["noise"]["rung"] == pytest.approx(0.5 / 8, abs=1e-4)
    assert any("Ties within 0.062 at rungs, 0.062 at the front: binomial standard error at "
               "64 / 64 rows" in n for n in notes)


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


def test_the_refit_phase_is_the_plans_share_of_the_time_it_was_made_for() -> None:
    """A 36 s budget planned after 10 s of loading and probing (26 s left) with a refit
    share of 0.5: the refit gets the last 13 s, so the search phase ends at 23 s, not at
    18 s (a share of the whole budget, which left the one trial of an R = 1 plan 8 s)."""
    from autopeft.search.budget import Budget
    from autopeft.search.study import refit_phase

    now = [100.0]
    budget = Budget(36.0, 100.0, clock=lambda: now[0])
    now[0] = 110.0
    plan = Plan(max_steps=152, trial_steps=51, refit_steps=152, rungs=[51], refit_share=0.5,
                budget_seconds=budget.left())
    phased = refit_phase(budget, plan)
    assert phased.search.end == pytest.approx(123.0) and phased.end == 136.0
    assert phased.search.left() == pytest.approx(13.0)
    # a share the user asked for (--refit-share) is of the whole budget
    assert refit_phase(budget, plan, asked=0.5).search.end == pytest.approx(118.0)


def _small_plan(members: int | None = 1) -> Plan:
    """MiniLM/SST-2 at R = 3 as measured: 64 s after the probe, 25% kept for one member."""
    return Plan(max_steps=152, trial_steps=51, refit_steps=152, rungs=[51], refit_share=0.25,
                budget_seconds=64.0, refit_members=members, expected_candidates=4)


def test_the_refit_shortfall_is_what_its_members_need_beyond_the_kept_share() -> None:
    plan = _small_plan()
    assert refit_shortfall(plan, 22.7) == pytest.approx(22.7 - 16.0)  # the probe said 16 s
    assert refit_shortfall(plan, 10.0) == 0.0  # the share suffices
    assert refit_shortfall(_small_plan(members=3), 10.0) == pytest.approx(30.0 - 16.0)
    assert refit_shortfall(_small_plan(members=None), 22.7) == 0.0  # no refit
    assert refit_shortfall(plan, None) == 0.0  # nothing measured yet


def test_a_trial_starts_only_if_the_refit_keeps_what_its_members_need() -> None:
    """At the rate the trials measured (11.5 s for 51 steps), the next trial needs 11.5 s and
    the refit's member 22.7 s, 6.7 s more than the plan kept: 18.2 s in all. Before, the
    search started a fourth trial with 15 s left and the refit found too little."""
    import optuna

    from autopeft.search.budget import Phase
    from autopeft.search.objective import TrialRunner

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(
            values=[0.7, 1.0, 1.0], user_attrs={"wall_seconds": 11.5, "steps": 51}))
    runner = TrialRunner(study, None, None, None, None, Phase(None), None, _small_plan())
    member = 11.5 / 51 * 101
    assert runner.time_needed() == pytest.approx(11.5 + member - 16.0)
    assert not Phase(15.0, started=0.0, clock=lambda: 0.0).fits(runner.time_needed())
    assert Phase(15.0, started=0.0, clock=lambda: 0.0).fits(runner.predicted_seconds())  # before
    # Trials that say how long they scored: the member pays its steps and one scoring.
    scored = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for _ in range(3):
        scored.add_trial(optuna.trial.create_trial(values=[0.7, 1.0, 1.0], user_attrs={
            "wall_seconds": 11.5, "scoring_seconds": 4.7, "steps": 51}))
    runner = TrialRunner(scored, None, None, None, None, Phase(None), None, _small_plan())
    assert runner.time_needed() == pytest.approx(11.5 + (6.8 / 51 * 101 + 4.7) - 16.0)
    # ... and how long before their first step: the member, a continuation, pays it no more.
    set_up = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for _ in range(3):
        set_up.add_trial(optuna.trial.create_trial(values=[0.7, 1.0, 1.0], user_attrs={
            "wall_seconds": 11.5, "scoring_seconds": 4.7, "setup_seconds": 0.5, "steps": 51}))
    runner = TrialRunner(set_up, None, None, None, None, Phase(None), None, _small_plan())
    assert runner.time_needed() == pytest.approx(11.5 + (6.3 / 51 * 101 + 4.7) - 16.0)
    no_refit = TrialRunner(study, None, None, None, None, Phase(None), None,
                           Plan(max_steps=152, trial_steps=152, refit_steps=152, rungs=[51, 152]))
    assert no_refit.time_needed() == pytest.approx(11.5 / 51 * 152)


def test_one_slow_first_trial_does_not_predict_every_trial_as_slow() -> None:
    """The real B arm on SST-2 drew prompt tuning first (about four times the probe's LoRA
    a step) and at R = 10 stopped after 2 trials with half its budget left: the probe counts
    as one trial until the trials outnumber it."""
    import optuna

    from autopeft.search.budget import Phase
    from autopeft.search.objective import TrialRunner
    from autopeft.search.plan import Costs

    plan = Plan(max_steps=125, trial_steps=42, refit_steps=42, rungs=[42],
                costs=Costs(step_seconds=0.15, eval_seconds=2.0, rung_eval_seconds=1.0))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])

    def slow_trial() -> None:
        study.add_trial(optuna.trial.create_trial(
            values=[0.5, 1.0, 1.0], user_attrs={"wall_seconds": 47.0, "steps": 42}))

    runner = TrialRunner(study, None, None, None, None, Phase(None), None, plan)
    assert runner.time_needed() is None  # nothing measured: the first trial always starts
    slow_trial()
    assert runner.time_needed() == pytest.approx((47.0 + 8.8) / 2)
    assert Phase(35.0, started=0.0, clock=lambda: 0.0).fits(runner.time_needed())
    slow_trial()
    slow_trial()
    assert runner.time_needed() == pytest.approx(47.0)  # three say it: every trial is slow


def _measured(study, label: str, wall: float, steps: int = 42, tokens: int = 0) -> None:
    import optuna

    attrs = {"wall_seconds": wall, "steps": steps, "label": label}
    if tokens:
        attrs["input_tokens"] = tokens
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0, 1.0], user_attrs=attrs))


def test_the_next_trial_is_predicted_from_its_own_tokens_and_method() -> None:
    """The real B arm on SST-2 (MiniLM, rows of 14 padded tokens) drew prompt tuning with 50
    virtual tokens first: 40 s for 42 steps where the probe's LoRA took 11 s. That trial
    says little of a LoRA (its tokens are taken out of its rate) and much of another prompt
    tuning; a method measured (full fine-tuning) predicts itself."""
    import optuna

    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.search.budget import Phase, token_factor
    from autopeft.search.objective import TrialRunner
    from autopeft.search.plan import Costs

    assert token_factor(50, 14.0) == pytest.approx(64 / 14)
    assert token_factor(50, 0.0) == token_factor(0, 14.0) == 1.0  # unknown rows, no tokens
    plan = Plan(max_steps=125, trial_steps=42, refit_steps=42, rungs=[42],
                costs=Costs(step_seconds=0.15, eval_seconds=2.0, rung_eval_seconds=1.0,
                            row_tokens=14.0))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    runner = TrialRunner(study, None, None, None, None, Phase(None), None, plan)
    lora = Candidate([MethodSpec("lora")], 1e-3)
    prompt = Candidate([MethodSpec("prompt", {"num_virtual_tokens": 50})], 3e-2)
    full = Candidate([MethodSpec("full")], 4e-5)
    probe = 8.8  # 42 x 0.15 s + 2.0 s + 0.5 s of start
    # Before any trial only the virtual tokens are known: the probe's rate, scaled by them
    # (the real one drew prompt tuning first at R = 3 and spent the search phase on it).
    assert runner.time_needed() is None and runner.time_needed(lora) is None
    assert runner.time_needed(prompt) == pytest.approx(probe * token_factor(50, 14.0))
    assert not Phase(21.0, started=0.0, clock=lambda: 0.0).fits(runner.time_needed(prompt))
    _measured(study, "prompt", 40.4, tokens=50)
    per_token = 40.4 / token_factor(50, 14.0)  # 8.8 s: the prompt trial without its tokens
    assert runner.time_needed() == pytest.approx((per_token + probe) / 2)
    assert runner.time_needed(lora) == runner.time_needed()  # no trial of LoRA yet
    assert runner.time_needed(prompt) == pytest.approx(40.4)  # its own method says it
    assert Phase(21.0, started=0.0, clock=lambda: 0.0).fits(runner.time_needed(lora))
    assert not Phase(21.0, started=0.0, clock=lambda: 0.0).fits(runner.time_needed(prompt))
    _measured(study, "full", 18.6)
    _measured(study, "lora", 11.5)
    assert runner.time_needed(full) == pytest.approx(18.6)
    assert runner.time_needed(lora) == pytest.approx(11.5)
    # prompt tuning at 20 tokens where one at 50 was measured: its tokens scale it
    fewer = Candidate([MethodSpec("prompt", {"num_virtual_tokens": 20})], 3e-2)
    assert runner.time_needed(fewer) == pytest.approx(per_token * token_factor(20, 14.0))


def test_a_candidate_predicted_not_to_fit_is_not_started_and_the_search_says_why(
        tmp_path: Path) -> None:
    """Once sampled, a candidate predicted to outlast the search phase is told FAIL untrained
    (``not_started``, with its reason) and said; it is no result, no failure in the counts.
    The search samples again, and ends after ``MAX_REFUSED`` in a row. A cheaper candidate
    in the same time left runs."""
    from types import SimpleNamespace

    import optuna

    from autopeft.protocols import NullReporter
    from autopeft.report.progress import state_counts
    from autopeft.report.show import rows, status_word
    from autopeft.results import NOT_STARTED, records
    from autopeft.search.budget import Phase
    from autopeft.search.loop import MAX_REFUSED, run_trials
    from autopeft.search.objective import TrialRunner
    from autopeft.search.plan import Costs
    from autopeft.space import load_space

    notes: list[str] = []

    class Notes(NullReporter):
        def note(self, text: str) -> None:
            notes.append(text)

    def search(method: str) -> tuple[optuna.Study, list[str]]:
        (tmp_path / "s.yaml").write_text(
            f"candidates: [{method}]\nmethods:\n  prompt: {{num_virtual_tokens: {{choices: "
            "[50]}}\n  lora: {r: {choices: [8]}}\nlearning_rate: 1.0e-3\n")
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
        _measured(study, "prompt", 40.4, tokens=50)
        plan = Plan(max_steps=42, trial_steps=42, refit_steps=42, rungs=[42],
                    costs=Costs(step_seconds=0.15, eval_seconds=2.0, rung_eval_seconds=1.0,
                                row_tokens=14.0))
        budget = Phase(21.0, started=0.0, clock=lambda: 0.0)
        runner = TrialRunner(study, None, None, SimpleNamespace(prunes=False), None, budget,
                             Notes(), plan)
        trained: list[str] = []

        def run(trial, candidate):
            trained.append(candidate.label)
            study.tell(trial, [0.8, 1.0, 1.0])

        runner.run = run
        notes.clear()
        run_trials(study, 1, None, load_space(str(tmp_path / "s.yaml")), runner, budget, Notes())
        return study, trained

    study, trained = search("prompt")
    assert trained == []
    refused = study.get_trials()[1:]
    assert [t.state.name for t in refused] == ["FAIL"] * MAX_REFUSED  # then it gives up
    assert all("prompt" in t.user_attrs[NOT_STARTED] for t in refused)
    assert notes == [f"trial {t.number} not started: prompt is predicted to take 40 s, 21 s "
                     "are left" for t in refused] + [
        f"budget reached: {MAX_REFUSED} candidates in a row were predicted not to fit in the "
        "time left"]
    assert [r.number for r in records(study.get_trials())] == [0]
    assert state_counts(study)["failed"] == 0
    listed = {r.number: (status_word(r), r.note) for r in rows(study, all_trials=True)}
    assert all(listed[t.number] == ("not started", t.user_attrs[NOT_STARTED]) for t in refused)
    study, trained = search("lora")
    assert trained == ["lora"] and notes == []


def test_a_continuation_pays_its_steps_and_one_scoring() -> None:
    """MiniLM/SST-2 at R = 3, measured: a 45-step trial took 4.66 s, 1.8 s of it scoring;
    its refit went on 89 steps in 8.05 s. Per step with the scoring in, 9.2 s were predicted
    and the refit was skipped with 9 s left."""
    assert continuation_seconds(4.66, 1.8, 45, 89) == pytest.approx(2.86 / 45 * 89 + 1.8)
    assert 7.4 < continuation_seconds(4.66, 1.8, 45, 89) < 9.0
    assert continuation_seconds(4.66, 0.0, 45, 89) == pytest.approx(4.66 / 45 * 89)  # unknown
    assert continuation_seconds(4.66, 9.0, 45, 89) == pytest.approx(4.66)  # never below zero


def test_a_continuation_does_not_pay_the_trials_setup_again() -> None:
    """MiniLM/STS-B, BitFit, in a trial process: a 34-step trial took 9.63 s, 2.58 of them
    scoring and 0.67 before its first step (the schedule's longest batch, measured for
    memory); continued to 100 steps it took 14.81 s. With the setup counted per step 16.3 s
    were predicted. The real A search on STS-B at R = 3 that scored -0.049 on test predicted
    its refit's members at 30.8 s where they took 24-25, kept that much back, and so never
    started the third recipe, the BitFit that scored 0.592 in the other two searches."""
    predicted = continuation_seconds(9.63, 2.58, 34, 66, 0.67)
    assert predicted == pytest.approx((9.63 - 2.58 - 0.67) / 34 * 66 + 2.58)
    assert abs(predicted - 14.81) < 0.3
    assert continuation_seconds(9.63, 2.58, 34, 66) > 16  # the setup per step: as before
    from_zero = continuation_seconds(9.63, 2.58, 34, 100, 0.67, from_start=True)
    assert from_zero == pytest.approx((9.63 - 2.58 - 0.67) / 34 * 100 + 2.58 + 0.67)
    assert continuation_seconds(1.0, 0.5, 10, 10, 5.0) == pytest.approx(0.5)  # within the wall


def test_a_rung_that_does_not_separate_moves_the_plan_to_fewer_longer_trials() -> None:
    """An unseen pair task: 35 candidates at 32 of 96 steps scored 0.684-0.706 (majority
    0.684) and the study spent itself there. Once four trials have a first-rung score within
    twice the rung noise, trials train one rung up the ladder instead, said once."""
    import optuna

    from autopeft.protocols import NullReporter
    from autopeft.results import RUNG_SCORES
    from autopeft.search.objective import TrialRunner
    from autopeft.search.plan import lengthened, separates

    assert not separates([0.684, 0.706, 0.69], 0.03) and separates([0.684, 0.76], 0.03)
    assert not separates([0.7], 0.0)  # one score separates nothing

    notes: list[str] = []

    class Notes(NullReporter):
        def note(self, text: str) -> None:
            notes.append(text)

    def runner(scores: list[float]) -> TrialRunner:
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
        for s in scores:
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED, user_attrs={RUNG_SCORES: {"11": s}}))
        plan = Plan(max_steps=96, trial_steps=32, refit_steps=96, rungs=[11, 32],
                    expected_candidates=30, refit_share=0.2)
        return TrialRunner(study, None, None, None, None, None, Notes(), plan, rung_noise=0.03)

    flat = runner([0.684, 0.706, 0.69, 0.684])
    flat.check_separation()
    # the first rung goes; the old trials' end is a rung on the way to the new one
    assert (flat.plan.trial_steps, flat.plan.rungs, flat.plan.expected_candidates) == (
        96, [32, 96], 10)
    assert Plan.from_dict(flat.study.user_attrs["plan"]).trial_steps == 96
    assert flat.study.user_attrs["separation"]["separated"] is False
    assert notes == ["the first rung (step 11) did not separate 4 trials (scores 0.684-0.706, "
                     "within twice the rung noise 0.030): trials now train up to 96 steps, "
                     "rungs at 32, 96 (about 10 candidates)"]
    flat.check_separation()  # judged once
    assert len(notes) == 1 and flat.plan.trial_steps == 96
    spread = runner([0.684, 0.81, 0.72, 0.69])
    spread.check_separation()
    assert spread.plan.trial_steps == 32 and spread.study.user_attrs["separation"]["separated"]
    assert runner([0.684, 0.69, 0.7]).check_separation() is None  # three: not yet judged
    # a plan already at full fidelity has nowhere to go
    assert lengthened(Plan(96, 96, 96, [32, 96]), 3, "x") is None
    assert lengthened(Plan(270, 30, 270, [30], expected_candidates=4), 3, "x").rungs == [90]


FOUR_AT_HALF = Throughput(slots=4, speed=0.5, evidence="measured: a stand-in")


@pytest.mark.parametrize("slots, speed", [(1, 1.0), (2, 1.0), (4, 1.0), (2, 0.55), (4, 0.5)])
def test_the_planned_candidates_scale_by_slots_times_speed_and_the_refit_stays_alone(
        slots: int, speed: float) -> None:
    """The same fidelity, budget and refit (given): the search phase holds ``slots x speed``
    times the candidates of one process; the refit's share is what it costs alone."""
    budget = 40 * MINILM_CPU.run_seconds(270)
    one = make_plan(270, budget, MINILM_CPU, trial_steps=90, refit_share=0.2)
    many = make_plan(270, budget, MINILM_CPU, trial_steps=90, refit_share=0.2,
                     throughput=Throughput(slots, speed, "x"))
    alone = one.budget_seconds * 0.8 / candidate_seconds(90, 3, MINILM_CPU, rungs=[90])
    assert one.throughput is None and one.expected_candidates == int(alone) == 78
    assert many.expected_candidates == int(alone * slots * speed)
    assert (many.trial_steps, many.rungs, many.refit_share) == (one.trial_steps, one.rungs, 0.2)


def test_workers_that_start_late_buy_what_they_train_after_their_start() -> None:
    """Every worker but the search loads the model first: 3 workers 100 s late at 0.5x
    train 150 s less of one trial alone than they would from the start."""
    budget = 40 * MINILM_CPU.run_seconds(270)
    cost = candidate_seconds(90, 3, MINILM_CPU, rungs=[90])
    late = Throughput(4, 0.5, "x", start_seconds=100.0)
    p = make_plan(270, budget, MINILM_CPU, trial_steps=90, refit_share=0.2, throughput=late)
    assert p.expected_candidates == int((0.5 * 4 * p.budget_seconds * 0.8 - 150) / cost)
    assert late.alone_seconds(60.0) == 0.5 * 60  # ended before the others started
    assert "starting about 100 s late" in late.describe()


@pytest.mark.parametrize("max_steps, ratio", [(270, 3), (270, 10), (2105, 10), (2105, 40)])
def test_with_workers_the_rule_fits_their_candidates_and_a_refit_timed_alone(
        max_steps: int, ratio: float) -> None:
    """More trials at once never buy a shorter fidelity or fewer candidates; what the plan
    expects (candidates ``parallel`` at once, then the refit alone) fits the budget; the
    refit's share is its cost alone, whatever the workers."""
    asked = ratio * MINILM_CPU.run_seconds(max_steps)
    budget = asked * (1 - plan_mod.PLAN_RESERVE)
    plans = [make_plan(max_steps, asked, MINILM_CPU, throughput=Throughput(k, s, "x"))
             for k, s in [(1, 1.0), (2, 0.9), (4, 0.9), (4, 1.0)]]
    assert [p.trial_steps for p in plans] == sorted(p.trial_steps for p in plans)
    assert [p.expected_candidates for p in plans] == sorted(p.expected_candidates for p in plans)
    assert plans[-1].expected_candidates >= 3 * plans[0].expected_candidates
    for p in plans:
        members = p.refit_members or 0
        alone = refit_seconds(p.trial_steps, max_steps, members, 1, MINILM_CPU)
        searched = p.expected_candidates * candidate_seconds(p.trial_steps, 3, MINILM_CPU,
                                                             rungs=p.rungs)
        assert searched / p.throughput.parallel + alone <= budget * 1.001
        assert p.refit_share * budget == pytest.approx(alone, rel=1e-3)


def test_four_workers_at_r_10_search_at_full_fidelity_where_one_needs_a_refit() -> None:
    """The fidelity choice uses the workers: at R = 10 (270 steps) one process fits 24
    candidates only at the first rung (90 steps) and continues 3 members; 4 workers at 0.5x
    (2 trials' worth at once) fit them at full fidelity, so there is nothing to refit."""
    asked = 10 * MINILM_CPU.run_seconds(270)
    one = make_plan(270, asked, MINILM_CPU)
    four = make_plan(270, asked, MINILM_CPU, throughput=FOUR_AT_HALF)
    assert (one.trial_steps, one.refit_members, one.expected_candidates) == (90, 3, 19)
    assert (four.trial_steps, four.refit_share, four.expected_candidates) == (270, 0.0, 31)


def test_below_one_workers_share_the_probes_if_each_fits_in_the_probes_share() -> None:
    """R = 0.5 on 2105 steps: one process fits fewer than 3 probes in the probes' share (one
    run, no search); two at full speed fit 3, then continue the best alone. Four at 0.5x have
    the same trials' worth at once, but one probe on a busy slot outlasts the share."""
    asked = 0.5 * MINILM_CPU.run_seconds(2105)
    one = make_plan(2105, asked, MINILM_CPU)
    two = make_plan(2105, asked, MINILM_CPU, throughput=Throughput(2, 1.0, "x"))
    four = make_plan(2105, asked, MINILM_CPU, throughput=FOUR_AT_HALF)
    assert (one.expected_candidates, one.trial_steps, one.refit_steps) == (1, 958, 958)
    assert (two.expected_candidates, two.trial_steps, two.refit_steps) == (3, 107, 870)
    assert (four.trial_steps, four.expected_candidates) == (one.trial_steps, 1)
    assert four.throughput == FOUR_AT_HALF  # said in the plan line, even when not used


def test_the_plan_line_names_the_workers_their_speed_and_its_evidence() -> None:
    p = make_plan(270, 10 * MINILM_CPU.run_seconds(270), MINILM_CPU,
                  throughput=Throughput(2, 0.5, "measured: a stand-in"))
    assert ("2 workers, each at about 0.50x alone's speed (measured: a stand-in); the last 22% "
            "of the budget continues the best 3 members to 270 steps, alone once the workers "
            "stop") in p.describe()
    assert "workers" not in make_plan(270, 40 * MINILM_CPU.run_seconds(270),
                                      MINILM_CPU).describe()
    joined = Throughput(slots=1, joining=2)
    assert joined.parallel == 3 and joined.describe().startswith(
        "2 workers joining from other machines, each planned at the probe's speed")
    assert Plan.from_dict(p.to_dict()).throughput == p.throughput  # stored with the study
    assert Plan.from_dict({k: v for k, v in p.to_dict().items()
                           if k != "throughput"}).throughput is None  # an older study's plan


def test_the_search_stores_the_candidates_it_ran_beside_the_plan_s_expectation() -> None:
    import optuna

    from autopeft.report.progress import NullReporter
    from autopeft.search.study import note_candidates

    notes: list[str] = []

    class Notes(NullReporter):
        def note(self, text: str) -> None:
            notes.append(text)

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for attrs in [{"candidate": {"lr": 1}}, {"candidate": {"lr": 2}}, {"candidate": {"lr": 3}},
                  {"candidate": {"lr": 1}, "confirm_of": 0},  # the refit's: not the search's
                  {"candidate": {"lr": 4}, "duplicate_of": 1}]:
        study.add_trial(optuna.trial.create_trial(values=[0.5, 1, 1], user_attrs=attrs))
    note_candidates(study, Plan(270, 90, 270, [90], expected_candidates=5), Notes())
    assert study.user_attrs["candidates"] == {"ran": 3, "planned": 5}
    assert notes == ["searched 3 candidates (planned about 5)"]
