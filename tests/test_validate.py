"""Spaces are checked against the model before training: one line naming the place."""
from __future__ import annotations

import pytest

from autopeft.errors import UserError
from autopeft.space import load_space, parse_space
from autopeft.validate import check_space_fits
from families import tiny_model


def test_rank_larger_than_the_layer_names_the_value() -> None:
    space = parse_space({"candidates": ["lora"], "methods": {"lora": {"r": {"choices": [4, 64]}}}},
                        "s.yaml")
    with pytest.raises(UserError, match=r"s.yaml: methods.lora.r=64: lora: rank 64 is larger"):
        check_space_fits(space, tiny_model("bert"))


def test_bitfit_on_a_model_without_biases() -> None:
    space = parse_space({"candidates": ["bitfit"]}, "s.yaml")
    with pytest.raises(UserError, match="candidates.bitfit: bitfit: this model has no bias"):
        check_space_fits(space, tiny_model("llama"))


def test_the_default_space_fits_a_bert() -> None:
    check_space_fits(load_space("default"), tiny_model("bert"))
