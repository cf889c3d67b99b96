"""Where a process trains on a machine with GPUs: which GPUs it may use, how worker processes
share them, which precision a device runs natively, and how a sharing process is capped.

* The GPUs are the entries of the inherited ``CUDA_VISIBLE_DEVICES`` (indices, UUIDs
  ``GPU-...``, MIG ids ``MIG-...``: a SLURM job's ``4,5,6,7`` stays inside the job), or
  ``0..count-1`` where it is unset. A worker gets one entry as its own
  ``CUDA_VISIBLE_DEVICES``, so inside it the GPU is ``cuda`` (``cuda:0``).
* Several workers may share a GPU (``--trials-per-gpu``): each gets ``1/k`` of the device's
  usable memory less its own CUDA context (``share_fraction``;
  ``torch.cuda.set_per_process_memory_fraction`` in the process that trains, read from
  ``AUTOPEFT_GPU_SHARE``), so an out-of-memory error is its own trial's, never a
  neighbour's; CPU threads are divided among the workers.
* Without GPUs, ``n`` workers on ``C`` cores get ``C // n`` torch threads each
  (``place``): at torch's default each would use every core, and ``n`` processes of ``C``
  threads on ``C`` cores slow each other far more than ``n`` (``docs/scale-out.md``).

A leaf: torch is imported only inside the functions that need it.
"""
from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from autopeft.errors import UserError

VISIBLE = "CUDA_VISIBLE_DEVICES"
SHARE_ENV = "AUTOPEFT_GPU_SHARE"  # this process's share of its GPU's memory, 0 < share <= 1
MAX_AUTO_TRIALS_PER_GPU = 8  # beyond this, CPU threads and the data pipeline run short
USABLE_FRACTION = 0.9  # of a GPU's memory: the CUDA context, the allocator's slack
# A process's CUDA context (and cuBLAS' workspace), outside what the allocator counts: about
# 500 MiB with torch 2.x on a Hopper GPU (bench/gpu_check.py measures it). Each process
# sharing a GPU holds its own, so a share's cap leaves it out.
CUDA_CONTEXT_BYTES = 768 * 2**20


@dataclass(frozen=True)
class Slot:
    """One worker process's place: its GPU (a ``CUDA_VISIBLE_DEVICES`` entry; None: CPU),
    its share of that GPU's memory and its CPU threads (0: leave torch's default)."""

    device: str | None
    share: float = 1.0
    threads: int = 0

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment of a worker in this slot (started from ``base``)."""
        env = dict(base)
        if self.device is not None:
            env[VISIBLE] = self.device
            env[SHARE_ENV] = repr(self.share)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env


def visible_devices(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may give its workers, as ``CUDA_VISIBLE_DEVICES`` entries.

    The inherited list is kept as written (CUDA reads it up to its first empty or negative
    entry), cut to the number of devices CUDA reports; unset: ``0..count-1``."""
    import torch

    env = os.environ if env is None else env
    count = torch.cuda.device_count()
    value = env.get(VISIBLE)
    if value is None:
        return [str(i) for i in range(count)]
    entries: list[str] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return entries[:count]


def device_index(device: str) -> int:
    """The index in this process's visible list of a ``cuda``/``cuda:N``/``auto`` setting."""
    return int(device.split(":")[1]) if device.startswith("cuda:") else 0


