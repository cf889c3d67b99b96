"""Full fine-tuning: every weight trains. The baseline every PEFT method is judged against."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.methods.registry import Method


@dataclass
class Spec:
    pass


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    for param in model.parameters():
        param.requires_grad_(True)
    return model


METHOD = Method(name="full", category="baseline", spec=Spec, apply=apply, exclusive=True,
                summary="full fine-tuning: all weights train (the baseline)")
