"""Search spaces: a YAML file -> validated ``Space`` -> a ``Candidate`` per Optuna trial.

No torch and no optuna import here: ``sample`` takes anything with Optuna's
``suggest_categorical`` / ``suggest_int`` / ``suggest_float``. The file format is
documented in ``search_spaces/README.md``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft.candidate import Candidate, MethodSpec
from autopeft.checks import load_yaml
from autopeft.errors import UserError
from autopeft.methods import check_combination, get_method, make_spec

if TYPE_CHECKING:  # only for annotations: optuna stays a lazy import
    from optuna.trial import Trial

def _spaces_dir() -> Path:
    """Where the shipped spaces are: the source tree's ``search_spaces/`` (a checkout), else
    the package data ``autopeft.search_spaces`` (a wheel or a non-editable install)."""
    source = Path(__file__).resolve().parents[1] / "search_spaces"
    if (source / "default.yaml").is_file():
        return source
    from importlib.resources import files

    return Path(str(files("autopeft.search_spaces")))


SPACES_DIR = _spaces_dir()
LR_SUFFIX = ".learning_rate"  # an entry's learning rate is the parameter <entry>.learning_rate


def lr_param(entry: str) -> str:
    """The name of the parameter an entry's learning rate is drawn as."""
    return f"{entry}{LR_SUFFIX}"


TOP_KEYS = {"name", "description", "candidates", "learning_rate", "methods", "seed"}


@dataclass(frozen=True)
class Param:
    """One searchable value: a constant, a categorical choice, or an int/float range."""

    kind: str  # const | choice | int | float | per_layer
    value: Any = None
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    def values(self) -> list[Any]:
        """Representative values for validation: every choice, or the range ends."""
        if self.kind == "per_layer":  # every layer on (its size is known once fitted)
            return [list(range(self.value))] if self.value else ["all"]
        if self.kind == "const":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        return [self.low, self.high]

    def suggest(self, trial: Trial, name: str) -> Any:
        if self.kind == "per_layer":
            # AutoPEFT's placement: each layer on or off (`<name>.<i>`). All off would place
            # the method nowhere; that draw means the top layer alone.
            if not self.value:
                raise UserError(f"{name}: per-layer placement needs the model's layer count "
                                "(fit the space to the model first)")
            on = [i for i in range(self.value) if trial.suggest_categorical(f"{name}.{i}", [True, False])]
            return on or [self.value - 1]
        if self.kind == "const":
            return self.value
        if self.kind == "choice":
            if all(c is None or isinstance(c, (bool, int, float, str)) for c in self.choices):
                return trial.suggest_categorical(name, list(self.choices))
            # Optuna stores only primitives: lists and dicts are chosen by their JSON text.
            picked = trial.suggest_categorical(name, [json.dumps(c) for c in self.choices])
            return json.loads(picked)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


@dataclass
class Space:
    name: str
    candidates: dict[str, dict[str, Param]]  # entry ("lora", "lora+bitfit") -> overrides
    methods: dict[str, dict[str, Param]]  # method -> its params
    learning_rate: Param
    description: str = ""
    seed: int = 0
    source: str = ""
    digest: str = field(default="", compare=False)
    text: str = field(default="", compare=False, repr=False)  # the YAML it came from

    def sample(self, trial: Trial) -> Candidate:
        """Draw one candidate; parameter names are ``candidate``, ``<entry>.learning_rate``
        and ``<method>.<param>``, so a method's parameters share one distribution."""
        entry = trial.suggest_categorical("candidate", list(self.candidates))
        lr = self.candidates[entry].get("learning_rate", self.learning_rate)
        learning_rate = lr.suggest(trial, lr_param(entry))
        methods = [MethodSpec(name, {p: param.suggest(trial, f"{name}.{p}")
                                     for p, param in self.methods.get(name, {}).items()})
                   for name in entry.split("+")]
        return Candidate(methods=methods, learning_rate=float(learning_rate), seed=self.seed)


