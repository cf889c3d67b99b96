"""P-tuning (Liu et al., 2021) through peft: virtual-token embeddings produced by a small
trained encoder (MLP or LSTM) and prepended to the input.

Encoders only, for the reason given in ``prompt.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.methods._common import attach_peft, one_of, positive_int
from autopeft.methods.registry import Method


@dataclass
class Spec:
    num_virtual_tokens: int = 20
    encoder_hidden_size: int | None = None  # the prompt encoder's width; default: model's hidden
    encoder_type: str = "MLP"  # MLP | LSTM

    def __post_init__(self) -> None:
        positive_int("num_virtual_tokens", self.num_virtual_tokens, "ptuning")
        if self.encoder_hidden_size is not None:
            positive_int("encoder_hidden_size", self.encoder_hidden_size, "ptuning")
        one_of("encoder_type", self.encoder_type, ("MLP", "LSTM"), "ptuning")


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import PromptEncoderConfig

    config = PromptEncoderConfig(num_virtual_tokens=spec.num_virtual_tokens,
                                 encoder_hidden_size=spec.encoder_hidden_size or ctx.hidden_size,
                                 encoder_reparameterization_type=spec.encoder_type)
    return attach_peft(model, config, ctx, "ptuning")


METHOD = Method(name="ptuning", category="additive", spec=Spec, apply=apply, engine="peft",
                peft_native=True, prompt_learning=True, families=("encoder",),
                summary="P-tuning: virtual-token embeddings from a small trained encoder")
