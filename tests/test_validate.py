"""Spaces are checked against the model before training: one line naming the place."""
from __future__ import annotations

import pytest

from autopeft.errors import UserError
from autopeft.space import load_space, parse_space
from autopeft.validate import fit_space
from families import tiny_model


def test_rank_larger_than_the_layer_names_the_value() -> None:
    space = parse_space({"candidates": ["lora"], "methods": {"lora": {"r": {"choices": [4, 64]}}}},
                        "s.yaml")
    with pytest.raises(UserError, match=r"s.yaml: methods.lora.r=64: lora: rank 64 is larger"):
        fit_space(space, tiny_model("bert"))


def test_entries_that_cannot_apply_are_dropped_with_a_note() -> None:
    space = parse_space({"candidates": ["bitfit", "lora", "lora+bitfit"]}, "s.yaml")
    fitted, notes = fit_space(space, tiny_model("llama"))
    assert list(fitted.candidates) == ["lora"]
    assert len(notes) == 2 and all("bitfit: this model has no bias terms" in n for n in notes)
    with pytest.raises(UserError, match="no candidate of this space applies"):
        fit_space(parse_space({"candidates": ["bitfit"]}, "s.yaml"), tiny_model("llama"))


def test_the_default_space_fits_a_bert_whole() -> None:
    space = load_space("default")
    fitted, notes = fit_space(space, tiny_model("bert"))
    assert fitted.candidates == space.candidates and not notes


def test_per_layer_placement_samples_each_layer_on_or_off() -> None:
    import optuna

    space = parse_space({"candidates": ["adapter"], "methods": {"adapter": {
        "layers": {"per_layer": True}}}}, "s.yaml")
    fitted, _ = fit_space(space, tiny_model("bert"))  # 2 layers
    seen = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        layers = fitted.sample(trial).methods[0].params["layers"]
        assert set(trial.params) == {"candidate", "adapter.layers.0",
                                     "adapter.layers.1"}
        on = [i for i in (0, 1) if trial.params[f"adapter.layers.{i}"]]
        assert layers == (on or [1])
        seen.add(tuple(layers))
        study.tell(trial, 0.0)
    assert seen == {(0,), (1,), (0, 1)}