def _num(value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` as a string; accept it as the number it means."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        return float(value)
    return value


def _param(where: str, raw: Any) -> Param:
    if not isinstance(raw, dict):
        raw = _num(raw)
        return Param("const", value=raw)
    keys = set(raw)
    if "per_layer" in keys:
        n = raw["per_layer"]
        if keys != {"per_layer"} or not (n is True or (isinstance(n, int) and n > 0)):
            raise UserError(f"{where}: write per_layer: true (every layer of the model on or off)")
        return Param("per_layer", value=None if n is True else n)
    if "choices" in keys:
        if keys - {"choices"}:
            raise UserError(f"{where}: 'choices' cannot be mixed with {sorted(keys - {'choices'})}")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choices must be a non-empty list")
        return Param("choice", choices=tuple(choices))
    if {"low", "high"} <= keys and not keys - {"low", "high", "log", "step"}:
        low, high = _num(raw["low"]), _num(raw["high"])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise UserError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
        if low > high:
            raise UserError(f"{where}: empty range, low {low} > high {high}")
        log = bool(raw.get("log", False))
        if log and low <= 0:
            raise UserError(f"{where}: a log range needs low > 0, got {low}")
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        return Param(kind, low=low, high=high, log=log, step=raw.get("step"))
    return Param("const", value=raw)  # a dict-valued constant (e.g. rank_pattern)


def resolve_path(name_or_path: str) -> Path:
    """A space file path, or the name of a file in ``search_spaces/``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SPACES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
    raise UserError(f"search space {name_or_path!r} is neither a file nor a shipped space "
                    f"({', '.join(known)})")


def load_space(name_or_path: str) -> Space:
    path = resolve_path(name_or_path)
    return space_from_text(path.read_text(encoding="utf-8"), str(path))


def space_from_text(text: str, source: str) -> Space:
    """A space from YAML text (a study stores its space's text, so workers need no file)."""
    path = source
    raw = load_yaml(text, str(path))
    space = parse_space(raw, str(path))
    space.text = text
    space.digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return space


def parse_space(raw: Any, source: str = "<space>") -> Space:
    """Validate a loaded YAML document; every error names the file and the place."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a search space is a YAML mapping with 'candidates' and 'methods'")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise UserError(f"{source}: unknown key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    entries = raw.get("candidates")
    if isinstance(entries, list):
        entries = {e: {} for e in entries}
    if not isinstance(entries, dict) or not entries:
        raise UserError(f"{source}: 'candidates' must list at least one method or hybrid (a+b)")
    methods_raw = raw.get("methods") or {}
    if not isinstance(methods_raw, dict):
        raise UserError(f"{source}: 'methods' must map method names to their parameters")
    methods: dict[str, dict[str, Param]] = {}
    for name, params in methods_raw.items():
        where = f"{source}: methods.{name}"
        try:
            known = get_method(name).params()
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        params = params or {}
        if not isinstance(params, dict):
            raise UserError(f"{where}: must map parameter names to values, choices or ranges")
        bad = sorted(set(params) - set(known))
        if bad:
            raise UserError(f"{where}: unknown parameter(s) {', '.join(bad)}; "
                            f"{name} takes {', '.join(known) or 'no parameters'}")
        methods[name] = {p: _param(f"{where}.{p}", v) for p, v in params.items()}
        for p, param in methods[name].items():  # every value must make a valid spec
            for value in param.values():
                try:
                    make_spec(name, {p: value})
                except UserError as exc:
                    raise UserError(f"{where}.{p}: {exc}") from None
    candidates: dict[str, dict[str, Param]] = {}
    for entry, overrides in entries.items():
        where = f"{source}: candidates.{entry}"
        try:
            check_combination(str(entry).split("+"))
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        overrides = overrides or {}
        if not isinstance(overrides, dict) or set(overrides) - {"learning_rate"}:
            raise UserError(f"{where}: an entry may only override learning_rate")
        candidates[str(entry)] = {k: _param(f"{where}.{k}", v) for k, v in overrides.items()}
    lr = _param(f"{source}: learning_rate", raw.get("learning_rate", 1e-4))
    for value in [lr, *(c.get("learning_rate") for c in candidates.values())]:
        if value is not None and not all(isinstance(v, (int, float)) and v > 0 for v in value.values()):
            raise UserError(f"{source}: learning rates must be positive numbers")
    name = str(raw.get("name") or os.path.splitext(os.path.basename(source))[0])
    return Space(name=name, candidates=candidates, methods=methods, learning_rate=lr,
                 description=str(raw.get("description", "")), seed=int(raw.get("seed", 0)),
                 source=source)
