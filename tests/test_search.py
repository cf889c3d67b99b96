"""The search loop's rules on a tiny model: constraints, budget end, warm start, confirmation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autopeft import api
from autopeft.errors import UserError
from autopeft.search.constraints import Limits, parse_params, parse_size
from autopeft.search.summary import front_trials
from autopeft.search.warmstart import RECIPES, enqueue_recipes, recipe_params
from autopeft.space import load_space, parse_space

LORA_SPACE = """
name: lora-only
candidates: [lora]
learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
methods:
  lora: {r: {choices: [2, 4]}, targets: [query, value]}
"""


def small(model: Path, data: Path, **extra) -> dict:
    return dict(model=str(model), data_dir=str(data), study="t", batch_size=16, max_length=48,
                **extra)


def test_sizes_and_parameter_limits() -> None:
    assert parse_size("16GB") == 16 * 10**9
    assert parse_size("12GiB") == parse_size("12G") == 12 * 2**30
    assert parse_size("800 MB") == 800 * 10**6 and parse_size("1024") == 1024
    assert parse_params("1%", 22_700_000) == 227_000
    assert parse_params("2M", 1) == 2_000_000 and parse_params("500k", 1) == 500_000
    assert parse_params("1e5", 1) == 100_000
    for bad in ("16 parsecs", "-1GB", "", "GB"):
        with pytest.raises(UserError):
            parse_size(bad)
    with pytest.raises(UserError):
        parse_params("lots", 1)
    limits = Limits.parse("1%", "1MB", 10_000)
    assert limits.values(50, 500_000) == {"max_params": -0.5, "max_memory": -0.5}
    assert limits.violations(200, 2_000_000) and not limits.violations(100, 10**6)


def test_an_infeasible_trial_is_never_on_the_front(workdir: Path) -> None:
    import optuna
    from optuna.distributions import FloatDistribution

    from autopeft.report.show import rows

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    dist = {"x": FloatDistribution(0, 1)}
    for x, values, constraint in [(0.1, [0.95, 10, 10], 0.5),  # best everywhere, infeasible
                                  (0.2, [0.80, 100, 100], -0.1), (0.3, [0.70, 50, 100], 0.0)]:
        study.add_trial(optuna.trial.create_trial(
            params={"x": x}, distributions=dist, values=values,
            system_attrs={"constraints:max_memory": constraint}))
    assert {r.number for r in rows(study)} == {1, 2}
    assert {t.number for t in front_trials(study)} == {1, 2}


def test_a_max_params_violation_is_skipped_without_training(workdir: Path, tiny_model: Path,
                                                            tiny_data: Path) -> None:
    study = api.search("sst2", **small(tiny_model, tiny_data, n_trials=3, max_params="10"))
    trials = [t for t in study.get_trials() if t.state.name != "WAITING"]  # recipes left queued
    assert len(trials) == 3
    for t in trials:
        a = t.user_attrs
        assert t.state.name == "PRUNED" and a["skipped"] is True
        assert "--max-params 10" in a["prune_reason"]
        assert "steps" not in a and "rung_scores" not in a  # never trained
        assert t.constraints["max_params"] > 0 and a["trainable_params"] > 10
    assert api.front(study) == []


def test_predicted_memory_is_a_lower_bound_and_the_hypervolume_is_recorded(
        workdir: Path, tiny_model: Path, tiny_data: Path) -> None:
    import math

    from autopeft.pareto import hypervolume

    study = api.search("sst2", **small(tiny_model, tiny_data, n_trials=3, pruner="none",
                                       refit_share=0.0))
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 3  # LoRA, BitFit, (IA)3: the warm start
    for t in done:
        assert 0 < t.user_attrs["predicted_memory_bytes"] <= t.values[2]  # a lower bound
    # By hand (summary.Scales): 1 - accuracy; log10(params) / log10(the base's parameters);
    # memory / (memory + 16 bytes per base parameter); reference 1.1 in each.
    base = study.user_attrs["hv_scales"]["base_params"]
    points = [(1 - score, math.log10(params) / math.log10(base), memory / (memory + 16 * base))
              for score, params, memory in (t.values for t in done)]
    expected = hypervolume(points, (1.1, 1.1, 1.1))
    assert study.user_attrs["hypervolume"] == pytest.approx(expected, abs=1e-6)
    assert study.user_attrs["hypervolume_history"][-1][1] == study.user_attrs["hypervolume"]
    # what learning nothing scores on these validation labels: the majority class's share
    labels = [int(line.split("\t")[-1]) for line in
              (tiny_data / "glue" / "sst2" / "validation.tsv").read_text().splitlines()[1:]]
    majority = max(labels.count(0), labels.count(1)) / len(labels)
    assert study.user_attrs["no_skill"] == pytest.approx(majority)


@pytest.mark.parametrize("short", [True, False])
@pytest.mark.parametrize("trial_steps", [2, 4])
def test_the_plan_decides_the_warm_start_s_learning_rates(
        workdir: Path, tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch,
        trial_steps: int, short: bool) -> None:
    """The plan decides the warm start: trials stop before full fidelity (R = 3 to 10 on
    MiniLM/SST-2) -> the LoRA recipe at 5e-4, 2e-3 and 1e-3 first; trials train full
    fidelity (R = 40) -> the recipes in their order: LoRA, BitFit, (IA)3. On a short
    schedule, either way: LoRA at its short rate 2e-3, then at 5e-4, then BitFit at 4e-3."""
    import autopeft.search.study as study_mod
    import autopeft.search.plan as plan_mod
    from autopeft.search.plan import Plan

    def plan_for(study, cfg, bench, budget, slots=None):
        return Plan(max_steps=4, trial_steps=trial_steps, refit_steps=trial_steps,
                    rungs=[trial_steps], schedule_steps=4, expected_candidates=10, source="budget")

    monkeypatch.setattr(study_mod, "plan_for", plan_for)
    if not short:  # every schedule is long
        monkeypatch.setattr(plan_mod, "SHORT_SCHEDULE", 0)
    study = api.search("sst2", **small(tiny_model, tiny_data, n_trials=3, pruner="none"))
    ran = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    labels = [(t.user_attrs["label"], t.user_attrs["candidate"]["learning_rate"]) for t in ran]
    expected = {(True, True): [("lora", 2e-3), ("lora", 5e-4), ("bitfit", 4e-3)],
                (True, False): [("lora", 5e-4), ("lora", 2e-3), ("lora", 1e-3)],
                (False, True): [("lora", 2e-3), ("lora", 5e-4), ("bitfit", 4e-3)],
                (False, False): [("lora", 5e-4), ("bitfit", 1e-3), ("ia3", 3e-3)]}
    assert labels == [(label, pytest.approx(lr)) for label, lr in expected[trial_steps < 4, short]]


def _prediction_cases() -> list[tuple[str, dict]]:
    """Every registered method with its defaults, plus the settings that store differently
    from what trains (prefix tuning's reparameterisation MLP, ProPETL's masks)."""
    from autopeft.methods import METHODS

    cases = [(name, {}) for name in METHODS if name != "fault"]
    cases += [(name, {"prefix_projection": True}) for name in METHODS
              if "prefix_projection" in METHODS[name].params()]
    return cases


@pytest.mark.parametrize("name,params", _prediction_cases(),
                         ids=lambda v: v if isinstance(v, str) else ",".join(v) or "defaults")
def test_predicted_parameter_count_is_exact(name: str, params: dict) -> None:
    """What ``--max-params`` skips on (``predict`` on the meta skeleton) is the count the
    built model stores (``build.count_stored``), and trains (``count_trainable``)."""
    from autopeft.build import build, count_stored, count_total, count_trainable
    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.search.constraints import predict
    from autopeft.validate import skeleton
    from families import tiny_model

    base = tiny_model("bert")
    candidate = Candidate([MethodSpec(name, params)], 1e-3, seed=1)
    pred = predict(skeleton(base), base, candidate, total_steps=10)
    model = build(base, candidate, total_steps=10)
    assert pred.trainable_params == count_stored(model) > 0
    assert pred.trained_params == count_trainable(model)
    if name != "qlora":  # 4-bit packing happens on real weights only: the skeleton is unpacked
        assert pred.total_params == count_total(model)


def test_warm_start_enqueues_the_recipes_the_space_has() -> None:
    import optuna

    space = load_space("default")
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    names = enqueue_recipes(study, space)
    assert names == ["LoRA r=8 query/value", "BitFit", "(IA)3", "serial adapter", "prefix tuning",
                     "full fine-tuning"]
    waiting = study.get_trials()
    assert [t.state.name for t in waiting] == ["WAITING"] * 6
    lora = waiting[0].system_attrs["fixed_params"]  # what the first ask() will suggest
    assert lora["candidate"] == "lora" and lora["lora.r"] == 8 and lora["lora.alpha"] == 16
    assert lora["lora.targets"] == json.dumps(["query", "value"])  # lists by their JSON text
    assert lora["lora.learning_rate"] == pytest.approx(5e-4)
    assert waiting[5].system_attrs["fixed_params"]["full.learning_rate"] == pytest.approx(2e-5)
    assert waiting[0].user_attrs["warm_start"] == "LoRA r=8 query/value"
    trial = study.ask()  # the space samples exactly the recipe
    candidate = space.sample(trial)
    assert candidate.label == "lora" and candidate.learning_rate == pytest.approx(5e-4)
    assert candidate.methods[0].params["targets"] == ["query", "value"]


def test_recipes_fit_into_the_space() -> None:
    space = parse_space({"candidates": {"lora": {"learning_rate": {"low": 1e-3, "high": 1e-2}}},
                         "methods": {"lora": {"r": {"choices": [4, 16]}}}})
    fixed = recipe_params(space, RECIPES[0])
    assert fixed == {"candidate": "lora", "lora.learning_rate": 1e-3, "lora.r": 4}  # clipped, nearest
    assert recipe_params(space, RECIPES[-1]) is None  # no full fine-tuning in this space


def test_no_warm_start_on_a_resumed_study(workdir: Path, tiny_model: Path, tiny_data: Path) -> None:
    (workdir / "lora.yaml").write_text(LORA_SPACE)
    opts = small(tiny_model, tiny_data, n_trials=1, space="lora.yaml", pruner="none")
    first = api.search("sst2", **opts)  # a short schedule: the recipe at 2e-3, then at 5e-4
    queued = [t for t in first.get_trials() if "warm_start" in t.user_attrs]
    assert [t.state.name for t in queued] == ["COMPLETE", "WAITING"]
    study = api.search("sst2", **opts)  # runs the one still queued, queues nothing more
    recipes = [t for t in study.get_trials() if "warm_start" in t.user_attrs]
    assert len(recipes) == 2 and len(study.get_trials()) == 2


def test_mo_asha_prunes_trials_at_their_rungs_end_to_end(workdir: Path, tiny_model: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Nine candidates through rungs 2, 4, 8: each rung score is stored, the pruner decides
    from the storage, and a trial it stops is PRUNED at that rung with its decision and
    reason. STS-B (a correlation): candidates score differently; the mechanism alone, with
    no tie noise (on 128 rows a correlation's is 0.09: every rung would tie)."""
    import autopeft.results as results
    from test_tasks import write_glue

    real = results.study_noise
    monkeypatch.setattr(results, "study_noise", lambda metric, rung, final: {
        **real(metric, rung, final), "rung": 0.0, "final": 0.0})

    write_glue(workdir / "data", "stsb", n=128)  # batch 16: 8 steps
    (workdir / "bitfit.yaml").write_text("candidates: [bitfit]\n"
                                         "learning_rate: {low: 1.0e-4, high: 1.0e-1, log: true}\n")
    study = api.search("stsb", **small(tiny_model, workdir / "data", n_trials=9, rungs="2,4,8",
                                       space="bitfit.yaml", pruner="mo-asha", warm_start=False,
                                       sampler="random", seed=0))
    trials = study.get_trials()
    assert len(trials) == 9 and study.user_attrs["plan"]["rungs"] == [2, 4, 8]
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert pruned and complete and len(pruned) + len(complete) == 9
    for t in pruned:
        a = t.user_attrs
        step = a["pruned_at_step"]
        assert step in (2, 4) and a["steps"] == step  # stopped at a rung, never at the end
        assert a["pruned_at_rung"] == [2, 4, 8].index(step) + 1
        assert set(a["rung_scores"]) == {str(s) for s in (2, 4) if s <= step}
        decisions = a["rung_decisions"]
        assert set(decisions) == set(a["rung_scores"])  # one decision per rung it reached
        assert decisions[str(step)]["keep"] is False
        assert all(d["keep"] for k, d in decisions.items() if k != str(step))
        assert a["prune_reason"].startswith(f"paused by mo-asha at step {step}: ") and a["paused"]
        assert decisions[str(step)]["reason"] in a["prune_reason"]
        assert a["stopped_by_budget"] is False and t.values is None
    # the share that reached each rung, beside successive halving's plan (a candidate once)
    reached = [len({repr(t.user_attrs["candidate"]) for t in trials
                    if str(s) in t.user_attrs["rung_scores"]}) for s in (2, 4, 8)]
    assert reached[0] > reached[1] > 0
    assert [(f["step"], f["reached"], f["planned"]) for f in study.user_attrs["promotion"]] == [
        (2, reached[0], 1.0), (4, reached[1], 0.333), (8, reached[2], 0.111)]
    for t in complete:
        a = t.user_attrs
        assert a["steps"] == 8 and set(a["rung_scores"]) == {"2", "4", "8"}
        assert all(d["keep"] for d in a["rung_decisions"].values())
        assert set(a["rung_decisions"]) == {"2", "4"}  # none at the end: the score is the result


