"""Search spaces: shipped files load, sampling gives valid candidates, values round-trip."""
from __future__ import annotations

import optuna
import pytest

from autopeft.build import build
from autopeft.candidate import Candidate
from autopeft.errors import UserError
from autopeft.space import SPACES_DIR, load_space, parse_space
from autopeft.validate import with_layer_count
from families import tiny_model


@pytest.mark.parametrize("path", sorted(SPACES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_spaces_load_and_sample_buildable_candidates(path) -> None:
    """Every candidate label of every shipped space builds at least once on a tiny model
    (each label is asked for once, then 12 random draws); a draw may be refused only for
    a value the 32-wide model cannot take (a rank above 32, a bias it has not)."""
    space = with_layer_count(load_space(str(path)), 2)  # what fitting to the model does
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for label in space.candidates:
        study.enqueue_trial({"candidate": label})
    base = tiny_model("bert")
    built: dict[str, int] = {}
    for _ in range(len(space.candidates) + 12):
        trial = study.ask()
        cand = space.sample(trial)
        built.setdefault(cand.label, 0)
        assert cand.learning_rate > 0
        assert Candidate.from_dict(cand.to_dict()) == cand  # plain data, stored with the trial
        try:
            build(base, cand)
            built[cand.label] += 1
        except UserError as exc:  # e.g. a rank too big for the 32-wide test model
            assert "larger than" in str(exc) or "no bias" in str(exc), exc
        study.tell(trial, [0.5, 1.0, 1.0])
    assert set(built) == set(space.candidates)
    assert all(built.values()), {label: n for label, n in built.items() if not n}


def test_list_choices_are_sampled_as_lists() -> None:
    space = parse_space({"candidates": ["lora"], "methods": {"lora": {
        "targets": {"choices": [["query"], ["query", "value"]]}, "r": {"low": 2, "high": 8}}}})
    trial = optuna.create_study().ask()
    cand = space.sample(trial)
    params = cand.methods[0].params
    assert params["targets"] in (["query"], ["query", "value"])
    assert isinstance(params["r"], int) and 2 <= params["r"] <= 8
    assert trial.params["candidate"] == "lora"


def test_yaml_11_exponents_are_numbers() -> None:
    space = parse_space({"candidates": ["bitfit"], "learning_rate": {"low": "1e-5", "high": "1e-3",
                                                                      "log": True}})
    assert space.learning_rate.low == pytest.approx(1e-5)


def test_entry_overrides_only_learning_rate() -> None:
    with pytest.raises(UserError, match="may only override learning_rate"):
        parse_space({"candidates": {"lora": {"r": 4}}})
