"""The GPU check's fault: a ``device_assert`` method whose first optimiser step launches a
kernel that indexes out of bounds on CUDA, a real device-side assert (it breaks the
process's CUDA context). On the CPU it raises the error CUDA would. Registered as a plugin
(``AUTOPEFT_PLUGINS=gpu_check_fault``) by ``bench/gpu_check.py``; not part of the package."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Spec:
    pass


class _Assert:
    def __init__(self, model: Any):
        self.model = model

    def before_optimizer_step(self, step: int) -> None:
        import torch

        device = next(self.model.parameters()).device
        if device.type != "cuda":
            raise RuntimeError("CUDA error: device-side assert triggered (raised on the CPU, "
                               "as CUDA would)")
        x = torch.zeros(2, device=device)
        x[torch.tensor([7], device=device)].sum().item()  # out of bounds: the assert fires


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.contract import register_step_hook

    for name, p in model.named_parameters():  # train the head so there is a step to take
        if any(name.startswith(h) for h in ctx.arch.head_names(model)):
            p.requires_grad_(True)
    register_step_hook(model, _Assert(model))
    return model


def _register() -> None:
    from autopeft.methods.registry import METHODS, Method, register

    if "device_assert" not in METHODS:
        register(Method(name="device_assert", category="baseline", spec=Spec, apply=apply,
                        summary="GPU check only: a device-side assert at the first step"))


_register()
