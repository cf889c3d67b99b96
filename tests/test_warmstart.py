"""autopeft/search/warmstart.py: the recipes fit into the space, are queued first, and an
interrupted one is queued again. Studies are Optuna's in memory; nothing is trained."""
from __future__ import annotations

import json
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from autopeft.methods import get_method, make_spec
from autopeft.search.plan import Plan, short_schedule
from autopeft.search.warmstart import (RECIPES, Recipe, enqueue_recipes, recipe_params,
                                       recipe_queue, requeue_interrupted, tries_learning_rates)
from autopeft.space import Space, space_from_text

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Every recipe's entry, listed in another order than RECIPES, with each kind of parameter.
EVERY_RECIPE = """
candidates:
  full: {}
  prefix: {}
  adapter: {}
  ia3: {}
  bitfit:
    learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
  lora: {}
learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}
methods:
  lora:
    r: {choices: [4, 8, 16]}
    alpha: {choices: [8, 16, 32]}
    targets: {choices: [[query, value], [query, key, value]]}
    layers: {choices: [all, last]}
    dropout: {choices: [0.0, 0.1]}
  ia3:
    targets: {choices: [[key, value, ffn_out], [key, value]]}
  adapter:
    placement: {choices: [houlsby, pfeiffer]}
    reduction_factor: {low: 2, high: 64, log: true}
  prefix:
    num_virtual_tokens: {low: 5, high: 50}
"""


def space(text: str) -> Space:
    return space_from_text(text, "test.yaml")


def lora_space(methods: str = "", learning_rate: str = "{low: 1.0e-4, high: 3.0e-3, log: true}") -> Space:
    """A LoRA-only space; ``methods`` is the YAML of LoRA's parameters."""
    return space(f"candidates: [lora]\nlearning_rate: {learning_rate}\n"
                 f"methods:\n  lora:\n{methods or '    {}'}\n")


def recipe(entry: str) -> Recipe:
    return next(r for r in RECIPES if r.entry == entry)


def test_every_recipe_is_a_valid_setting_of_its_method() -> None:
    """A misspelt parameter in a recipe would silently never be fixed."""
    for r in RECIPES:
        assert r.learning_rate > 0
        assert set(r.params) <= set(r.entry.split("+")), r.name
        for method, params in r.params.items():
            assert set(params) <= set(get_method(method).params()), r.name
            make_spec(method, params)  # raises on a value the method does not take


# --- recipe_params --------------------------------------------------------------------------

def test_a_learning_rate_outside_the_range_is_clipped_to_it() -> None:
    s = lora_space(learning_rate="{low: 1.0e-3, high: 3.0e-3}")
    assert recipe_params(s, recipe("lora"))["lora.learning_rate"] == pytest.approx(1e-3)
    s = space("candidates: [full, prefix]\nlearning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}\n")
    assert recipe_params(s, recipe("full"))["full.learning_rate"] == pytest.approx(1e-4)  # 2e-5
    assert recipe_params(s, recipe("prefix"))["prefix.learning_rate"] == pytest.approx(3e-3)  # 5e-3


def test_an_int_range_is_clipped_and_stays_an_int() -> None:
    fixed = recipe_params(lora_space("    r: {low: 16, high: 64}\n    alpha: {low: 2, high: 4}"),
                          recipe("lora"))
    assert fixed["lora.r"] == 16 and fixed["lora.alpha"] == 4
    assert isinstance(fixed["lora.r"], int) and isinstance(fixed["lora.alpha"], int)


def test_a_stepped_range_gives_a_value_on_its_grid() -> None:
    s = lora_space(learning_rate="{low: 1.0e-4, high: 1.0e-3, step: 3.0e-4}")
    lr = recipe_params(s, recipe("lora"))["lora.learning_rate"]  # 5e-4 -> 4e-4
    assert lr == pytest.approx(4e-4)


def test_a_stepped_range_is_never_left_by_rounding() -> None:
    s = space("candidates: [ia3]\nlearning_rate: {low: 1.0e-4, high: 1.0e-3, step: 6.0e-4}\n")
    lr = recipe_params(s, recipe("ia3"))["ia3.learning_rate"]  # 3e-3, clipped to 1e-3
    assert lr == pytest.approx(7e-4)  # the grid's top (1e-4 + 6e-4), not 1e-3 off the grid


