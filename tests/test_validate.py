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
    assert len(notes) == 2 and all("no bias" in n for n in notes)
    with pytest.raises(UserError, match="no candidate of this space applies"):
        fit_space(parse_space({"candidates": ["bitfit"]}, "s.yaml"), tiny_model("llama"))


def test_the_default_space_fits_a_bert_whole() -> None:
    space = load_space("default")
    fitted, notes = fit_space(space, tiny_model("bert"))
    assert fitted.candidates == space.candidates and not notes
