"""Promotion decisions on hand-made rung tables, and the same decisions from two processes
reading one SQLite study."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


from autopeft.search.pruner import (RungEntry, decide, median_score, mo_asha, rung_steps,
                                    rung_table)


def test_rungs_are_geometric_and_end_at_the_last_step() -> None:
    assert rung_steps(90) == [10, 30, 90]
    assert rung_steps(13) == [2, 5, 13]
    assert rung_steps(100, eta=2) == [25, 50, 100]
    assert rung_steps(2) == [1, 2]  # duplicates collapse
    assert rung_steps(1) == [1]


def E(n: int, score: float, params: float = 100, memory: float = 1000) -> RungEntry:
    return RungEntry(n, score, params, memory)


def test_same_cost_lower_score_is_pruned() -> None:
    table = [E(0, 0.90), E(1, 0.80), E(2, 0.70)]  # one size band: scores decide
    assert mo_asha(table, 0).keep
    assert not mo_asha(table, 1).keep and not mo_asha(table, 2).keep


def test_the_smallest_candidate_at_chance_is_pruned_and_a_mid_size_one_scoring_well_goes_on() -> None:
    # The old rule (front rank, crowding) kept the smallest whatever its score. Bands:
    # 1K-10K {0, 1}, 10K-100K {2, 3}, 100K-1M {4, 5}, 10M-100M {6}.
    table = [E(0, 0.51, params=5_380), E(1, 0.50, params=8_000), E(2, 0.80, params=40_000),
             E(3, 0.52, params=74_000), E(4, 0.84, params=150_000),
             E(5, 0.55, params=300_000), E(6, 0.86, params=22_700_000)]
    kept = {e.number for e in table if mo_asha(table, e.number, score_noise=0.028).keep}
    # 0, 1 (small, but at chance) and 3 lose to 2 (40K parameters: the best of its merged
    # group, which keeps one); 5 loses to 4; 4 and 6 (0.84 and 0.86) are ties within the
    # noise, and the group {4, 5, 6} keeps one: the tie goes to 4, 150K parameters, not 22.7M
    assert kept == {2, 4}
    assert mo_asha(table, 6, score_noise=0.028).rank == 2
    assert mo_asha(table, 6, score_noise=0.01).keep  # beyond that noise 0.86 wins
    d = mo_asha(table, 0, score_noise=0.028)
    assert (d.band, d.rank, d.allowed, d.competitors) == ("1K-100K", 3, 1, 4)  # after 2 and 3
    assert "ranks 3 of 4" in d.reason and d.to_dict()["band"] == "1K-100K"


def test_a_small_candidate_goes_on_because_it_scores_well_for_its_size() -> None:
    # Six small ones and three large ones: each band prunes on its own; the best small one
    # goes on although the large ones score higher.
    small = [E(n, 0.60 + 0.04 * n, params=5_000) for n in range(6)]  # best: 5 at 0.80
    large = [E(6 + n, 0.88 + 0.01 * n, params=500_000) for n in range(3)]
    table = small + large
    kept = {e.number for e in table if mo_asha(table, e.number).keep}
    assert kept == {4, 5, 8}  # top 6 // 3 = 2 of the small, 3 // 3 = 1 of the large
    assert mo_asha(table, 5).band == "1K-10K" and mo_asha(table, 8).band == "100K-1M"


def test_band_edges_a_power_of_ten_opens_its_band() -> None:
    # 9,999 and 10,000 are in different bands; with three trials each, the bands decide
    # apart: 1 (10,000 parameters) goes on as the best of 10K-100K.
    table = [E(0, 0.9, params=9_999), E(1, 0.7, params=10_000), E(2, 0.8, params=1_000),
             E(3, 0.6, params=5_000), E(4, 0.5, params=99_999), E(5, 0.4, params=10_001)]
    assert mo_asha(table, 1).keep and mo_asha(table, 1).band == "10K-100K"
    assert mo_asha(table, 0).keep and not mo_asha(table, 2).keep  # 0.8 < 0.9 in 1K-10K
    assert not mo_asha(table, 4).keep


def test_a_thin_band_joins_the_next_larger_one() -> None:
    # 0 is alone below 1K: it competes with 1K-10K, where 1 scores beyond the noise.
    table = [E(0, 0.70, params=500), E(1, 0.90, params=2_000), E(2, 0.60, params=3_000)]
    assert not mo_asha(table, 0).keep and mo_asha(table, 1).keep
    # The leftover at the top joins the band below it.
    table += [E(3, 0.95, params=10**7)]
    assert mo_asha(table, 3).competitors == 4 and mo_asha(table, 3).keep


def test_decisions_do_not_depend_on_arrival_order() -> None:
    import itertools

    table = [E(0, 0.9, 10), E(1, 0.8, 5_000), E(2, 0.7, 50), E(3, 0.85, 10), E(4, 0.6, 1),
             E(5, 0.88, 6_000), E(6, 0.5, 7_000)]
    first = {e.number: mo_asha(table, e.number, score_noise=0.02) for e in table}
    for order in itertools.islice(itertools.permutations(table), 0, 5040, 97):
        assert {e.number: mo_asha(list(order), e.number, score_noise=0.02)
                for e in table} == first


def test_fewer_than_eta_trials_keep_one_ties_going_to_the_smaller() -> None:
    assert mo_asha([E(0, 0.5)], 0).keep
    both = [E(0, 0.9, params=1000), E(1, 0.7, params=10)]
    assert mo_asha(both, 0).keep and not mo_asha(both, 1).keep  # small is not enough
    # inside the noise the scores cannot tell them apart: the smaller goes on, only it
    assert mo_asha(both, 1, score_noise=0.25).keep and not mo_asha(both, 0, score_noise=0.25).keep


def test_ties_never_let_more_than_the_top_share_go_on() -> None:
    # Twelve trials within the noise of each other (before training separates them): the
    # old rule kept all twelve. Exactly 12 // 3 = 4 go on, the four smallest, whatever the
    # order of the table; then memory, then the trial number, decides among equal sizes.
    table = [E(n, 0.50 + 0.001 * (n % 5), params=1_000 + 500 * ((n * 5) % 12)) for n in range(12)]
    kept = {e.number for e in table if mo_asha(table, e.number, score_noise=0.03).keep}
    assert kept == {e.number for e in sorted(table, key=lambda e: e.trainable_params)[:4]}
    same = [E(n, 0.5, params=1_000, memory=2_000 - n) for n in range(6)]
    assert {e.number for e in same if mo_asha(same, e.number, score_noise=0.03).keep} == {5, 4}
    # one clearly ahead still goes on, and the ties share what is left
    table.append(E(12, 0.9, params=9_000))
    kept = {e.number for e in table if mo_asha(table, e.number, score_noise=0.03).keep}
    assert 12 in kept and len(kept) == 13 // 3


def test_median_score_ignores_cost() -> None:
    table = [E(0, 0.9, params=10**6), E(1, 0.8, params=1), E(2, 0.7, params=1)]
    assert median_score(table, 0).keep
    assert median_score(table, 1).keep  # 0.8 >= median(0.9, 0.7)
    assert not median_score(table, 2).keep
    assert median_score([E(0, 0.1), E(1, 0.9)], 0).keep  # too few peers to judge


def test_no_pruner_keeps_everything() -> None:
    assert decide("none", [E(0, 0.1), E(1, 0.9), E(2, 0.9)], 0).keep


class _T:  # a FrozenTrial look-alike
    def __init__(self, number: int, state: str, attrs: dict):
        self.number, self.user_attrs = number, attrs
        self.state = type("S", (), {"name": state})()


def test_rung_table_reads_user_attrs_and_skips_failed() -> None:
    trials = [_T(0, "COMPLETE", {"rung_scores": {"2": 0.5}, "trainable_params": 10,
                                 "predicted_memory_bytes": 99}),
              _T(1, "FAIL", {"rung_scores": {"2": 0.9}, "trainable_params": 10}),
              _T(2, "RUNNING", {"rung_scores": {"5": 0.9}, "trainable_params": 10}),
              _T(3, "PRUNED", {"rung_scores": {"2": 0.4}, "trainable_params": 1,
                               "predicted_memory_bytes": 5})]
    assert rung_table(trials, 2) == [RungEntry(0, 0.5, 10, 99, first=0),
                                     RungEntry(3, 0.4, 1, 5, first=3)]


def test_a_continued_candidate_counts_once_at_a_rung() -> None:
    """Trial 4 continues trial 1 (cut short by the budget) and carries its rung score: the
    rung table holds the candidate once, as the later trial."""
    lora = {"methods": [{"name": "lora"}], "learning_rate": 5e-4, "seed": 0}
    attrs = {"rung_scores": {"2": 0.7}, "trainable_params": 10, "candidate": lora}
    trials = [_T(0, "COMPLETE", {"rung_scores": {"2": 0.5}, "trainable_params": 10}),
              _T(1, "PRUNED", dict(attrs)), _T(4, "RUNNING", dict(attrs))]
    assert sorted(e.number for e in rung_table(trials, 2)) == [0, 4]
    assert {e.number: e.first for e in rung_table(trials, 2)} == {0: 0, 4: 1}


def test_an_exact_tie_goes_to_the_candidate_that_came_first_whoever_continues_it() -> None:
    """Two candidates tied exactly (same score, size and memory: IA3 at two learning rates on
    one plateau) and one place. Broken by trial number, each continuation of the loser took a
    later number and lost again, while the paused winner's table still ranked it first: a
    replayed 4-hour search promoted the two in turn 1,600 times each. Broken by arrival, the
    continuation sees what its promotion saw."""
    def ia3(lr: float) -> dict:
        return {"methods": [{"name": "ia3"}], "learning_rate": lr, "seed": 0}

    def trial(n: int, cand: dict, state: str = "PRUNED") -> _T:
        return _T(n, state, {"rung_scores": {"7": 0.622}, "trainable_params": 3074,
                             "predicted_memory_bytes": 100, "candidate": cand})

    a, b = ia3(0.02), ia3(0.01)
    paused = [trial(18, a), trial(19, b)]  # 18 came first: it is the one that goes on
    assert mo_asha(rung_table(paused, 7), 18).keep and not mo_asha(rung_table(paused, 7), 19).keep
    # 18 promoted: its continuation (trial 30) scores the same and still goes on; b waits
    table = rung_table(paused + [trial(30, a, "RUNNING")], 7)
    assert mo_asha(table, 30).keep and not mo_asha(table, 19).keep
    # and the other way round: b continued (trial 31) does not overtake a
    table = rung_table(paused + [trial(31, b, "RUNNING")], 7)
    assert mo_asha(table, 18).keep and not mo_asha(table, 31).keep


DECIDE_ALL = textwrap.dedent("""
    import json, sys
    import optuna
    from autopeft.search.pruner import decide_from_storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="shared", storage=sys.argv[1])
    out = {}
    for t in study.get_trials():
        for step in t.user_attrs.get("rung_scores", {}):
            for pruner in ("mo-asha", "median-score"):
                d = decide_from_storage(study, pruner, t.number, int(step))
                out[f"{pruner}/{t.number}/{step}"] = [d.keep, d.ahead, d.allowed]
    print(json.dumps(out, sort_keys=True))