def test_a_number_not_among_the_choices_becomes_the_nearest_by_ratio() -> None:
    fixed = recipe_params(lora_space("    r: {choices: [5, 12]}\n    alpha: {choices: [4, 30]}"),
                          recipe("lora"))
    assert fixed["lora.r"] == 12  # 8 is 1.5x from 12, 1.6x from 5 (but nearer 5 in difference)
    assert fixed["lora.alpha"] == 30  # 16: 1.9x from 30, 4x from 4
    s = space("candidates: [adapter]\nmethods:\n  adapter:\n    reduction_factor: {choices: [8, 64]}\n")
    assert recipe_params(s, recipe("adapter"))["adapter.reduction_factor"] == 8


def test_a_value_not_among_other_choices_is_left_to_the_sampler() -> None:
    s = lora_space("    targets: {choices: [[query], [key, value]]}\n"
                   "    layers: {choices: [upper_half, last]}")
    fixed = recipe_params(s, recipe("lora"))
    assert "lora.targets" not in fixed and "lora.layers" not in fixed
    s = lora_space("    targets: {choices: [[query], [query, value]]}\n    layers: {choices: [last, all]}")
    fixed = recipe_params(s, recipe("lora"))
    assert fixed["lora.targets"] == json.dumps(["query", "value"])  # a list by its JSON text
    assert fixed["lora.layers"] == "all"  # a plain choice as itself


def test_only_the_spaces_own_parameters_are_fixed() -> None:
    fixed = recipe_params(lora_space("    r: {choices: [4, 8]}\n    dropout: {choices: [0.0, 0.1]}"),
                          recipe("lora"))  # the recipe says nothing of dropout: the sampler picks
    assert fixed == {"candidate": "lora", "lora.learning_rate": pytest.approx(5e-4), "lora.r": 8}
    # constants are not sampled, so there is nothing to fix
    assert recipe_params(lora_space("    r: 4", learning_rate="1.0e-4"), recipe("lora")) == {
        "candidate": "lora"}
    s = space(EVERY_RECIPE)
    for r in RECIPES:
        names = {"candidate", f"{r.entry}.learning_rate",
                 *(f"{r.entry}.{p}" for p in s.methods.get(r.entry, {}))}
        assert set(recipe_params(s, r)) <= names, r.name


@pytest.mark.parametrize("entries", ["[lora+bitfit]", "[lokr, loha]"])
def test_a_space_without_the_recipes_entry_gets_none(entries: str) -> None:
    s = space(f"candidates: {entries}\n")
    assert [recipe_params(s, r) for r in RECIPES] == [None] * len(RECIPES)


# --- enqueue_recipes ------------------------------------------------------------------------

def test_recipes_are_queued_in_recipe_order_and_marked() -> None:
    s = space(EVERY_RECIPE.replace("  adapter: {}\n  ia3: {}\n", ""))  # four of the six
    study = optuna.create_study()
    names = enqueue_recipes(study, s)
    assert names == ["LoRA r=8 query/value", "BitFit", "prefix tuning", "full fine-tuning"]
    queued = study.get_trials()
    assert [t.state for t in queued] == [TrialState.WAITING] * 4
    assert [t.user_attrs["warm_start"] for t in queued] == names
    by_name = {r.name: r for r in RECIPES}
    assert [t.system_attrs["fixed_params"] for t in queued] == [
        recipe_params(s, by_name[n]) for n in names]


def test_each_queued_recipe_is_sampled_as_the_recipe() -> None:
    s = space(EVERY_RECIPE)
    study = optuna.create_study()
    assert len(enqueue_recipes(study, s)) == len(RECIPES)
    for r in RECIPES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trial = study.ask()
            candidate = s.sample(trial)
        assert not [w for w in caught if "out of range" in str(w.message)], r.name
        assert trial.user_attrs["warm_start"] == r.name and candidate.label == r.entry
        lr = s.candidates[r.entry].get("learning_rate", s.learning_rate)
        assert candidate.learning_rate == pytest.approx(min(max(r.learning_rate, lr.low), lr.high))
        for method in candidate.methods:
            for p, value in r.params.get(method.name, {}).items():
                if p in s.methods.get(method.name, {}):  # the space has these values
                    assert method.params[p] == value, (r.name, p)
        study.tell(trial, 0.5)