def cpu_cores() -> int:
    """The cores this process may run on: its affinity (a container's or a job's cpuset),
    else every core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def place(n: int, devices: list[str], trials_per_gpu: int, first: int = 0,
          cpus: int | None = None) -> list[Slot]:
    """Slots for ``n`` processes; slot 0 is the search itself, on ``devices[first]``.

    GPUs are dealt round-robin (the search's first), so ``k`` processes share a GPU only when
    there are more processes than GPUs, and never more than ``trials_per_gpu``; each gets
    ``1 / (processes on its GPU)`` of its memory. Every slot gets ``cpus / n`` threads (at
    least 1; ``cpus``: ``cpu_cores()``), so ``n`` torch processes do not oversubscribe the
    cores; one process alone keeps torch's default (threads 0)."""
    threads = max(1, (cpus or cpu_cores()) // n) if n > 1 else 0
    if not devices:
        return [Slot(None, 1.0, threads)] * n
    if n > trials_per_gpu * len(devices):
        raise UserError(f"{n} workers on {len(devices)} GPU(s) would put more than "
                        f"--trials-per-gpu {trials_per_gpu} on a GPU; raise --trials-per-gpu or "
                        "lower --workers")
    order = devices[first:] + devices[:first]
    assigned = [order[i % len(order)] for i in range(n)]
    per_gpu = Counter(assigned)
    return [Slot(d, 1.0 / per_gpu[d], threads) for d in assigned]


def fits(per_trial_bytes: int, device_bytes: int, k: int) -> int:
    """How many trials of ``per_trial_bytes`` fit on a device (``USABLE_FRACTION`` of it)
    when asked for ``k``: ``k`` itself when they fit, else the most that do (at least 1)."""
    most = max(1, int(USABLE_FRACTION * device_bytes) // max(1, per_trial_bytes))
    return min(k, most)


def auto_trials_per_gpu(per_trial_bytes: int, device_bytes: int) -> int:
    """``--trials-per-gpu auto``: as many as fit, at most ``MAX_AUTO_TRIALS_PER_GPU``."""
    return fits(per_trial_bytes, device_bytes, MAX_AUTO_TRIALS_PER_GPU)


def device_memory(entry: str) -> int:
    """Total memory of the GPU ``entry`` (a ``CUDA_VISIBLE_DEVICES`` entry: a MIG instance has
    its own size), in bytes. Asked in a short child process: asking here would create a CUDA
    context in the search process, which then holds GPU memory for the whole search."""
    import subprocess
    import sys

    code = "import torch; print(torch.cuda.get_device_properties(0).total_memory)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, VISIBLE: entry}, timeout=120, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def own_slot(slot: Slot) -> Iterator[None]:
    """This process (the search) in slot 0: its share for the trial child it starts (which
    inherits the environment) and for in-process trials, and its threads; restored after."""
    import torch

    before, threads = os.environ.get(SHARE_ENV), torch.get_num_threads()
    if slot.device is not None and slot.share < 1:
        os.environ[SHARE_ENV] = repr(slot.share)
    if slot.threads:
        torch.set_num_threads(slot.threads)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SHARE_ENV, None)
        else:
            os.environ[SHARE_ENV] = before
        torch.set_num_threads(threads)


def share_fraction(share: float, total: int, context: int = CUDA_CONTEXT_BYTES) -> float:
    """The allocator's cap, as a fraction of a GPU of ``total`` bytes, for a process with
    ``share`` of it: its part of the usable memory (``USABLE_FRACTION``) less its own CUDA
    context, which the allocator does not see. So ``k`` processes of share ``1/k`` hold at
    most the usable memory together, contexts included, and none can take a neighbour's."""
    return max(0.01, (share * USABLE_FRACTION * total - context) / total)


def claim_share(device: Any) -> float:
    """Cap this process's allocations on ``device`` at its share (``AUTOPEFT_GPU_SHARE``,
    ``share_fraction``), so that a trial sharing a GPU runs out of memory in its own share,
    never in a neighbour's. Returns the allocator fraction set (1.0: the whole device,
    nothing set)."""
    share = float(os.environ.get(SHARE_ENV) or 1.0)
    if getattr(device, "type", None) == "cuda" and 0 < share < 1:
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
        fraction = share_fraction(share, torch.cuda.get_device_properties(index).total_memory)
        torch.cuda.set_per_process_memory_fraction(fraction, device)
        return fraction
    return 1.0


def worker_device(study_device: str, override: str | None = None) -> str:
    """A joining worker's training device: ``override`` (its ``--device``) if given; else
    the study's, where a ``cuda:N`` this process cannot see (a worker holds one GPU, its own
    ``cuda``) becomes ``cuda``."""
    if override:
        return override
    if study_device.startswith("cuda:"):
        import torch

        if device_index(study_device) >= torch.cuda.device_count():
            return "cuda"
    return study_device


def bf16_native(device: Any) -> bool:
    """Whether ``device`` computes in bf16 natively: CUDA compute capability 8.0 or newer
    (Ampere, Hopper, ...). ``torch.cuda.is_bf16_supported()`` alone also says yes where bf16
    is emulated (V100, T4: slower than fp32) and asks the current device, not this one."""
    import torch

    if getattr(device, "type", None) != "cuda" or not torch.cuda.is_available():
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if torch.cuda.get_device_capability(index) < (8, 0):
        return False
    with torch.cuda.device(index):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch before 2.3: no including_emulation; capability decided
            return True


def cuda_broken(exc: BaseException) -> bool:
    """A CUDA error that leaves the process's CUDA context unusable (a device-side assert,
    an illegal address, a launch failure): every later kernel in this process fails too.
    Out of memory is not one of them."""
    import torch

    text = str(exc)
    if "out of memory" in text:
        return False
    accel = getattr(torch, "AcceleratorError", None)
    return (accel is not None and isinstance(exc, accel)) or any(
        s in text for s in ("CUDA error", "device-side assert", "illegal memory access",
                            "CUBLAS_STATUS", "cuDNN error", "unspecified launch failure"))
