"""A clean front: near-identical candidates are one entry, ties treat every objective alike,
the hidden best is explained, and the refit spreads over distinct points of the front."""
from __future__ import annotations

from autopeft.results import Record, collapse_repeats, front, hidden_best, strict_differences
from autopeft.search.refit import kind, spread

MiB = 2**20


def cand(method: str, lr: float, **params) -> dict:
    return {"methods": [{"name": method, "params": {"layers": "all", **params}}],
            "learning_rate": lr, "seed": 0}


def rec(n: int, score: float, params: int, memory: int = 400 * MiB, candidate: dict | None = None,
        fidelity: str = "search") -> Record:
    return Record(n, "COMPLETE", "x", candidate or cand("m", 1e-3 * (n + 1)), score, params,
                  memory, fidelity=fidelity)


IA3 = dict(targets=["key", "value"])


def test_near_identical_candidates_are_one_entry_listing_its_repeats() -> None:
    # Three IA3 [key,value] L=all at 0.029-0.030, same 5.38K parameters: one entry, the best.
    same = [rec(3, 0.801, 5_380, candidate=cand("ia3", 0.0290, **IA3)),
            rec(5, 0.806, 5_380, candidate=cand("ia3", 0.0300, **IA3)),
            rec(9, 0.803, 5_380, candidate=cand("ia3", 0.0295, **IA3))]
    other_lr = rec(11, 0.79, 5_380, candidate=cand("ia3", 0.0400, **IA3))  # 33% above: distinct
    other_shape = rec(12, 0.80, 5_380, candidate=cand("ia3", 0.0300, targets=["key"]))
    got = {r.number: r.repeats for r in collapse_repeats(same + [other_lr, other_shape])}
    assert got == {5: [3, 9], 11: [], 12: []}
    on = front(same + [rec(20, 0.85, 300_000, candidate=cand("adapter", 1e-3))], 0.0)
    assert [(r.number, r.repeats) for r in on] == [(20, []), (5, [3, 9])]


def test_a_repeat_group_never_spans_more_than_the_factor() -> None:
    # Scores apart (no tie): only the same rate, within 10% of the entry's best, is a repeat.
    chain = [rec(n, 0.8 - 0.01 * n, 100, candidate=cand("bitfit", lr)) for n, lr in
             enumerate([1.00e-3, 1.08e-3, 1.16e-3, 1.25e-3])]  # each 8% above the last
    assert {r.number: r.repeats for r in collapse_repeats(chain)} == {0: [1], 2: [3]}


def test_one_configuration_at_rates_tied_within_the_noise_is_one_entry() -> None:
    # The (IA)3 front seen: three rates, same parameters and memory, scores within the noise.
    ia3 = [rec(n, score, 3_074, candidate=cand("ia3", lr, **IA3)) for n, score, lr in
           ((4, 0.7770, 1.7e-2), (6, 0.7800, 1.5e-2), (9, 0.7750, 8.7e-3))]
    low = rec(11, 0.7600, 3_074, candidate=cand("ia3", 4e-3, **IA3))  # beyond the noise
    lean = rec(12, 0.7700, 3_074, memory=300 * MiB, candidate=cand("ia3", 3e-3, **IA3))
    on = front([*ia3, low, lean], 0.006)
    assert [(r.number, r.repeats) for r in on] == [(6, [4, 9]), (12, [])]
    # Without noise the same scores are distinct points: the best alone dominates them.
    assert [(r.number, r.repeats) for r in front([*ia3, low], 0.0)] == [(6, [])]


def test_optunas_strict_front_is_explained_trial_by_trial() -> None:
    ia3 = [rec(4, 0.7770, 3_074, candidate=cand("ia3", 1.7e-2, **IA3)),
           rec(6, 0.7800, 3_074, candidate=cand("ia3", 1.5e-2, **IA3))]
    searched = rec(7, 0.80, 50_000, candidate=cand("lora", 1e-3))
    searched.superseded_by = 8
    refit = rec(8, 0.79, 50_000, candidate=cand("lora", 1e-3), fidelity="refit")
    close = rec(10, 0.7795, 3_074, memory=int(450 * MiB), candidate=cand("ia3", 2e-2,
                                                                         targets=["key"]))
    lines = strict_differences([*ia3, searched, refit, close], [4, 6, 7, 8, 10], 0.006)
    assert lines == [
        "trial 4: a tie of trial 6: the same configuration at learning rate 1.7e-02, "
        "score 0.7770 within noise 0.0060",
        "trial 7: re-trained by the refit as trial 8, whose score stands for it",
        "trial 10: dominated within the noise by trial 6 (higher score (0.7800 vs 0.7795), "
        "same params (3,074), less memory (400.0 vs 450.0 MiB))"]


