"""P-tuning (Liu et al., 2021, "GPT understands, too") through peft: virtual-token
embeddings produced by a small trained prompt encoder and prepended to the input.

``encoder_type``: ``LSTM`` (the default, the paper's encoder: a two-layer bidirectional
LSTM followed by a two-layer ReLU MLP, peft's ``encoder_reparameterization_type="LSTM"``)
or ``MLP`` (peft's three-layer ReLU MLP, fewer parameters). ``encoder_hidden_size`` is the
encoder's width (default: the model's hidden size). After training only the virtual-token
embeddings the encoder produces are needed (peft saves those).

Same model kinds as prompt tuning, for the same reasons (``prompt.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.methods._common import attach_peft, one_of, positive_int
from autopeft.methods.prompt import NO_CLASSIFICATION, check_task
from autopeft.methods.registry import Method


@dataclass
class Spec:
    num_virtual_tokens: int = field(default=20, metadata={
        "help": "virtual tokens before the input, produced by the prompt encoder"})
    encoder_hidden_size: int | None = field(default=None, metadata={
        "help": "the prompt encoder's width in units (None: the model's hidden size)"})
    encoder_type: str = field(default="LSTM", metadata={
        "help": "LSTM: the paper's bidirectional LSTM + MLP | MLP: peft's 3-layer MLP (smaller)"})

    def __post_init__(self) -> None:
        positive_int("num_virtual_tokens", self.num_virtual_tokens, "ptuning")
        if self.encoder_hidden_size is not None:
            positive_int("encoder_hidden_size", self.encoder_hidden_size, "ptuning")
        one_of("encoder_type", self.encoder_type, ("LSTM", "MLP"), "ptuning")


def peft_config(spec: Spec, ctx: Any) -> Any:
    from peft import PromptEncoderConfig

    return PromptEncoderConfig(num_virtual_tokens=spec.num_virtual_tokens,
                               encoder_hidden_size=spec.encoder_hidden_size or ctx.hidden_size,
                               encoder_reparameterization_type=spec.encoder_type)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    check_task("ptuning", ctx)
    return attach_peft(model, peft_config(spec, ctx), ctx, "ptuning")


METHOD = Method(name="ptuning", category="additive", spec=Spec, apply=apply, engine="peft",
                peft_native=True, prompt_learning=True, lengthens_input=True,
                no_classification=NO_CLASSIFICATION,
                summary="P-tuning: virtual-token embeddings from a trained LSTM (or MLP) encoder")
