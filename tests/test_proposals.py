"""The default sampler: recipes, one candidate per family, a space-filling design on its own
seed stream, then TPE fitted on the highest rung with enough scores (pruned trials count),
a third random. No training: trials are told hand-made rung scores."""
from __future__ import annotations

import collections

import optuna
import pytest
import yaml

from autopeft.search.plan import Plan
from autopeft.search.proposals import (DESIGN, MODEL_REPEATED, SHORT_LR_TOP, RungSampler,
                                       from_unit, model_rung, near_repeat, rung_view_trials,
                                       short_lr_range)
from autopeft.search.samplers import make_sampler
from autopeft.search.warmstart import entry_families, enqueue_recipes
from autopeft.space import parse_space

SPACE = parse_space(yaml.safe_load("""
candidates: [lora, bitfit, ia3, adapter, prefix, full, mam, propetl, lora+bitfit]
learning_rate: {low: 1.0e-5, high: 1.0e-1, log: true}
methods:
  lora: {r: {choices: [4, 8, 16]}}
"""))
FAMILIES = entry_families(SPACE)
PRUNED = optuna.trial.TrialState.PRUNED


def study(sampler: optuna.samplers.BaseSampler, recipes: bool = True) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    if recipes:
        enqueue_recipes(st, SPACE)
    return st


def score_of(good: str):
    return lambda entry: 0.9 if entry == good else 0.5  # 0.5: chance


def propose(st: optuna.Study, n: int, score=score_of("lora")) -> list[tuple[str, float, str]]:
    """Ask ``n`` trials; each is pruned at rung 10 with ``score(entry)`` (same size for all)."""
    out = []
    for _ in range(n):
        trial = st.ask()
        candidate = SPACE.sample(trial)
        entry = trial.params["candidate"]
        for key, value in {"rung_scores": {"10": score(entry)}, "trainable_params": 1000,
                           "predicted_memory_bytes": 10**6}.items():
            trial.set_user_attr(key, value)
        st.tell(trial, state=PRUNED)
        way = st.trials[trial.number].user_attrs.get("proposal")
        out.append((entry, candidate.learning_rate, way))
    return out


def test_entries_are_filed_by_family_in_the_reviews_order() -> None:
    assert FAMILIES == {"full": "baseline", "ia3": "additive", "adapter": "additive",
                        "prefix": "additive", "bitfit": "partial", "lora": "reparameterized",
                        "mam": "hybrid", "lora+bitfit": "hybrid", "propetl": "unified"}


def test_after_the_recipes_tpe_and_random_propose_different_candidates() -> None:
    tpe = propose(study(make_sampler("tpe", 0, FAMILIES)), 12)
    rnd = propose(study(make_sampler("random", 0, FAMILIES)), 12)
    assert [p[:2] for p in tpe[:6]] == [p[:2] for p in rnd[:6]]  # the six recipes
    # then each its own way: the default's start-up (the two untried families, a design);
    # Optuna's random sampler, seeded, with no proposal of ours
    assert [w for *_, w in tpe[6:]] == ["family"] * 2 + ["design"] * 4
    assert {w for *_, w in rnd[6:]} == {None}
    assert [e for e, *_ in tpe[6:]] != [e for e, *_ in rnd[6:]]  # other entries, not just rates
    assert propose(study(make_sampler("random", 0, FAMILIES)), 12) == rnd


def test_the_start_up_tries_every_family_once_then_a_design() -> None:
    got = propose(study(RungSampler(0, FAMILIES)), 6 + 2 + DESIGN)
    assert [w for _, _, w in got] == ["recipe"] * 6 + ["family"] * 2 + ["design"] * DESIGN
    # the recipes cover baseline, additive, partial, reparameterized: hybrid and unified next
    assert {FAMILIES[e] for e, _, _ in got[6:8]} == {"hybrid", "unified"}
    # without recipes, the first trials are one per family, each family once
    bare = propose(study(RungSampler(3, FAMILIES), recipes=False), 6)
    families = [FAMILIES[e] for e, _, _ in bare]
    assert sorted(families) == sorted(set(FAMILIES.values()))