""")


def test_two_processes_on_one_sqlite_study_decide_alike(tmp_path: Path) -> None:
    import optuna
    from optuna.distributions import FloatDistribution

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = optuna.create_study(study_name="shared", storage=url,  # the storage exists first
                                directions=["maximize", "minimize", "minimize"])
    dist = {"x": FloatDistribution(0, 1)}
    for n in range(12):
        scores = {"3": 0.5 + 0.03 * ((n * 7) % 11)}
        if n % 2 == 0:
            scores["9"] = scores["3"] + 0.05
        attrs = {"rung_scores": scores, "trainable_params": 10 ** (1 + n % 4),
                 "predicted_memory_bytes": 1000 + 10 * n}
        study.add_trial(optuna.trial.create_trial(params={"x": n / 12}, distributions=dist,
                                                  values=[scores["3"], 1, 1], user_attrs=attrs))
    script = tmp_path / "decide.py"
    script.write_text(DECIDE_ALL)
    procs = [subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    assert len(outs[0]) == 2 * (12 + 6)
    kept = [k for k, v in outs[0].items() if k.startswith("mo-asha/") and k.endswith("/3") and v[0]]
    assert 0 < len(kept) < 12  # the decisions do something


def test_each_pruner_object_decides_like_its_function() -> None:
    from autopeft.search.pruner import MedianScore, MoAsha, NoPruner

    table = [E(0, 0.90), E(1, 0.80), E(2, 0.70)]
    assert NoPruner().decide(table, 2).keep and not NoPruner().prunes
    assert MoAsha(eta=3).decide(table, 0) == mo_asha(table, 0, 3)
    assert not MoAsha(eta=3).decide(table, 1).keep  # 3 // 3 = 1 goes on: the best
    assert MoAsha(eta=2).decide(table, 0).allowed == 1
    close = [E(0, 0.90), E(1, 0.89), E(2, 0.5)]
    assert not MoAsha().decide(close, 1).keep  # 0.89 < 0.90 at the same cost
    # inside the noise and at the same size, the better score still takes the one place
    assert not MoAsha().decide(close, 1, score_noise=0.05).keep
    assert MoAsha().decide([E(0, 0.90, params=200), *close[1:]], 1, score_noise=0.05).keep
    assert not MedianScore().decide(table, 2).keep
    assert MedianScore(min_peers=3).decide(table, 2).keep  # two peers: too few to judge


def test_make_pruner_names_are_the_cli_choices() -> None:
    import pytest

    from autopeft.search.pruner import PRUNERS, MoAsha, make_pruner

    assert PRUNERS == ("none", "mo-asha", "median-score")
    assert [make_pruner(n).name for n in PRUNERS] == list(PRUNERS)
    assert make_pruner("mo-asha", eta=4) == MoAsha(4)
    with pytest.raises(ValueError, match="unknown pruner 'asha'"):
        make_pruner("asha")


def test_a_trial_is_promoted_from_a_rung_at_most_once() -> None:
    """ASHA's promotion: a paused trial that now ranks is continued, once. Its continuation
    stopped at that same rung again (it lost there) is not promoted from it a second time:
    otherwise one disagreement between the two decisions loops for the rest of the budget."""
    import types

    import optuna
    from optuna.trial import TrialState, create_trial

    from autopeft.search.objective import TrialRunner
    from autopeft.search.pruner import MoAsha

    def paused(n: int, lr: float, score: float, **more: object) -> optuna.trial.FrozenTrial:
        return create_trial(state=TrialState.PRUNED, user_attrs={
            "candidate": {"methods": [{"name": "ia3"}], "learning_rate": lr, "seed": 0},
            "rung_scores": {"7": score}, "trainable_params": 3074, "paused": True,
            "pruned_at_step": 7, **more})

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for t in (paused(0, 0.02, 0.9), paused(1, 0.01, 0.5), paused(2, 0.03, 0.4)):
        study.add_trial(t)
    notes: list[str] = []
    runner = types.SimpleNamespace(study=study, pruner=MoAsha(), rung_noise=0.0,
                                   reporter=types.SimpleNamespace(note=notes.append))
    assert TrialRunner.promote(runner) == 0  # now it ranks first of three: continued
    assert "trial 0 (?) promoted at step 7" in notes[0]
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for t in (paused(0, 0.02, 0.9), paused(1, 0.01, 0.5), paused(2, 0.03, 0.4),
              paused(3, 0.02, 0.9, promotes=0)):  # its continuation, stopped at 7 again
        study.add_trial(t)
    runner.study = study
    assert TrialRunner.promote(runner) is None


def test_no_more_than_the_top_share_go_past_a_rung_at_any_time() -> None:
    """ASHA's bound: a trial that leads its table pauses while earlier arrivals hold every
    place (one of three went on before it came), and goes on once the table has room for
    two; a table that grew keeps the old places counted."""
    early = E(0, 0.60)
    table = [RungEntry(0, 0.60, 100, 1000, went_on=True), E(1, 0.50), E(2, 0.90)]
    d = mo_asha(table, 2)
    assert d.rank == 1 and not d.keep and "1 went on already" in d.reason
    grown = table + [E(3, 0.40), E(4, 0.30), E(5, 0.20)]  # 6 // 3 = 2 places
    assert mo_asha(grown, 2).keep and not mo_asha(grown, 1).keep
    assert mo_asha([early, E(1, 0.5), E(2, 0.9)], 2).keep  # nobody went on: the best goes


def test_a_trial_went_past_a_rung_if_kept_scored_later_or_continued_from_it() -> None:
    from autopeft.search.pruner import went_past

    assert went_past({"rung_decisions": {"7": {"keep": True}}}, 7)
    assert not went_past({"rung_decisions": {"7": {"keep": False}}, "rung_scores": {"7": 0.5}}, 7)
    assert went_past({"rung_scores": {"7": 0.5, "21": 0.6}}, 7)
    assert went_past({"continued_from": 7, "rung_scores": {"7": 0.5}}, 7)  # a promotion
    assert not went_past({"continued_from": 2, "rung_scores": {"7": 0.5}}, 7)
