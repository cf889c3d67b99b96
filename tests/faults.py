"""Fault injection for tests: a ``fault`` method that fails on demand, the real way.

Test code, so not in the package: ``enable_faults()`` registers it through the registry's
public ``register`` and names this module in ``AUTOPEFT_PLUGINS`` (with this folder on
``PYTHONPATH``), so trial and worker processes started from here register it too. Kinds: ``raise`` (a RuntimeError), ``memory``
(a real MemoryError from an impossible allocation), ``nan`` (weights set to NaN, so the
loss really becomes NaN), ``explode`` (trained weights scaled up: the loss really explodes),
``segfault`` (the process dies by SIGSEGV), ``sleep`` (slow
steps, for budget and interrupt tests), ``cuda`` (the error a device-side assert raises,
which leaves a process's CUDA context broken).
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

@dataclass
class Spec:
    kind: str = field(default="raise", metadata={
        "help": "raise | memory | nan | explode | segfault | sleep | cuda"})
    at_step: int = field(default=0, metadata={
        "help": "the optimiser step (0-based) at which it strikes"})
    seconds: float = field(default=0.5, metadata={"help": 'for "sleep": seconds per step'})


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
        if kind == "cuda":
            raise RuntimeError("CUDA error: device-side assert triggered\nCUDA kernel errors "
                               "might be asynchronously reported at some other API call")
        if kind == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.contract import register_step_hook

    for name, p in model.named_parameters():  # train the head so there is a step to take
        if any(name.startswith(h) for h in ctx.arch.head_names(model)):
            p.requires_grad_(True)
    register_step_hook(model, _Fault(model, spec))
    return model


METHOD = None  # set on registration


def _register() -> None:
    global METHOD
    from autopeft.methods.registry import METHODS, Method, register

    if "fault" not in METHODS:
        METHOD = register(Method(name="fault", category="baseline", spec=Spec, apply=apply,
                                 summary="test-only: fails on demand"))


def enable_faults() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["AUTOPEFT_PLUGINS"] = "faults"  # trial processes started from here register it
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [here, *paths] if p)
    _register()


if os.environ.get("AUTOPEFT_PLUGINS", "").split(",").count("faults"):
    _register()  # imported as a plugin by the registry of a trial or worker process