def test_on_an_accuracy_task_a_rival_within_the_rung_noise_is_a_tie_not_a_prune(
        workdir: Path, tiny_model: Path, tiny_data: Path) -> None:
    """The tiny task (accuracy on 64 rows, steps of 1/64), MO-ASHA at rungs 2, 4 and 8: a trial
    meets a slightly larger rival that scored half the study's rung noise above it at rung 4.
    Within the noise they tie and the tie goes to the smaller, so it goes on; without the
    noise it would rank 2 of 2 with one place and stop."""
    import optuna
    from optuna.trial import TrialState, create_trial

    (workdir / "one.yaml").write_text("candidates: [bitfit]\nlearning_rate: 3.0e-2\n")
    opts = small(tiny_model, tiny_data, space="one.yaml", pruner="mo-asha", rungs="2,4,8",
                 warm_start=False, loss_check=False, refit_share=0.0)
    alone = api.search("sst2", **{**opts, "study": "alone"}, n_trials=1)
    (first,) = alone.get_trials()
    scores, noise = first.user_attrs["rung_scores"], alone.user_attrs["noise"]["rung"]
    assert noise > 0  # whatever the study's rule for it, on accuracy
    (workdir / "studies").mkdir(exist_ok=True)
    study = optuna.create_study(study_name="t", storage=f"sqlite:///{workdir}/studies/t.db",
                                directions=["maximize", "minimize", "minimize"])
    rival = {**first.user_attrs["candidate"], "learning_rate": 1e-2}
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={
        "candidate": rival, "label": "bitfit",
        "trainable_params": first.user_attrs["trainable_params"] + 10,
        "rung_scores": {"4": scores["4"] + noise / 2}}))  # met at rung 4 only: a rival
    # scored at 2 and at 4 went past rung 2, so it would hold that rung's one place
    study = api.search("sst2", n_trials=1, **opts)
    trial = study.get_trials()[-1]
    decision = trial.user_attrs["rung_decisions"]["4"]
    assert (decision["keep"], decision["rank"], decision["competitors"]) == (True, 1, 2)
    assert f"(ties within {noise:.3f} go to the smaller)" in decision["reason"]
    assert trial.state.name == "COMPLETE"
    assert trial.user_attrs["rung_scores"] == scores  # the same run as alone