def test_the_design_fills_the_space() -> None:
    import math

    one = parse_space(yaml.safe_load("""
candidates: [lora]
learning_rate: {low: 1.0e-5, high: 1.0e-1, log: true}
methods:
  lora: {r: {choices: [4, 8, 16]}}
"""))
    st = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                             sampler=RungSampler(1, entry_families(one), design=16))
    rates, ranks = [], []
    for _ in range(17):
        trial = st.ask()
        c = one.sample(trial)
        st.tell(trial, state=PRUNED)
        rates.append(c.learning_rate)
        ranks.append(c.methods[0].params["r"])
    design = rates[1:]  # the first is the family's candidate
    decades = collections.Counter(math.floor(math.log10(lr)) for lr in design)
    assert set(decades) == {-5, -4, -3, -2} and max(decades.values()) <= 6  # 4 each, roughly
    assert min(collections.Counter(ranks).values()) >= 4 and len(set(ranks)) == 3


def test_pruned_trials_rung_scores_steer_the_model() -> None:
    def later(good: str) -> collections.Counter:
        st = study(RungSampler(0, FAMILIES, random_share=0.0), recipes=False)
        got = propose(st, 40, score_of(good))
        for t, (_, _, way) in zip(st.trials[20:], got[20:]):  # random: a repeat replaced
            assert way == "model" or (way == "random" and MODEL_REPEATED in t.user_attrs)
        return collections.Counter(e for e, _, _ in got[20:])

    lora, bitfit = later("lora"), later("bitfit")
    assert lora["lora"] > 2 * lora["bitfit"] and lora["lora"] >= 8
    assert bitfit["bitfit"] > 2 * bitfit["lora"] and bitfit["bitfit"] >= 8


def test_a_third_of_the_proposals_after_the_start_up_are_random() -> None:
    got = propose(study(RungSampler(0, FAMILIES)), 60)
    ways = collections.Counter(w for _, _, w in got[20:])
    assert set(ways) == {"model", "random"} and 6 <= ways["random"] <= 20


def test_the_same_seed_proposes_the_same_candidates() -> None:
    first = propose(study(RungSampler(5, FAMILIES)), 24)
    assert propose(study(RungSampler(5, FAMILIES)), 24) == first
    assert propose(study(RungSampler(6, FAMILIES)), 24) != first


class _T:  # a FrozenTrial look-alike for the rung model's pure parts
    def __init__(self, number: int, state: str, scores: dict, **attrs):
        self.number, self.params, self.distributions = number, {}, {}
        self.user_attrs = {"rung_scores": scores, "trainable_params": 10,
                           "predicted_memory_bytes": 5, **attrs}
        self.system_attrs, self.intermediate_values = {}, {}
        self.state = optuna.trial.TrialState[state]
        self.values = None


def test_the_model_rung_is_the_highest_with_enough_scores() -> None:
    trials = [_T(n, "PRUNED", {"3": 0.5}) for n in range(6)]
    trials += [_T(6 + n, "COMPLETE", {"3": 0.6, "9": 0.7}) for n in range(3)]
    assert model_rung(trials, 8) == 3 and model_rung(trials, 3) == 9
    assert model_rung(trials, 10) is None
    dup = _T(9, "PRUNED", {"3": 0.5}, duplicate_of=0)  # a duplicate is not a new point
    assert model_rung([*trials[:7], dup], 8) is None


def test_the_view_makes_every_trial_at_the_rung_a_complete_observation() -> None:
    trials = [_T(0, "PRUNED", {"3": 0.5}), _T(1, "COMPLETE", {"3": 0.6, "9": 0.8}),
              _T(2, "RUNNING", {"3": 0.7}), _T(3, "RUNNING", {}), _T(4, "FAIL", {"3": 0.9})]
    seen = {t.number: t for t in rung_view_trials(trials, 3)}
    assert set(seen) == {0, 1, 2}
    assert all(t.state.name == "COMPLETE" for t in seen.values())
    # the score less its size band's median (one band here: 0.6); size and memory constant
    assert [seen[n].values for n in (0, 1, 2)] == [
        [pytest.approx(-0.1), 0.0, 0.0], [0.0, 0.0, 0.0], [pytest.approx(0.1), 0.0, 0.0]]
    high = {t.number: t for t in rung_view_trials(trials, 9)}
    assert high[0].state.name == "PRUNED" and high[0].values is None  # stopped below
    assert high[1].values == [0.0, 0.0, 0.0] and 2 not in high  # alone: against everyone
    assert trials[0].state.name == "PRUNED"  # the study's own trials are untouched


