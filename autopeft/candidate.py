"""A candidate: what one trial trains, as plain serialisable data.

Stored with every trial (``trial.user_attrs["candidate"]``) so any trial can be rebuilt,
re-trained and exported from the database alone. No torch, no optuna here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from autopeft.checks import at_least, check_types, known_keys, positive
from autopeft.errors import UserError


@dataclass
class MethodSpec:
    """One PEFT method and its hyper-parameters (the fields of that method's spec)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self)


@dataclass
class Candidate:
    """One or more methods applied together, plus how to train them."""

    methods: list[MethodSpec]
    learning_rate: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        positive(self, ["learning_rate"])
        at_least(self, 0, ["seed"])
        if not self.methods:
            raise UserError("methods must list at least one method")

    @property
    def label(self) -> str:
        """Short name, e.g. ``lora+bitfit``."""
        return "+".join(m.name for m in self.methods)

    @property
    def input_tokens(self) -> int:
        """Tokens its methods put before every input row (prompt tuning's and P-tuning's
        virtual tokens): what makes a step of it dearer than the probe's at the same rows
        (``budget.predict_seconds``)."""
        from autopeft.methods.registry import get_method, make_spec

        return sum(make_spec(m.name, m.params).num_virtual_tokens for m in self.methods
                   if get_method(m.name).lengthens_input)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        """A candidate from stored or hand-edited data, every method and value checked."""
        from autopeft.methods.registry import check_combination, make_spec

        data = known_keys(data, cls, "candidate")
        if not isinstance(data.get("methods"), list):
            raise UserError(f"methods must be a list of methods, got {data.get('methods')!r}")
        methods = [MethodSpec(**known_keys(m, MethodSpec, "a method")) for m in data["methods"]]
        for m in methods:
            make_spec(m.name, m.params)  # unknown method or parameter, bad value
        check_combination([m.name for m in methods])
        return cls(**data | {"methods": methods})
