"""Peak training memory of one trial, in bytes: the third objective.

* CUDA: the allocator's own peak (``torch.cuda.max_memory_allocated``), reset when the
  trial starts. Weights, gradients, optimiser state, activations and workspace: all of it.
  What the process held before (a worker's base kept on the device, another trial's
  leftovers) is not the trial's: the peak counts from the allocation at the start, plus
  the trial model's own tensors. Scoring (the rungs, the end) is measured apart
  (``scoring()``): with a large eval batch and fp32 logits it can dwarf a LoRA step, and
  the objective is training memory.
* CPU: process RSS is shared by every trial and never goes down, so it cannot tell two
  candidates apart. Instead we add up the tensors a training step really holds:
  ``weights + gradients + optimiser state + activations saved for backward``, the last
  measured on every step with autograd's saved-tensor hooks (each storage counted once,
  parameter storages not counted again) and the maximum over steps kept. It leaves out
  short-lived temporaries, so it is a lower bound of the true peak, but it is measured on
  the real step and moves with the candidate: full fine-tuning > LoRA. With gradient
  checkpointing, activations inside checkpointed layers are recomputed, not saved, and do
  not show here (the layer inputs checkpointing keeps are not counted either).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

CUDA_METHOD = "cuda max_memory_allocated"
CPU_METHOD = "tensor accounting: weights + grads + optimizer state + saved activations"


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


@contextlib.contextmanager
def build_peak(device: torch.device) -> Iterator[list[int]]:
    """What building a trial's model allocates at its peak on CUDA, above what the process
    held before (``out[0]`` after the block; 0 on CPU): the copy of the kept base, casts,
    quantisation. A trial's training peak is counted from after the build, so without this
    the memory a worker needs (``--trials-per-gpu``) would leave it out."""
    out = [0]
    if device.type != "cuda":
        yield out
        return
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    yield out
    torch.cuda.synchronize(device)
    out[0] = int(max(0, torch.cuda.max_memory_allocated(device) - before))


class PeakMemory:
    """Measure one trial. Use ``step()`` around each forward+backward, ``bytes()`` at the end."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.cuda = device.type == "cuda"
        self.method = CUDA_METHOD if self.cuda else CPU_METHOD
        self.max_activations = 0
        self._train_peak = self._score_peak = self._longest_peak = 0
        self._baseline = self._model_bytes = 0
        self._paused = False
        if self.cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self._baseline = torch.cuda.memory_allocated(device)
            self._model_bytes = sum(t.numel() * t.element_size() for t in
                                    [*model.parameters(), *model.buffers()] if t.is_cuda)
        self._param_keys = {_storage_key(p) for p in model.parameters()}

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        if self.cuda:
            yield
            return
        seen: set[tuple[int, int]] = set()
        total = 0

        def pack(t: torch.Tensor) -> Any:
            nonlocal total
            key = _storage_key(t)
            if key not in seen and key not in self._param_keys:
                seen.add(key)
                total += key[1]
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
        self.max_activations = max(self.max_activations, total)

    @contextlib.contextmanager
    def longest(self) -> Iterator[None]:
        """A forward and backward on the schedule's longest batch before the first step
        (``train``): the peak of a run is then that batch's whatever the run's length, so a
        trial stopped at a rung never reads cheaper than its full run. Why: the peak was the
        maximum over the batches a run happened to see; on a sentence-pair task the same
        kind of candidate read 537 MiB after 32 steps and 795 MiB after 96 (issue 28), and the
        short trial "dominated" the long one by memory. On CUDA no optimiser state exists yet
        here, so ``bytes`` adds the state's size to this peak; on CPU its saved activations
        count as any step's do."""
        if not self.cuda:
            with self.step():
                yield
            return
        torch.cuda.synchronize(self.device)
        self._train_peak = max(self._train_peak, torch.cuda.max_memory_allocated(self.device))
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            yield
        finally:
            torch.cuda.synchronize(self.device)
            self._longest_peak = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def _state_bytes(self) -> int:
        return sum(v.numel() * v.element_size() for s in self.optimizer.state.values()
                   for v in s.values() if torch.is_tensor(v))

    @contextlib.contextmanager
    def scoring(self) -> Iterator[None]:
        """Scoring, measured apart (``pause`` before it, ``resume`` after). On CPU nothing to
        do (scoring saves no activations)."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def pause(self) -> None:
        """Stop measuring training (CUDA): the training peak so far is kept and the
        allocator's peak reset; what runs until ``resume`` (scoring, a Trainer's evaluation)
        is measured as scoring. Used as ``scoring()``, or from a loop that is not ours."""
        if self.cuda and not self._paused:
            self._train_peak = max(self._train_peak, torch.cuda.max_memory_allocated(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)
            self._paused = True

    def resume(self) -> None:
        """Measure training again: the peak since ``pause`` is scoring's, then reset."""
        if self.cuda and self._paused:
            self._score_peak = max(self._score_peak, torch.cuda.max_memory_allocated(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)
            self._paused = False

    def _own(self, peak: int) -> int:
        return int(max(0, peak - self._baseline) + self._model_bytes)

    def scoring_bytes(self) -> int | None:
        """Scoring's peak (CUDA), counted as ``bytes()``; None where none was measured."""
        return self._own(self._score_peak) if self.cuda and self._score_peak else None

    def bytes(self) -> int:
        """The training peak (scoring left out)."""
        if self.cuda:
            now = 0 if self._paused else torch.cuda.max_memory_allocated(self.device)
            longest = self._longest_peak + self._state_bytes() if self._longest_peak else 0
            return self._own(max(self._train_peak, now, longest))
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        grads = sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)
        return int(weights + grads + self._state_bytes() + self.max_activations)
