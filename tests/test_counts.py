"""Trainable-parameter counts equal hand counts on the tiny BERT (hidden 32, 2 layers,
FFN 64, vocab V, 2 labels)."""
from __future__ import annotations

import pytest

from autopeft.build import build, count_total, count_trainable
from autopeft.candidate import Candidate, MethodSpec
from families import tiny_model

H, L, F, LABELS = 32, 2, 64, 2
HEAD = H * LABELS + LABELS  # BERT's classifier: Linear(H, 2)


def count(name: str, **params) -> int:
    return count_trainable(build(tiny_model("bert"), Candidate([MethodSpec(name, params)], 1e-3)))


def test_full_fine_tuning_trains_every_parameter() -> None:
    base = tiny_model("bert")
    assert count("full") == sum(p.numel() for p in base.parameters()) == count_total(base)


def test_bitfit_counts_biases_and_head() -> None:
    # Per layer: q, k, v, attn-out, FFN-in, FFN-out biases + 2 LayerNorm biases.
    per_layer = 4 * H + F + H + 2 * H
    embeddings_ln, pooler = H, H
    assert count("bitfit") == L * per_layer + embeddings_ln + pooler + HEAD
    assert count("bitfit", layers=[1]) == per_layer + HEAD


def test_lora_counts_rank_times_in_plus_out() -> None:
    r = 4
    assert count("lora", r=r, targets=["query", "value"]) == L * 2 * r * (H + H) + HEAD
    # FFN-in is H -> F, FFN-out F -> H.
    assert count("lora", r=r, targets=["ffn_in", "ffn_out"], layers=[0]) == 2 * r * (H + F) + HEAD
    # rank_pattern overrides the rank of layer 1 only.
    assert count("lora", r=2, targets=["query"], rank_pattern={1: 8}) == 2 * 2 * H + 8 * 2 * H + HEAD


def test_ia3_counts_one_vector_per_target() -> None:
    # key/value scale their outputs (H each); FFN-out scales its input (F).
    assert count("ia3", targets=["key", "value", "ffn_out"]) == L * (H + H + F) + HEAD
    assert count("ia3", targets=["key"], layers=[0]) == H + HEAD


def test_rank_larger_than_the_layer_is_a_user_error() -> None:
    from autopeft.errors import UserError

    with pytest.raises(UserError, match="rank 64 is larger"):
        count("lora", r=64, targets=["query"])