def test_refit_and_search_records_are_never_each_others_repeats() -> None:
    a = rec(1, 0.8, 100, candidate=cand("bitfit", 1e-3))
    b = rec(2, 0.8, 100, candidate=cand("bitfit", 1e-3), fidelity="refit")
    assert {r.number for r in collapse_repeats([a, b])} == {1, 2}


def test_a_memory_difference_within_tolerance_is_a_tie() -> None:
    # Same params, scores tied within the noise, memory 1.5% apart: neither dominates, so the
    # better score stays on the front (before, 1.5% of memory removed it).
    best = rec(12, 0.8119, 100_000, memory=int(406 * MiB), candidate=cand("adapter", 1e-3))
    lean = rec(7, 0.8080, 100_000, memory=int(400 * MiB), candidate=cand("lora", 1e-3))
    assert {r.number for r in front([best, lean], 0.006)} == {7, 12}
    # Beyond the tolerance (10% less memory) memory decides again.
    leaner = rec(8, 0.8080, 100_000, memory=int(360 * MiB), candidate=cand("lora", 2e-3))
    assert [r.number for r in front([best, leaner], 0.006)] == [8]


def test_show_says_why_the_best_score_is_not_on_the_front() -> None:
    best = rec(12, 0.8119, 1_200_000, candidate=cand("adapter", 1e-3))
    ia3 = rec(7, 0.8080, 5_380, candidate=cand("ia3", 3e-2, **IA3))
    assert [r.number for r in front([best, ia3], 0.006)] == [7]
    why = hidden_best([best, ia3], 0.006)
    assert why is not None and (why.number, why.by) == (12, 7)
    assert why.line().startswith("best score 0.8119 (trial 12) is not on the front: "
                                 "dominated by trial 7 (score 0.8080 within noise 0.0060")
    assert "fewer params (5,380 vs 1,200,000)" in why.line()
    assert hidden_best([best, ia3], 0.0) is None  # no noise: both are on the front


def test_the_hidden_best_line_names_what_really_dominates() -> None:
    # Same score, fewer params, but 3% MORE memory (a tie): said as such, not as an advantage.
    best = rec(1, 0.3750, 9_000, memory=int(400 * MiB), candidate=cand("lora", 1e-3))
    other = rec(4, 0.3750, 5_000, memory=int(412 * MiB), candidate=cand("ia3", 1e-2))
    why = hidden_best([best, other], 0.0)
    assert why is not None and (why.number, why.by) == (1, 4)
    assert why.why == ("same score (0.3750), fewer params (5,000 vs 9,000), "
                       "more memory but within 5% (412.0 vs 400.0 MiB)")


def test_the_refit_spreads_over_methods_and_sizes_before_variants() -> None:
    bitfit = [rec(n, 0.88 - 0.01 * n, 100_000, candidate=cand("bitfit", 1e-3 * (n + 1)))
              for n in range(3)]
    lora_small = rec(3, 0.86, 70_000, candidate=cand("lora", 5e-4, r=8))
    lora_big = rec(4, 0.85, 300_000, candidate=cand("lora", 5e-4, r=32))
    promise = [*bitfit, lora_small, lora_big]
    assert [m.number for m in spread(promise)] == [0, 3, 4, 1, 2]
    # What the refit already re-trained counts as chosen.
    assert [m.number for m in spread(promise, [kind(bitfit[0])])] == [3, 4, 0, 1, 2]
    assert kind(lora_small) == (("lora",), 4) and kind(lora_big) == (("lora",), 5)


def test_show_lists_repeats_and_the_hidden_best_from_a_study() -> None:
    import optuna

    from autopeft.report.show import front_notes, rows

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("noise", {"rung": 0.028, "final": 0.006})
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def add(score: float, params: int, candidate: dict) -> None:
        study.add_trial(optuna.trial.create_trial(
            params={"x": 0.5}, distributions=dist, values=[score, params, 400 * MiB],
            user_attrs={"candidate": candidate, "label": candidate["methods"][0]["name"],
                        "trainable_params": params, "steps": 100}))

    add(0.801, 5_380, cand("ia3", 0.0290, **IA3))  # 0
    add(0.806, 5_380, cand("ia3", 0.0300, **IA3))  # 1
    add(0.8119, 1_200_000, cand("adapter", 1e-3))  # 2: best score, tied with 1 in the noise
    shown = rows(study)
    assert [(r.number, r.repeats) for r in shown] == [(1, [0])]
    everything = {r.number: r for r in rows(study, all_trials=True)}
    assert everything[1].repeats == [0] and everything[0].repeats == []
    assert everything[2].note.startswith("best score 0.8119 (trial 2) is not on the front")
    notes = front_notes(study)
    assert notes[0].startswith("best score 0.8119 (trial 2) is not on the front: dominated by "
                               "trial 1")
    assert notes[1] == ("trial 1 +1 tie (the same configuration at other learning rates, "
                        "within the noise): 0")
    # Optuna's strict front (the dashboard's) lists trial 2 too: show says why it is not here.
    assert {t.number for t in study.best_trials} == {1, 2}
    assert notes[2].startswith("Optuna's best_trials (and optuna-dashboard) also list 1 trial:")
    assert notes[3].startswith("  trial 2: dominated within the noise by trial 1 (score 0.8060 "
                               "within noise 0.0060 of 0.8119, fewer params (5,380 vs 1,200,000)")
    assert len(notes) == 4
    from rich.console import Console

    from autopeft.report.show import table
    out = Console(width=200, record=True)
    out.print(table(shown, "front"))
    assert "ia3 +1 tie" in out.export_text()


