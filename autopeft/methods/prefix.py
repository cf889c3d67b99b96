"""Prefix tuning (Li & Liang, 2021) through peft: trained virtual keys and values
prepended to every attention layer.

Not per-layer (peft puts a prefix in every layer), so no ``layers``. Sequence
classification needs the shim in ``_peft_compat`` with transformers >= 5.24; ``apply``
installs it. Every family's language model trains with it (T5 for translation too); T5's
sequence-classification model does not (``no_classification``).

With ``prefix_projection`` the prefix is an embedding through an MLP while it trains; Li &
Liang keep only the prefix values it produces (``num_layers * 2 * tokens * hidden``), so the
stored count (the search's parameter objective) counts those and not the MLP; the trained
count keeps the MLP (``_common.count_stored_as``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.errors import UserError
from autopeft.methods._common import attach_peft, count_stored_as, positive_int
from autopeft.methods.registry import Method


@dataclass
class Spec:
    num_virtual_tokens: int = field(default=10, metadata={
        "help": "prefix length: virtual keys/values per layer (Li & Liang: 10 table-to-text, "
                "200 summarisation)"})
    prefix_projection: bool = field(default=False, metadata={
        "help": "train the prefix through an MLP, Li & Liang's stabiliser (stored: the prefix "
                "values only)"})
    encoder_hidden_size: int | None = field(default=None, metadata={
        "help": "width of that MLP in units (None: the model's hidden size)"})

    def __post_init__(self) -> None:
        positive_int("num_virtual_tokens", self.num_virtual_tokens, "prefix")
        if not isinstance(self.prefix_projection, bool):
            raise UserError(f"prefix: prefix_projection must be true or false, got "
                            f"{self.prefix_projection!r}")
        if self.encoder_hidden_size is not None:
            positive_int("encoder_hidden_size", self.encoder_hidden_size, "prefix")


def peft_config(spec: Spec, ctx: Any) -> Any:
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(num_virtual_tokens=spec.num_virtual_tokens,
                              prefix_projection=spec.prefix_projection,
                              encoder_hidden_size=spec.encoder_hidden_size or ctx.hidden_size)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.methods import _peft_compat

    _peft_compat.install()
    model = attach_peft(model, peft_config(spec, ctx), ctx, "prefix")
    _peft_compat.read_only_cache_layers(model)
    if spec.prefix_projection:
        for encoder in model.prompt_encoder.values():
            values = spec.num_virtual_tokens * encoder.transform[-1].out_features
            count_stored_as(model, encoder.embedding.weight, values)
            for param in encoder.transform.parameters():
                count_stored_as(model, param, 0)
    return model


METHOD = Method(name="prefix", category="additive", spec=Spec, apply=apply, engine="peft",
                peft_native=True, prompt_learning=True,
                no_classification=(("encoder-decoder", "T5's classification model rejects the "
                                    "longer key length: its position bias covers the query "
                                    "length only"),),
                summary="prefix tuning: trained keys and values prepended in every layer")
