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
    table = [E(0, 0.90), E(1, 0.80), E(2, 0.70)]  # same params and memory: scores decide
    assert mo_asha(table, 0).keep
    assert not mo_asha(table, 1).keep and not mo_asha(table, 2).keep


def test_a_cheaper_candidate_survives_a_lower_score() -> None:
    # 1 scores lower than 0 but trains 100x fewer parameters: both on the first front.
    table = [E(0, 0.90, params=10_000), E(1, 0.80, params=100), E(2, 0.70, params=10_000)]
    assert mo_asha(table, 0).keep and mo_asha(table, 1).keep
    assert not mo_asha(table, 2).keep  # dominated by 0


def test_top_third_by_front_then_crowding() -> None:
    # Nine trials: the top 9 // 3 = 3 go on. The first front is 0, 1, 2, 3 (a trade-off
    # curve); 0 and 3 are its ends (infinite crowding), then the lonelier of 1 and 2.
    table = [E(0, 0.90, params=1000), E(1, 0.85, params=500), E(2, 0.84, params=480),
             E(3, 0.60, params=10), *(E(n, 0.50, params=2000) for n in range(4, 9))]
    kept = {e.number for e in table if mo_asha(table, e.number).keep}
    assert kept == {0, 2, 3}  # 2 is lonelier than 1: crowding 1.33 against 0.73 (test_pareto)
    for n in range(4, 9):
        d = mo_asha(table, n)
        assert not d.keep and d.allowed == 3 and d.competitors == 9


def test_decisions_do_not_depend_on_arrival_order() -> None:
    table = [E(0, 0.9, 10), E(1, 0.8, 5), E(2, 0.7, 50), E(3, 0.85, 10), E(4, 0.6, 1)]
    first = {e.number: mo_asha(table, e.number).keep for e in table}
    again = {e.number: mo_asha(table[::-1], e.number).keep for e in table}
    assert first == again


def test_fewer_than_eta_trials_keep_every_non_dominated_one() -> None:
    assert mo_asha([E(0, 0.5)], 0).keep
    both = [E(0, 0.9, params=1000), E(1, 0.7, params=10)]
    assert mo_asha(both, 0).keep and mo_asha(both, 1).keep


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
    assert rung_table(trials, 2) == [RungEntry(0, 0.5, 10, 99), RungEntry(3, 0.4, 1, 5)]


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
    assert MoAsha().decide(close, 1, score_noise=0.05).keep  # inside the noise: a tie
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