class _Study:  # what leaders_first reads of a study
    def __init__(self, recipes: set[int], noise: float) -> None:
        self.user_attrs = {"noise": {"rung": noise}}
        self._trials = [type("T", (), {"number": n, "user_attrs": {"warm_start": "r"}})()
                        for n in sorted(recipes)]

    def get_trials(self, deepcopy: bool = False) -> list:
        return self._trials


def test_the_refit_takes_the_leaders_first_the_recipes_among_them_first() -> None:
    """Search scores near chance, within the noise of each other: the hypervolume puts the
    smallest candidates first, but the recipes (LoRA trial 0, BitFit trial 1) lead the refit;
    a member clearly ahead beyond the noise leads it whatever it is."""
    from autopeft.search.refit import leaders_first

    ia3 = rec(6, 0.52, 5_000, candidate=cand("ia3", 3e-3))
    prompt = rec(7, 0.51, 10_000, candidate=cand("prompt", 3e-2))
    lora = rec(0, 0.509, 74_498, candidate=cand("lora", 5e-4, r=8))
    bitfit = rec(1, 0.50, 26_882, candidate=cand("bitfit", 1e-3))
    promise = [ia3, prompt, bitfit, lora]  # by hypervolume added: smallest first
    got = leaders_first(promise, _Study({0, 1}, noise=0.028))
    assert [m.number for m in got] == [0, 1, 6, 7]
    ahead = rec(8, 0.70, 300_000, candidate=cand("adapter", 1e-3))
    got = leaders_first([ia3, ahead, lora], _Study({0}, noise=0.028))
    assert [m.number for m in got] == [8, 6, 0]


def test_the_refit_sees_a_recipe_tied_at_chance_that_a_smaller_one_dominates() -> None:
    """After a 51-step trial LoRA and BitFit both score 0.5092 (chance): BitFit, smaller,
    dominates LoRA on the front, yet LoRA is a leader within the noise, and as the first
    recipe it is the first the refit continues (MiniLM/SST-2 at R = 3 refit BitFit alone)."""
    import optuna

    from autopeft.search.refit import _search_front, by_promise, leaders_first

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("noise", {"rung": 0.028})
    for n, (label, score, params, recipe) in enumerate([("lora", 0.5092, 74_498, True),
                                                        ("bitfit", 0.5092, 26_882, True),
                                                        ("ia3", 0.5103, 14_594, True),
                                                        ("prompt", 0.30, 9_000, False)]):
        attrs = {"label": label, "candidate": cand(label, 1e-3), "trainable_params": params,
                 "peak_memory_bytes": 400 * MiB, "steps": 51}
        if recipe:
            attrs["warm_start"] = label
        study.add_trial(optuna.trial.create_trial(values=[score, params, 400 * MiB],
                                                  user_attrs=attrs))
    pool = _search_front(study)
    assert {r.number for r in pool} == {0, 1, 2, 3}  # the front (1, 2, 3) and the leader 0
    assert [r.number for r in leaders_first(by_promise(pool, study), study)][:3] == [0, 1, 2]


def test_a_strict_member_dominated_by_a_trial_off_the_front_says_by_which() -> None:
    """Full fine-tuning's best score ties LoRA's within the noise; LoRA is itself tied off
    the front by an adapter: full fine-tuning is dominated by LoRA (the README's session
    said "not a candidate of this front (infeasible or provisional)")."""
    adapter = rec(18, 0.7959, 63_050, memory=int(227 * MiB), candidate=cand("adapter", 2.7e-3))
    lora = rec(2, 0.8073, 74_498, memory=int(443 * MiB), candidate=cand("lora", 3e-3))
    full = rec(3, 0.8177, 22_713_986, memory=int(771 * MiB), candidate=cand("full", 1e-4))
    lines = strict_differences([adapter, lora, full], [2, 3, 18], 0.0131)
    assert lines[-1].startswith("trial 3: dominated within the noise by trial 2 (")