@pytest.mark.parametrize("dist,u,want", [
    (optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True), 0.5, 1e-3),
    (optuna.distributions.FloatDistribution(0.0, 1.0, step=0.25), 0.99, 1.0),
    (optuna.distributions.IntDistribution(2, 32, log=True), 0.0, 2),
    (optuna.distributions.IntDistribution(1, 5), 0.5, 3),
    (optuna.distributions.CategoricalDistribution(["a", "b", "c"]), 0.999, "c"),
])
def test_the_design_maps_the_unit_interval_onto_each_distribution(dist, u, want) -> None:
    assert from_unit(dist, u) == pytest.approx(want)


@pytest.mark.parametrize("dist,want", [
    (optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True), (10 ** -2.8, 1e-2)),
    (optuna.distributions.FloatDistribution(0.0, 1.0), (0.6, 1.0)),
])
def test_a_short_schedule_draws_a_learning_rate_from_the_top_40_percent(dist, want) -> None:
    short = short_lr_range("lora.learning_rate", dist)
    assert (short.low, short.high) == pytest.approx(want) and short.log == dist.log
    assert short_lr_range("lora.dropout", dist) == dist  # only learning rates
    stepped = optuna.distributions.FloatDistribution(0.0, 1.0, step=0.1)
    assert short_lr_range("lora.learning_rate", stepped) == stepped


def with_plan(st: optuna.Study, schedule: int) -> optuna.Study:
    st.set_user_attr("plan", Plan(max_steps=schedule, trial_steps=schedule, refit_steps=schedule,
                                  rungs=[schedule]).to_dict())
    return st


def test_on_a_short_schedule_every_way_proposes_rates_from_the_top_of_the_range() -> None:
    low = 10 ** (-1 - SHORT_LR_TOP * 4)  # SPACE's range: 1e-5 to 1e-1, four decades
    short = propose(with_plan(study(RungSampler(0, FAMILIES)), 162), 48)
    drawn = [(lr, way) for _, lr, way in short if way != "recipe"]  # recipes keep their rates
    assert {w for _, w in drawn} == {"family", "design", "model", "random"}
    assert all(lr >= low * (1 - 1e-9) for lr, _ in drawn), drawn
    long = propose(with_plan(study(RungSampler(0, FAMILIES)), 2000), 48)
    assert sum(lr < low for _, lr, way in long if way != "recipe") >= 10  # the whole range


def test_the_model_sees_a_rate_below_the_short_range_at_its_bottom() -> None:
    dist = optuna.distributions.FloatDistribution(1e-4, 3e-3, log=True)
    r = optuna.distributions.CategoricalDistribution([4, 8])
    trial = _T(0, "PRUNED", {"3": 0.5})
    trial.params = {"lora.learning_rate": 1e-4, "lora.r": 8}
    trial.distributions = {"lora.learning_rate": dist, "lora.r": r}
    seen = rung_view_trials([trial], 3, short=True)[0]
    short = short_lr_range("lora.learning_rate", dist)
    assert seen.distributions == {"lora.learning_rate": short, "lora.r": r}
    assert seen.params == {"lora.learning_rate": short.low, "lora.r": 8}
    assert trial.params["lora.learning_rate"] == 1e-4  # the study's own trial is untouched
    assert rung_view_trials([trial], 3)[0].params["lora.learning_rate"] == 1e-4  # long: as it is


def test_the_model_never_proposes_a_candidate_already_tried() -> None:
    """One good candidate: the model goes on near it, never onto it (the same entry and
    parameters with a learning rate within 10%); a draw that would is replaced by a random one,
    which records the trial it would have repeated."""
    st = study(RungSampler(0, FAMILIES, random_share=0.0), recipes=False)
    propose(st, 40, score_of("lora"))
    trials = st.get_trials()
    proposed = [t for t in trials[20:] if t.user_attrs["proposal"] == "model"]
    assert len(proposed) >= 8 and sum(t.params["candidate"] == "lora" for t in proposed) >= 4
    for t in proposed:
        assert near_repeat(t.params, trials[:t.number]) is None, t.params
    replaced = [t for t in trials if MODEL_REPEATED in t.user_attrs]
    assert replaced and all(t.user_attrs["proposal"] == "random" for t in replaced)
    for t in replaced:
        twin = trials[t.user_attrs[MODEL_REPEATED]]
        assert twin.number < t.number and twin.params["candidate"] == "lora"