def test_the_ladder_tries_the_first_recipe_at_faster_learning_rates_right_after_it() -> None:
    s = space(EVERY_RECIPE)
    study = optuna.create_study()
    names = enqueue_recipes(study, s, lr_ladder=True)
    lora = RECIPES[0]
    rates = [2e-3, 1e-3]  # x4 and x2 of the recipe's 5e-4, inside the range 1e-4..3e-3
    assert names == [lora.name, *(f"{lora.name} at lr {r:.0e}" for r in rates),
                     *(r.name for r in RECIPES[1:])]
    sampled = []
    for name in names[:3]:
        trial = study.ask()
        candidate = s.sample(trial)
        assert trial.user_attrs["warm_start"] == name and candidate.label == "lora"
        sampled.append(candidate)
        study.tell(trial, 0.5)
    assert [c.learning_rate for c in sampled] == pytest.approx([lora.learning_rate, *rates])
    assert len({json.dumps([m.params for m in c.methods]) for c in sampled}) == 1  # only the rate


def test_the_ladder_stays_inside_the_learning_rate_range_and_does_not_repeat_a_rate() -> None:
    s = lora_space(learning_rate="{low: 1.0e-4, high: 1.0e-3, log: true}")
    names = enqueue_recipes(optuna.create_study(), s, lr_ladder=True)
    assert names == [RECIPES[0].name, f"{RECIPES[0].name} at lr 1e-03"]  # x4 = x2


@pytest.mark.parametrize("trial_steps, expected, ladder", [
    (51, 3, True), (51, 17, True),  # R = 3 and 10 on MiniLM/SST-2: trials stop at a third
    (152, 30, False),  # R = 40: trials train full fidelity, the recipe is ranked at its end
    (51, 1, False), (51, None, False)])  # one run (the first recipe alone), no budget
def test_the_ladder_is_for_plans_whose_trials_stop_before_full_fidelity(
        trial_steps: int, expected: int | None, ladder: bool) -> None:
    plan = Plan(max_steps=152, trial_steps=trial_steps, refit_steps=152, rungs=[trial_steps],
                expected_candidates=expected)
    assert tries_learning_rates(plan) is ladder


def test_a_space_without_any_recipe_queues_nothing() -> None:
    study = optuna.create_study()
    assert enqueue_recipes(study, space("candidates: [lokr, lora+bitfit]\n")) == []
    assert study.get_trials() == []


# --- requeue_interrupted --------------------------------------------------------------------

def run_recipe(study: optuna.Study, fail_reason: str | None = None) -> optuna.trial.FrozenTrial:
    """Ask the next queued trial; it completes, or fails with ``fail_reason``."""
    trial = study.ask()
    if fail_reason is None:
        study.tell(trial, 0.5)
    else:
        trial.set_user_attr("fail_reason", fail_reason)
        study.tell(trial, state=TrialState.FAIL)
    return study.get_trials()[trial.number]


@pytest.fixture
def lora_bitfit() -> optuna.Study:
    """A fresh study with its two recipes queued: LoRA (trial 0), then BitFit (trial 1)."""
    study = optuna.create_study()
    enqueue_recipes(study, space("candidates: [lora, bitfit]\n"))
    return study


def test_an_interrupted_recipe_is_queued_again_once(lora_bitfit: optuna.Study) -> None:
    study = lora_bitfit
    first = run_recipe(study, "interrupted")
    assert requeue_interrupted(study) == ["LoRA r=8 query/value"]
    again = study.get_trials()[-1]
    assert again.state == TrialState.WAITING and again.user_attrs["warm_start"] == first.user_attrs["warm_start"]
    assert again.system_attrs["fixed_params"] == first.system_attrs["fixed_params"]
    assert requeue_interrupted(study) == []  # it is queued now: not twice
    assert len(study.get_trials()) == 3


@pytest.mark.parametrize("reason", ["ValueError: boom", "cannot write to disk: No space left", None])
def test_a_recipe_that_failed_otherwise_is_not_queued_again(lora_bitfit: optuna.Study,
                                                           reason: str | None) -> None:
    study = lora_bitfit
    trial = study.ask()
    if reason is not None:
        trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=TrialState.FAIL)
    assert requeue_interrupted(study) == []


