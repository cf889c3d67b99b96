"""Picking rules (``export --best/--pick``) on a hand-made study: no training, instant."""
from __future__ import annotations

from pathlib import Path

import pytest

from autopeft import api
from autopeft.errors import UserError
from autopeft.report import pick
from autopeft.report.show import rows

# (score, trainable params, peak memory bytes, label); trial numbers are the list positions.
TRIALS = [
    (0.92, 22_000_000, 1_200_000_000, "full"),    # 0: best score
    (0.91, 75_000, 500_000_000, "lora"),          # 1: >= 0.9 with the fewest params
    (0.91, 75_000, 600_000_000, "lora"),          # 2: dominated by 1 (same score/params, more memory)
    (0.88, 9_000, 450_000_000, "ia3"),            # 3: fewest params overall
    (0.85, 40_000, 400_000_000, "bitfit"),        # 4: least memory
    (0.95, 10_000, 300_000_000, "lora"),          # 5: infeasible: would win everything
]


def hand_made_study(storage: str | None = None, extra_attrs: dict[int, dict] | None = None):
    """The trials above as a study; ``extra_attrs`` adds user attributes to trial numbers."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="hand", storage=storage,
                                directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("task", "sst2")
    study.set_user_attr("model", "tiny")
    for number, (score, params, mem, label) in enumerate(TRIALS):
        system = {"constraints": [1.0]} if score == 0.95 else {"constraints": [-1.0]}
        study.add_trial(create_trial(
            values=[score, params, mem], system_attrs=system,
            user_attrs={"label": label, "trainable_fraction": params / 22_000_000,
                        "wall_seconds": 10.0,
                        "candidate": {"methods": [{"name": label, "params": {}}],
                                      "learning_rate": 1e-3, "seed": 0},
                        **(extra_attrs or {}).get(number, {})}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"label": "prefix",
                                                                     "fail_reason": "boom"}))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"label": "lora"}))
    return study


@pytest.fixture(scope="module")
def study():
    return hand_made_study()


def chosen(study, rule: str) -> int:
    pool = [r for r in rows(study, all_trials=True) if r.state == "COMPLETE" and r.feasible]
    return pick.select(pool, rule).number


@pytest.mark.parametrize("rule, number", [
    ("max score", 0),
    ("score>=0.9,min params", 1),          # 1 and 2 tie on score and params: less memory wins
    ("min params", 3),
    ("min memory", 4),
    ("score>0.86, min memory", 3),
    ("params<=100K,max score", 1),
    ("memory<1GB, fraction<0.1%, max score", 3),
    ("memory<=500MB,min params", 3),
    ("time<1m", 0),                        # no goal: max score
    ("params < 50k , min memory", 4),
])
def test_rules_pick_the_right_trial(study, rule: str, number: int) -> None:
    assert chosen(study, rule) == number


def test_best_and_select_trial_skip_infeasible_failed_and_pruned(study) -> None:
    assert api.select_trial(study, best="score") == 0  # 5 scores higher but is infeasible
    assert api.select_trial(study, best="params") == 3
    assert api.select_trial(study, best="memory") == 4
    assert api.select_trial(study, pick="score>=0.9,min params") == 1
    assert api.select_trial(study, trial=2) == 2
    front = {r.number for r in rows(study)}
    assert front == {0, 1, 3, 4}, "2 is dominated, 5 infeasible, 6/7 not complete"


@pytest.mark.parametrize("rule, message", [
    ("", "empty pick rule"),
    ("score>=0.9,", "empty clause"),
    ("speed>3", "unknown field 'speed'"),
    ("score>=high", "cannot read the number"),
    ("params<3Q", "unknown unit 'q'"),
    ("best params", "cannot read pick rule clause"),
    ("score>=0.99", "no complete trial satisfies score>=0.99 (best score is 0.92)"),
])
def test_bad_rules_are_one_line_user_errors(study, rule: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        chosen(study, rule)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_exactly_one_way_to_choose(study) -> None:
    for kwargs in ({}, {"trial": 1, "best": "score"}, {"best": "score", "pick": "min params"}):
        with pytest.raises(UserError, match="exactly one of --trial N, --best"):
            api.select_trial(study, **kwargs)
    with pytest.raises(UserError, match="--best takes one of score, params, memory"):
        api.select_trial(study, best="speed")


def test_cli_export_pick_reports_a_bad_rule_in_one_line(workdir: Path, capsys) -> None:
    from autopeft.cli import main

    (workdir / "studies").mkdir()
    hand_made_study(f"sqlite:///{workdir / 'studies' / 'hand.db'}")
    assert main(["export", "hand", "--pick", "score>=0.99", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autopeft: error: no complete trial satisfies")
    assert not (workdir / "x").exists()


def test_a_confirmation_stands_in_for_the_trial_it_confirms() -> None:
    from optuna.trial import create_trial

    study = hand_made_study()
    study.add_trial(create_trial(  # trial 8: trial 1 re-trained with 3 seeds (means)
        values=[0.93, 75_000, 500_000_000],
        user_attrs={"label": "lora", "confirm_of": 1, "confirm_scores": [0.91, 0.94, 0.94],
                    "confirm_mean": 0.93, "confirm_std": 0.017, "confirm_seeds": [0, 1, 2],
                    "candidate": {"methods": [{"name": "lora", "params": {}}],
                                  "learning_rate": 1e-3, "seed": 0}}))
    assert api.select_trial(study, best="score") == 8
    assert api.select_trial(study, pick="score>=0.9,min params") == 8
    everything = {r.number: r for r in rows(study, all_trials=True)}
    assert everything[1].superseded_by == 8 and not everything[1].on_front
    assert everything[8].on_front and everything[8].seeds == 3
    assert everything[8].note == "refit of trial 1"
