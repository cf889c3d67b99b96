"""Fault injection for tests: a ``fault`` method that fails on demand, the real way.

Not registered unless ``enable_faults()`` is called (or ``AUTOPEFT_FAULTS=1`` is set in
a trial process), so users never see it. Kinds: ``raise`` (a RuntimeError), ``memory``
(a real MemoryError from an impossible allocation), ``nan`` (weights set to NaN, so the
loss really becomes NaN), ``explode`` (trained weights scaled up: the loss really explodes),
``segfault`` (the process dies by SIGSEGV), ``sleep`` (slow
steps, for budget and interrupt tests).
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

FAULTS = ("raise", "memory", "nan", "explode", "segfault", "sleep", "none")


@dataclass
class Spec:
    kind: str = "raise"
    at_step: int = 0  # the optimiser step (0-based) at which it strikes
    seconds: float = 0.5  # for "sleep": per step


class _Fault:
    def __init__(self, model: Any, spec: Spec):
        self.model, self.spec = model, spec

    def before_optimizer_step(self, step: int) -> None:
        kind = self.spec.kind
        if kind == "sleep":
            time.sleep(self.spec.seconds)
        if step != self.spec.at_step:
            return
        if kind == "raise":
            raise RuntimeError(f"injected fault at step {step}")
        if kind == "memory":
            bytearray(1 << 62)  # far beyond any machine: a real MemoryError
        if kind == "nan":
            import torch

            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
        if kind == "explode":  # trained weights x1e5: huge logits, a huge but finite loss
            import torch

            with torch.no_grad():
                for p in self.model.parameters():
                    if p.requires_grad:
                        p.mul_(1e5)
        if kind == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.train import register_step_hook

    for name, p in model.named_parameters():  # train the head so there is a step to take
        if any(name.startswith(h) for h in ctx.arch.head_names(model)):
            p.requires_grad_(True)
    register_step_hook(model, _Fault(model, spec))
    return model


def enable_faults() -> None:
    from autopeft.methods.registry import METHODS, Method

    os.environ["AUTOPEFT_FAULTS"] = "1"  # trial processes started from here register it too
    METHODS["fault"] = Method(name="fault", category="baseline", spec=Spec, apply=apply,
                              summary="test-only: fails on demand")