def test_a_repeat_is_the_same_entry_and_parameters_with_a_rate_within_10_percent() -> None:
    tried = [_T(0, "COMPLETE", {}), _T(1, "PRUNED", {})]
    tried[0].params = {"candidate": "lora", "lora.r": 8, "lora.learning_rate": 2.0e-3}
    tried[1].params = {"candidate": "bitfit", "bitfit.learning_rate": 4.0e-3}
    lora = {"candidate": "lora", "lora.r": 8, "lora.learning_rate": 2.15e-3, "bitfit.learning_rate": 1}
    assert near_repeat(lora, tried) == 0  # other entries' parameters do not matter
    assert near_repeat({**lora, "lora.learning_rate": 2.3e-3}, tried) is None  # 15% apart
    assert near_repeat({**lora, "lora.r": 4}, tried) is None
    assert near_repeat({"candidate": "bitfit", "bitfit.learning_rate": 3.7e-3}, tried) == 1
    assert near_repeat({"lora.r": 8}, tried) is None  # no entry: nothing to compare


def test_a_hybrid_repeats_only_with_the_same_method_parameters() -> None:
    """A hybrid entry's parameters are its methods' (``lora.r``), its rate its own
    (``lora+bitfit.learning_rate``); another entry's rate in the draw does not count."""
    tried = [_T(0, "COMPLETE", {})]
    tried[0].params = {"candidate": "lora+bitfit", "lora+bitfit.learning_rate": 2e-3, "lora.r": 8}
    draw = {"candidate": "lora+bitfit", "lora+bitfit.learning_rate": 2.1e-3, "lora.r": 8,
            "lora.learning_rate": 5e-4, "ia3.targets": "x"}  # the model draws every group
    assert near_repeat(draw, tried) == 0
    assert near_repeat({**draw, "lora.r": 4}, tried) is None


def test_pruned_trials_never_fill_the_models_good_set() -> None:
    """TPE counts min(ceil(0.1 n), 25) trials good and fills the slots its scored trials do
    not with unscored ones in trial-number order: with 100 trials and 8 at a rung, two
    recipes pruned early were 'good'. The model waits until the rung holds that many."""
    pruned = [_T(n, "PRUNED", {}) for n in range(92)]
    eight = [_T(92 + n, "COMPLETE", {"3": 0.7}) for n in range(8)]
    assert model_rung([*pruned, *eight], 8) is None  # 8 < 10 of 100
    ten = [_T(92 + n, "COMPLETE", {"3": 0.7}) for n in range(10)]
    assert model_rung([*pruned[:90], *ten], 8) == 3
    many = [_T(n, "PRUNED", {}) for n in range(500)]
    assert model_rung([*many, *[_T(500 + n, "COMPLETE", {"3": 0.7}) for n in range(25)]], 8) == 3


def test_the_model_ranks_a_candidate_by_its_score_for_its_size() -> None:
    """A 3K-parameter candidate at chance took one of the two good slots of 20 when
    parameters and memory were objectives (nothing is smaller, so it is non-dominated). Now
    it ranks by its score against its size band (alone: against every trial), last here; a
    small candidate that scores well for its size ranks first."""
    trials = [_T(n, "COMPLETE", {"3": 0.62 + 0.01 * n}, trainable_params=74_498)
              for n in range(17)]
    trials.append(_T(17, "COMPLETE", {"3": 0.509}, trainable_params=3_074))  # tiny, at chance
    trials += [_T(18, "COMPLETE", {"3": 0.80}, trainable_params=5_000),  # its band: 1K-10K
               _T(19, "COMPLETE", {"3": 0.70}, trainable_params=6_000)]
    seen = sorted(rung_view_trials(trials, 3), key=lambda t: -t.values[0])
    assert seen[-1].number == 17 and seen[0].number == 18
    assert {tuple(t.values[1:]) for t in seen} == {(0.0, 0.0)}