def test_budget_end_is_respected(workdir: Path, tiny_model: Path, tiny_data: Path,
                                 ticking: Any) -> None:
    """On the test's clock (``ticking``) a 3 s budget (which starts before the model loads)
    ends with the fourth step of the first trial, whatever the machine."""
    start = ticking()
    study = api.search("sst2", **small(tiny_model, tiny_data, budget="3s", space="slow.yaml",
                                       warm_start=False, trial_steps=13, refit_share=0.0))
    assert study.user_attrs["budget"]["started"] == start and study.user_attrs["deadline"] == start + 3
    trials = study.get_trials()
    assert len(trials) == 1  # nothing else could start after the end
    a = trials[0].user_attrs
    assert trials[0].state.name == "PRUNED" and a["stopped_by_budget"] is True
    assert a["steps"] == a["pruned_at_step"] == 4  # 1 s + 4 x 0.5 s = 3 s
    assert a["pruned_at_rung"] == 0 and "rung_scores" not in a  # its only rung is the end, 13
    assert "budget ended at step 4" in a["prune_reason"]


@pytest.mark.parametrize("budget, expected, ends", [("7s", 1, None), ("7s", 2, 12),
                                                    ("4s", 1, 9)])
def test_the_one_run_of_a_one_run_plan_may_overrun_the_budget_a_little(
        workdir: Path, tiny_model: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch,
        ticking: Any, budget: str, expected: int, ends: int | None) -> None:
    """On the test's clock (``ticking``) 13 steps end at 7.5 s. A plan with room for one
    run finishes it past a 7 s budget (within a quarter of it); a plan of two candidates
    stops at the budget (step 12); past the quarter even the one run stops (4 s x 1.25 =
    5 s: step 9)."""
    import autopeft.search.study as study_mod
    from autopeft.search.plan import Plan

    def plan_for(study, cfg, bench, budget, slots=None):
        return Plan(max_steps=13, trial_steps=13, refit_steps=13, rungs=[13],
                    expected_candidates=expected, source="budget")

    monkeypatch.setattr(study_mod, "plan_for", plan_for)
    study = api.search("sst2", **small(tiny_model, tiny_data, budget=budget, space="slow.yaml",
                                       warm_start=False))
    (trial,) = study.get_trials()
    if ends is None:
        assert trial.state.name == "COMPLETE" and trial.user_attrs["steps"] == 13
    else:
        assert trial.state.name == "PRUNED" and trial.user_attrs["stopped_by_budget"] is True
        assert trial.user_attrs["pruned_at_step"] == ends