@pytest.mark.parametrize("other", ["WAITING", "RUNNING", "COMPLETE"])
def test_a_recipe_queued_running_or_done_elsewhere_is_not_queued_again(other: str) -> None:
    study = optuna.create_study()
    (name,) = enqueue_recipes(study, space("candidates: [lora]\n"))
    fixed = run_recipe(study, "interrupted").system_attrs["fixed_params"]
    study.enqueue_trial(fixed, user_attrs={"warm_start": name})  # by another worker's resume
    if other != "WAITING":
        trial = study.ask()
        if other == "COMPLETE":
            study.tell(trial, 0.5)
    assert study.get_trials()[-1].state.name == other
    assert requeue_interrupted(study) == []
    study.add_trial(optuna.trial.create_trial(  # and a later try of it interrupted as well
        state=TrialState.FAIL, user_attrs={"warm_start": name, "fail_reason": "interrupted"},
        system_attrs={"fixed_params": fixed}))
    assert requeue_interrupted(study) == []


def test_only_the_last_try_of_a_recipe_counts(lora_bitfit: optuna.Study) -> None:
    study = lora_bitfit
    run_recipe(study, "interrupted")
    requeue_interrupted(study)
    run_recipe(study)  # BitFit
    run_recipe(study, "RuntimeError: diverged")  # LoRA's second try failed for itself
    assert requeue_interrupted(study) == []
    study.enqueue_trial({"candidate": "bitfit"}, user_attrs={"warm_start": "LoRA r=8 query/value"})
    run_recipe(study, "interrupted")  # a later try interrupted: queued again
    assert requeue_interrupted(study) == ["LoRA r=8 query/value"]


def test_trials_that_are_no_recipe_are_left_alone() -> None:
    study = optuna.create_study()
    run_recipe(study, "interrupted")  # a sampled trial
    study.add_trial(optuna.trial.create_trial(  # a recipe mark without fixed parameters
        state=TrialState.FAIL, user_attrs={"warm_start": "BitFit", "fail_reason": "interrupted"}))
    assert requeue_interrupted(study) == []
    assert len(study.get_trials()) == 2


def test_on_a_short_schedule_every_recipe_runs_at_its_short_rate_the_first_at_both() -> None:
    s = space(EVERY_RECIPE)
    queue = recipe_queue(s, short=True)
    lora = RECIPES[0]
    assert [n for n, _ in queue[:2]] == [f"{lora.name} at lr 2e-03", lora.name]
    assert [f["lora.learning_rate"] for _, f in queue[:2]] == pytest.approx([2e-3, 5e-4])
    assert queue[0][1] | {"lora.learning_rate": 5e-4} == queue[1][1]  # they differ in the rate only
    rates = {f["candidate"]: f.get(f"{f['candidate']}.learning_rate") for _, f in queue[2:]}
    for r in RECIPES[1:]:
        lr = s.candidates[r.entry].get("learning_rate", s.learning_rate)
        assert rates[r.entry] == pytest.approx(min(max(r.short_rate, lr.low), lr.high)), r.name
    assert rates["ia3"] == pytest.approx(3e-3) and rates["full"] == pytest.approx(1e-4)  # clipped
    # trials that stop early too: the short rate takes the ladder's place
    assert recipe_queue(s, lr_ladder=True, short=True) == queue
    # a long schedule keeps the papers' rates
    assert [f.get(f"{f['candidate']}.learning_rate") for _, f in recipe_queue(s)] == pytest.approx(
        [min(max(r.learning_rate, 1e-4), 3e-3 if r.entry != "bitfit" else 1e-2) for r in RECIPES])


@pytest.mark.parametrize("schedule, short", [(162, True), (300, True), (301, False), (2105, False)])
def test_a_schedule_of_at_most_300_steps_is_short(schedule: int, short: bool) -> None:
    plan = Plan(max_steps=schedule, trial_steps=schedule // 3, refit_steps=schedule,
                rungs=[schedule // 3])
    assert short_schedule(plan) is short


def test_a_short_rate_is_named_as_it_is() -> None:
    from autopeft.space import load_space

    names = [n for n, _ in recipe_queue(load_space("default"), short=True)]
    assert "(IA)3 at lr 1.5e-02" in names and "BitFit at lr 4e-03" in names
