"""Prefix tuning for sequence classification with transformers >= 5.24 (peft 0.21.2).

The cause: peft's ``PeftModelForSequenceClassification._prefix_tuning_forward`` looks for a
``past_key_values`` parameter in the forward signature of the task model, then of its
backbone (``bert``, ``model``, ``transformer``), and raises "Model does not support past
key values which are required for prefix tuning." when neither has one. transformers 5.24
renamed that parameter to ``cache`` (the old name is still accepted through
``deprecate_kwarg``, but is no longer in the signature), so the check fails although the
model would take the prefix. The virtual keys/values peft builds (a ``DynamicCache``) are
fine; only the hand-off is broken.

The fix: where the backbone's forward takes ``cache`` and the task model's forward does
not take ``past_key_values``, call the task model itself with ``cache=<prefix>``: its own
head then pools (e.g. the last non-pad token of a decoder, which peft's fallback path gets
wrong) and computes the loss. Anything else goes to peft's original code.

The prefix cache is also made read-only (each layer's ``update`` returns prefix + new keys
without storing them): an encoder never needs them stored, and gradient checkpointing
re-runs each layer's forward, which with a growing cache would append the keys twice.
transformers drops the cache of a checkpointed layer unless the layer declares it only
reads it (``_can_checkpoint_with_cache``): ``read_only_cache_layers`` says so for the
layers of a prefix-tuned model, which is true with this read-only cache.

``install()`` patches the class once per process; ``build`` calls it for every method
that uses prefix tuning, so ``PeftModel.from_pretrained`` works for our exports in any
process that imported and called it (``autopeft.load`` does through ``build``).
"""
from __future__ import annotations

import inspect
from typing import Any

_ORIGINAL = "_autopeft_original_prefix_forward"


def _takes(fn: Any, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def _prefix_tuning_forward(self: Any, input_ids: Any = None, attention_mask: Any = None,
                           inputs_embeds: Any = None, labels: Any = None,
                           output_attentions: Any = None, output_hidden_states: Any = None,
                           return_dict: Any = None, **kwargs: Any) -> Any:
    backbone = self.base_model.get_submodule(self.transformer_backbone_name)
    if _takes(self.base_model.forward, "past_key_values") or not _takes(backbone.forward, "cache"):
        original = getattr(type(self), _ORIGINAL)
        return original(self, input_ids=input_ids, attention_mask=attention_mask,
                        inputs_embeds=inputs_embeds, labels=labels,
                        output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states, return_dict=return_dict,
                        **kwargs)
    from peft.peft_model import _get_batch_size

    cache = _read_only(self.get_prompt(_get_batch_size(input_ids, inputs_embeds)))
    extra = {k: v for k, v in (("output_attentions", output_attentions),
                               ("output_hidden_states", output_hidden_states)) if v is not None}
    return self.base_model(input_ids=input_ids, attention_mask=attention_mask,
                           inputs_embeds=inputs_embeds, labels=labels, cache=cache,
                           **extra, **kwargs)


def _read_only(cache: Any) -> Any:
    import torch

    def keep(layer: Any) -> Any:
        def update(key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            return (torch.cat([layer.keys, key_states], dim=-2),
                    torch.cat([layer.values, value_states], dim=-2))
        return update

    for layer in getattr(cache, "self_attention_cache", cache).layers:
        layer.update = keep(layer)
    return cache


def install() -> None:
    """Patch peft's sequence-classification prefix forward (idempotent)."""
    from peft import PeftModelForSequenceClassification as Cls

    if not hasattr(Cls, _ORIGINAL):
        setattr(Cls, _ORIGINAL, Cls._prefix_tuning_forward)
        Cls._prefix_tuning_forward = _prefix_tuning_forward


def read_only_cache_layers(model: Any) -> None:
    """Let checkpointed layers keep the (read-only) prefix cache; see the module docstring."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module._can_checkpoint_with_cache = True
