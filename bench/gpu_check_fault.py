"""The GPU check's faults, registered as a plugin (``AUTOPEFT_PLUGINS=gpu_check_fault``) by
``bench/gpu_check.py``; not part of the package.

* ``device_assert``: the first optimiser step launches a kernel that indexes out of bounds
  on CUDA, a real device-side assert (it breaks the process's CUDA context). On the CPU it
  raises the error CUDA would (a stand-in).
* ``oom_fault``: the first optimiser step allocates 60% of the GPU, more than a worker
  sharing it with another may hold (``devices.claim_share``): an out-of-memory error in
  this worker's own share. On the CPU it raises ``torch.OutOfMemoryError`` (a stand-in).
"""
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


class _OutOfMemory(_Assert):
    def before_optimizer_step(self, step: int) -> None:
        import torch

        device = next(self.model.parameters()).device
        if device.type != "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory (raised on the CPU, as CUDA would)")
        total = torch.cuda.get_device_properties(device).total_memory
        torch.empty(int(0.6 * total), dtype=torch.uint8, device=device)


def _trains_its_head(model: Any, ctx: Any) -> None:
    for name, p in model.named_parameters():  # train the head so there is a step to take
        if any(name.startswith(h) for h in ctx.arch.head_names(model)):
            p.requires_grad_(True)


def apply_assert(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.contract import register_step_hook

    _trains_its_head(model, ctx)
    register_step_hook(model, _Assert(model))
    return model


def apply_oom(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.contract import register_step_hook

    _trains_its_head(model, ctx)
    register_step_hook(model, _OutOfMemory(model))
    return model


def _register() -> None:
    from autopeft.methods.registry import METHODS, Method, register

    if "device_assert" not in METHODS:
        register(Method(name="device_assert", category="baseline", spec=Spec, apply=apply_assert,
                        summary="GPU check only: a device-side assert at the first step"))
    if "oom_fault" not in METHODS:
        register(Method(name="oom_fault", category="baseline", spec=Spec, apply=apply_oom,
                        summary="GPU check only: more than its share of the GPU at the first step"))


_register()
