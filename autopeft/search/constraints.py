"""Limits on a candidate (``--max-memory``, ``--max-params``) and what we know before training.

Before a trial trains, the candidate is built on a *meta-device* skeleton of the base model
(shapes only, no weights, well under a second), which gives

* its parameter count, exactly (the same counting as after training: ``trainable_params``
  is the objective, what a user stores, ``build.count_stored``; ``trained_params`` what
  trains, ``build.count_trainable``);
* a memory estimate: the static part of a training step, ``weights + gradients + AdamW's
  two moments`` (bytes of every parameter, plus three times the bytes of the trainable
  ones). Activations are left out, so it is a lower bound of the measured peak (on CPU the
  measured peak is exactly this plus the saved activations, see ``autopeft/memory.py``).

A candidate whose exact count or memory lower bound already breaks a limit is certainly
infeasible: it is recorded and skipped without training. Others train, and the measured
peak is checked afterwards. Constraint values follow Optuna's rule (<= 0 is feasible):
``value / limit - 1``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from autopeft.errors import UserError

_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
               "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
ADAMW_STATE_FACTOR = 2  # AdamW keeps two moments per trainable parameter


def parse_size(text: str | int | float) -> int:
    """Bytes in ``16GB`` (10^9), ``16GiB`` or ``16G`` (2^30), ``512MB``, ``1.5TB`` or a bare number."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS or float(m.group(1)) <= 0:
        raise UserError(f"cannot read the memory size {text!r}; use e.g. 16GB, 12GiB or 800MB")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_params(text: str | int | float, base_params: int) -> int:
    """A parameter limit: ``1%`` (of the base model's parameters), ``2M``, ``500k`` or ``100000``."""
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(%|[kmbg]?)", s)
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"cannot read the parameter limit {text!r}; use e.g. 1%, 2M, 500k or 100000")
    if m.group(2) == "%":
        return max(1, int(float(m.group(1)) / 100 * base_params))
    return int(float(m.group(1)) * _COUNT_UNITS[m.group(2)])


@dataclass(frozen=True)
class Limits:
    """Resolved limits (None: no limit)."""

    max_params: int | None = None
    max_memory_bytes: int | None = None

    @classmethod
    def parse(cls, max_params: Any, max_memory: Any, base_params: int) -> Limits:
        return cls(None if max_params in (None, "") else parse_params(max_params, base_params),
                   None if max_memory in (None, "") else parse_size(max_memory))

    def values(self, params: float, memory: float) -> dict[str, float]:
        """Optuna constraint values (<= 0 feasible), one per limit given."""
        out = {}
        if self.max_params is not None:
            out["max_params"] = params / self.max_params - 1.0
        if self.max_memory_bytes is not None:
            out["max_memory"] = memory / self.max_memory_bytes - 1.0
        return out

    def violations(self, params: float, memory: float, memory_word: str = "memory") -> list[str]:
        """A sentence per broken limit (empty: feasible)."""
        out = []
        if self.max_params is not None and params > self.max_params:
            out.append(f"{int(params):,} trainable parameters > --max-params {self.max_params:,}")
        if self.max_memory_bytes is not None and memory > self.max_memory_bytes:
            out.append(f"{memory_word} {int(memory):,} bytes > --max-memory {self.max_memory_bytes:,}")
        return out


@dataclass(frozen=True)
class Prediction:
    trainable_params: int  # the parameter objective: stored parameters (``count_stored``)
    total_params: int
    memory_bytes: int  # static part of a training step: a lower bound of the peak
    trained_params: int = 0  # parameters that train (``count_trainable``)


def static_memory(model: Any, bf16_frozen: bool = False) -> int:
    """weights + gradients + AdamW state, in bytes (shared tensors once). ``bf16_frozen``:
    the frozen fp32 weights train in bf16 (``train.frozen_in_bf16``), 2 bytes each."""
    import torch

    from autopeft.build import trainable_parameters

    seen, weights = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            size = 2 if bf16_frozen and not p.requires_grad and p.dtype == torch.float32 \
                else p.element_size()
            weights += p.numel() * size
    trained = sum(p.numel() * p.element_size() for _, p in trainable_parameters(model))
    return int(weights + (1 + ADAMW_STATE_FACTOR) * trained)


def predict(skeleton: Any, real_base: Any, candidate: Any, total_steps: int,
            bf16_frozen: bool = False) -> Prediction:
    """Build ``candidate`` on the meta skeleton (or, if a method cannot build there, on a
    real copy) and count. Raises what ``build`` raises for a candidate that cannot build."""
    from autopeft.build import build, count_stored, count_total, count_trainable

    try:
        model = build(skeleton, candidate, total_steps)
    except UserError:
        raise
    except Exception:  # a method that needs real weights to build (e.g. data-dependent masks)
        model = build(real_base, candidate, total_steps)
    try:
        return Prediction(count_stored(model), count_total(model),
                          static_memory(model, bf16_frozen),
                          count_trainable(model))
    finally:
        del model
