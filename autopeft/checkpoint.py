"""A training run's checkpoint: all it takes to go on exactly where the run stopped, so a
run stopped at a rung and continued (in this process or a fresh one) ends bit for bit where
the uninterrupted run ends (``tests/test_checkpoint.py``).

What a ``Checkpoint`` holds, and why each part:

* ``tensors``: every trainable tensor (``contract.trainable_parameters``) and every buffer
  (what methods register, e.g. VeRA's shared matrices): the model is rebuilt from the
  candidate (same seed, same frozen weights), then these are copied in;
* ``optimizer`` and ``scheduler``: AdamW's moments and step counts, the schedule's position;
* ``rng``: torch's CPU generator (and CUDA's where present), Python's ``random`` and
  NumPy's global ones: dropout and Child-Tuning F's random masks draw from them;
* ``position``: (epoch, index) of the next micro-batch of ``train.micro_batches``, so the
  continued run draws exactly the next one (an optimiser step may span two epochs);
* ``hooks``: each step hook's own state (``contract.register_step_hook``: AdaLoRA's rank
  allocator, Child-Tuning D's masks); a hook that cannot give its state says so with
  ``can_continue = False`` and its runs are never checkpointed (they train from step 0);
* the loop's counters (``samples``, the last and first loss for the divergence check, the
  peak memory so far) and what identifies the run (``candidate``, ``settings``,
  ``schedule_steps``), checked before a run continues (``mismatch``), and the
  ``rung_scores`` reached, so a continued trial keeps them.

``save`` writes ``torch.save`` to a temporary file and renames it over the old one
(``os.replace``): a reader sees the old checkpoint or the new one, never half of one.
Where the files live is ``paths.checkpoints_dir``; when a run continues is the search's
decision (``search/continuation.py``); the loop that fills them is ``train.train``.
"""
from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from autopeft.contract import trainable_parameters

# Training settings that do not change what a run computes (a run may continue elsewhere).
NOT_IDENTIFYING = ("device", "eval_batch_size", "num_beams", "max_new_tokens")


@dataclass
class Checkpoint:
    step: int  # optimiser steps done
    schedule_steps: int  # the learning-rate schedule's length the run follows
    position: tuple[int, int]  # (epoch, index) of the next micro-batch
    samples: int  # training examples seen so far
    loss: float  # the last micro-batch's loss
    first_loss: float | None  # the first one (divergence check)
    peak_memory: int  # bytes, the peak so far
    tensors: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    hooks: list[Any]  # each step hook's state_dict() (None: it has none)
    candidate: dict[str, Any] = field(default_factory=dict)  # filled by runner.Bench.run
    settings: dict[str, Any] = field(default_factory=dict)
    rung_scores: dict[int, float] = field(default_factory=dict)

    def mismatch(self, candidate: dict[str, Any], settings: dict[str, Any],
                 schedule_steps: int) -> str | None:
        """Why this checkpoint cannot continue that run (None: it can)."""
        if self.candidate != candidate:
            return "it is of another candidate (or seed)"
        if self.schedule_steps != schedule_steps:
            return (f"it follows a {self.schedule_steps}-step schedule, not a "
                    f"{schedule_steps}-step one")
        if _identifying(self.settings) != _identifying(settings):
            return "it was trained with other training settings"
        return None

    def restore(self, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                hooks: Sequence[Any]) -> None:
        """Put the run's state back: tensors, optimiser, schedule, step hooks, and last the
        random generators (nothing may draw from them after this, before the next step)."""
        named = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        missing = sorted(set(self.tensors) - set(named))
        if missing:
            raise ValueError(f"the checkpoint has tensors this model lacks: {missing[:3]}")
        with torch.no_grad():
            for name, value in self.tensors.items():
                named[name].copy_(value)
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        for hook, state in zip(hooks, self.hooks):
            if state is not None:
                hook.load_state_dict(state)
        set_rng_state(self.rng)


def _identifying(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in NOT_IDENTIFYING}


def settings_dict(settings: Any) -> dict[str, Any]:
    """A ``TrainSettings`` as the checkpoint stores it."""
    return asdict(settings)


def continuable(hooks: Sequence[Any]) -> bool:
    """Whether every step hook can give and take back its state."""
    return all(getattr(h, "can_continue", True) for h in hooks)


def model_tensors(model: Any) -> dict[str, torch.Tensor]:
    """Copies (on the CPU) of every trainable tensor and every buffer, by name."""
    out = {name: p for name, p in trainable_parameters(model)}
    seen = {id(p) for p in out.values()}
    for name, b in model.named_buffers():
        if id(b) not in seen:
            seen.add(id(b))
            out[name] = b
    return {name: t.detach().to("cpu", copy=True) for name, t in out.items()}


def copied(state: Any) -> Any:
    """A deep copy of a state dict with its tensors on the CPU (training goes on after it)."""
    if torch.is_tensor(state):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: copied(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(copied(v) for v in state)
    return state


def hook_states(hooks: Sequence[Any]) -> list[Any]:
    return [copied(h.state_dict()) if hasattr(h, "state_dict") else None for h in hooks]


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(), "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(checkpoint: Checkpoint, path: str) -> None:
    """Write ``checkpoint`` to ``path`` atomically (a temporary file, then a rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(asdict(checkpoint), fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str, lazy: bool = False) -> Checkpoint:
    """The checkpoint at ``path`` (``lazy``: tensors memory-mapped, read only when used,
    for a cheap look at its step and identity). Raises ``OSError`` or ``ValueError`` if it
    is missing or unreadable."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=lazy)
    except OSError:
        raise
    except Exception as exc:  # truncated, not a checkpoint, another format
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from None
    try:
        data["position"] = tuple(data["position"])
        data["rung_scores"] = {int(k): float(v) for k, v in data.get("rung_scores", {}).items()}
        return Checkpoint(**data)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a checkpoint of this version ({exc})") from None