@pytest.mark.slow
def test_confirm_seeds_replace_front_members_by_their_means(workdir: Path, tiny_model: Path,
                                                            tiny_data: Path) -> None:
    from autopeft.pareto import non_dominated_mask

    from test_tasks import write_glue

    # STS-B: a correlation, so seeds that train differently score differently (on SST-2 the
    # tiny model predicts one class whatever the seed: the same accuracy every time)
    write_glue(workdir / "data", "stsb", n=32)
    (workdir / "lora.yaml").write_text(LORA_SPACE)
    study = api.search("stsb", **small(tiny_model, workdir / "data", n_trials=2,
                                       space="lora.yaml", pruner="none", confirm_seeds=2,
                                       warm_start=False))
    searched = [t for t in study.get_trials()
                if t.state.name == "COMPLETE" and "confirm_of" not in t.user_attrs]
    assert len(searched) == 2
    on_front = non_dominated_mask([t.values for t in searched], ["maximize", "minimize", "minimize"])
    members = {t.number for t, on in zip(searched, on_front) if on}
    confirmations = [t for t in study.get_trials() if "confirm_of" in t.user_attrs]
    originals = [t.user_attrs["confirm_of"] for t in confirmations]
    assert len(originals) == len(set(originals))  # each trial confirmed once
    assert members <= set(originals)  # every member of the search front confirmed
    front = api.front(study)
    assert front and {r.number for r in front} <= {t.number for t in confirmations}  # the means
    assert not set(originals) & {r.number for r in front}  # stand in for the search trials
    by_number = {t.number: t for t in searched}
    for t in confirmations:
        a = t.user_attrs
        assert a["confirm_seeds"] == [0, 1, 2] and len(a["confirm_scores"]) == 3
        assert a["confirm_scores"][0] == by_number[a["confirm_of"]].values[0]  # seed 0: the trial
        assert t.values[0] == pytest.approx(sum(a["confirm_scores"]) / 3)
        assert len(set(a["confirm_scores"])) == 3, a["confirm_scores"]  # each seed its own run


def test_on_a_short_schedule_the_search_draws_each_rate_from_the_top_of_its_range(
        workdir: Path, tiny_model: Path, tiny_data: Path) -> None:
    """The plan's schedule (a few steps of the tiny data) is short: every trial's learning
    rate comes from the top 40% of its entry's range (``proposals.short_lr_range``), whatever
    proposed it; the stored trial keeps the space's range."""
    from optuna.distributions import FloatDistribution

    from autopeft.search.proposals import short_lr_range
    from autopeft.space import load_space

    study = api.search("sst2", **small(tiny_model, tiny_data, n_trials=6, pruner="none",
                                       warm_start=False))
    space = load_space("default")
    for t in study.get_trials():
        name = f"{t.params['candidate']}.learning_rate"
        lr = space.candidates[t.params["candidate"]].get("learning_rate", space.learning_rate)
        assert t.distributions[name] == FloatDistribution(lr.low, lr.high, log=lr.log)
        assert t.params[name] >= short_lr_range(name, t.distributions[name]).low, t.params
