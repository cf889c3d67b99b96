"""A candidate: what one trial trains, as plain serialisable data.

Stored with every trial (``trial.user_attrs["candidate"]``) so any trial can be rebuilt,
re-trained and exported from the database alone. No torch, no optuna here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class MethodSpec:
    """One PEFT method and its hyper-parameters (the fields of that method's spec)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidate:
    """One or more methods applied together, plus how to train them."""

    methods: list[MethodSpec]
    learning_rate: float = 1e-4
    seed: int = 0

    @property
    def label(self) -> str:
        """Short name, e.g. ``lora+bitfit``."""
        return "+".join(m.name for m in self.methods)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        methods = [MethodSpec(m["name"], dict(m.get("params", {}))) for m in data["methods"]]
        return cls(methods=methods, learning_rate=float(data["learning_rate"]),
                   seed=int(data.get("seed", 0)))
