"""One validation path for every setting, whoever gives it.

CLI flags, the library API, a study's stored settings and a (possibly hand-edited)
``candidate.yaml`` all build the same dataclasses (``TrainSettings``, ``DataSettings``,
``SearchConfig``, ``Candidate``); their ``__post_init__`` call these checks, so a value
refused on the command line is refused in a file too, before anything is created.
Every message starts with the field's name, so a file reader can prefix where it was.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from autopeft.errors import UserError
from autopeft.kinds import kind_of

# Study names become file names (studies/<name>.db, reports/<name>/): plain names only.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_KIND = {int: "a whole number", float: "a number", str: "a string", bool: "true or false",
         list: "a list", dict: "a mapping"}


def plain_name(name: Any, what: str = "study name") -> str:
    """``name`` if it is a plain file name (letters, digits, ``_.-``, not starting with a dot)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{what} {name!r} is not a plain name: use letters, digits, '_', '.' "
                        "and '-' (128 at most, not starting with '.' or '-'); to put a study "
                        "database elsewhere, give its path with --storage sqlite:///PATH")
    return name


def safe_name(text: str) -> str:
    """``text`` made into a plain name (for names derived from a task or model path)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).lstrip(".-")[:128]
    return name or "study"


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if isinstance(value, bool) and hint is not bool:  # True is an int to Python, not to us
        return False
    if hint is float:
        return isinstance(value, (int, float))
    if origin in (list, tuple):
        inner = typing.get_args(hint)[:1]
        return isinstance(value, (list, tuple)) and all(_fits(v, inner[0]) for v in value
                                                        if inner)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _kind(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    names = [_KIND.get(typing.get_origin(a) or a, getattr(a, "__name__", str(a))) for a in args]
    return " or ".join(names)


def check_types(obj: Any) -> None:
    """Every field of the dataclass ``obj`` holds a value of its annotated type. A path given
    as an ``os.PathLike`` (``pathlib.Path``) where a string is taken becomes that string."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, os.PathLike) and _fits("", hints[f.name]):
            value = os.fspath(value)
            object.__setattr__(obj, f.name, value)  # frozen settings too
        if not _fits(value, hints[f.name]):
            raise UserError(f"{f.name} must be {_kind(hints[f.name])}, got {value!r}")


def known_keys(data: Any, cls: type, where: str) -> dict[str, Any]:
    """``data`` as keyword arguments for ``cls``: a mapping with no key ``cls`` lacks."""
    if not isinstance(data, Mapping):
        raise UserError(f"{where} must be a mapping of settings, got {type(data).__name__}")
    params = inspect.signature(cls).parameters  # fields, and legacy names (InitVar)
    unknown = sorted(str(k) for k in data if k not in params)
    if unknown:
        raise UserError(f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(params)}")
    missing = [n for n, p in params.items() if p.default is p.empty and n not in data]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")
    return dict(data)


def _number(obj: Any, name: str) -> float | None:
    value = getattr(obj, name)
    if value is not None and not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value}")
    return value


def at_least(obj: Any, minimum: float, names: Iterable[str], maximum: float | None = None) -> None:
    """Each named field (None aside) is finite, >= ``minimum`` and, if given, <= ``maximum``."""
    for name in names:
        value = _number(obj, name)
        if value is None:
            continue
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum:g}" if maximum is not None else f">= {minimum}"
            raise UserError(f"{name} must be {bound}, got {value}")


def positive(obj: Any, names: Iterable[str], maximum: float | None = None) -> None:
    """Each named field (None aside) is a finite number > 0 (and <= ``maximum``)."""
    for name in names:
        value = _number(obj, name)
        if value is not None and (value <= 0 or (maximum is not None and value > maximum)):
            limit = f" and at most {maximum:g}" if maximum is not None else ""
            raise UserError(f"{name} must be > 0{limit}, got {value}")


def one_of(obj: Any, name: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if getattr(obj, name) not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}, got {getattr(obj, name)!r}")


def check_device(name: str) -> None:
    """A device this machine has: checked before any study exists, not in every trial."""
    if not DEVICE.fullmatch(name):
        raise UserError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            have = f"only {count} CUDA device(s)" if count else "no CUDA device"
            raise UserError(f"device {name!r}: this machine has {have}; use --device cpu or auto")
    if name == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise UserError("device 'mps': not available on this machine; use --device cpu or auto")


def min_max_length(tokenizer: Any, task: Any) -> int:
    """The shortest ``max_length`` that keeps one token of every input (and, for language
    modelling, one of the answer) besides the special tokens the tokenizer adds: the task
    kind's rule."""
    return kind_of(task).min_max_length(tokenizer, task)


def check_max_length(tokenizer: Any, task: Any, max_length: int) -> None:
    """Refuse a length the tokenizer would silently ignore (shorter than its special tokens)
    or fill with special tokens alone."""
    least = min_max_length(tokenizer, task)
    if max_length < least:
        raise UserError(f"max_length {max_length} is too short for {task.name} with this "
                        f"tokenizer: the minimum is {least} (its special tokens plus one token "
                        f"of each input); use --max-length {least} or more (128 is usual)")


class NumberLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that also reads ``1e-3`` as a number (YAML 1.1 wants ``1.0e-3``):
    what a person writes for a learning rate in a hand-edited file."""


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(text: str, source: str, loader: type = yaml.SafeLoader) -> Any:
    """Parse YAML safely (no python tags run); an error is one line naming the place."""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        problem = " ".join((getattr(exc, "problem", None) or "invalid YAML").split())
        raise UserError(f"{source}: YAML error{line}: {problem}") from None
