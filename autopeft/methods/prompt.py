"""Prompt tuning (Lester et al., 2021) through peft: trained embeddings of virtual tokens
prepended to the input.

Encoders only: with the prompt in front, peft passes embeddings (not token ids) to the
model, so a decoder's classification head cannot find the last real token and pools the
last position, a pad under right padding (autopeft pads right); T5's classification
model refuses embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.methods._common import attach_peft, one_of, positive_int
from autopeft.methods.registry import Method

INITS = ("random", "sample_vocab")


@dataclass
class Spec:
    num_virtual_tokens: int = 20
    init: str = "random"  # random | sample_vocab (embeddings of random vocabulary tokens)

    def __post_init__(self) -> None:
        positive_int("num_virtual_tokens", self.num_virtual_tokens, "prompt")
        one_of("init", self.init, INITS, "prompt")


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import PromptTuningConfig

    config = PromptTuningConfig(num_virtual_tokens=spec.num_virtual_tokens,
                                prompt_tuning_init=spec.init.upper())
    return attach_peft(model, config, ctx, "prompt")


METHOD = Method(name="prompt", category="additive", spec=Spec, apply=apply, engine="peft",
                peft_native=True, prompt_learning=True, families=("encoder",),
                summary="prompt tuning: trained virtual-token embeddings before the input")
