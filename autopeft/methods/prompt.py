"""Prompt tuning (Lester et al., 2021) through peft: trained embeddings of virtual tokens
prepended to the input.

Lester et al. define it on T5 as a seq2seq model, and it runs on every family's language
model here (T5 for translation, GPT-2 / LLaMA for instruction tuning and MMLU; peft
prepends the tokens to a seq2seq model's encoder and decoder inputs). On a decoder the
logits of the virtual tokens come back too; the evaluators drop them
(``evaluation.token_logits``), and peft gives them label -100 in training. Not on two
classification models (``NO_CLASSIFICATION``): peft passes embeddings, not token ids, and
their heads need the ids to find the token they pool.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.methods._common import attach_peft, one_of, positive_int
from autopeft.methods.registry import Method, check_model_kind

INITS = ("random", "sample_vocab")

NO_CLASSIFICATION = (
    ("decoder", "its classification head pools the last non-pad token, found from the token "
                "ids; given embeddings it pools the last position, a pad under autopeft's right "
                "padding"),
    ("encoder-decoder", "T5's classification model pools the end-of-sequence token, found from "
                        "the token ids, and refuses embeddings"),
)


@dataclass
class Spec:
    num_virtual_tokens: int = field(default=20, metadata={
        "help": "virtual tokens before the input (Lester et al.: gains flatten beyond 20)"})
    init: str = field(default="random", metadata={
        "help": "random (peft's default) | sample_vocab: embeddings of random vocabulary tokens "
                "(the paper's)"})

    def __post_init__(self) -> None:
        positive_int("num_virtual_tokens", self.num_virtual_tokens, "prompt")
        one_of("init", self.init, INITS, "prompt")


def check_task(name: str, ctx: Any) -> None:
    """Refuse, with the reason, a model kind a virtual-token method cannot train."""
    from autopeft.methods import get_method

    check_model_kind(get_method(name), ctx.arch.family, ctx.peft_task_type == "SEQ_CLS")


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import PromptTuningConfig

    check_task("prompt", ctx)
    config = PromptTuningConfig(num_virtual_tokens=spec.num_virtual_tokens,
                                prompt_tuning_init=spec.init.upper())
    return attach_peft(model, config, ctx, "prompt")


METHOD = Method(name="prompt", category="additive", spec=Spec, apply=apply, engine="peft",
                peft_native=True, prompt_learning=True, lengthens_input=True,
                no_classification=NO_CLASSIFICATION,
                summary="prompt tuning: trained virtual-token embeddings before the input")
