"""The method interface and the name -> method registry.

A method is a module under ``autopeft/methods/`` that defines

* ``Spec``: a dataclass of its hyper-parameters and placement, validated in
  ``__post_init__`` (raise ``UserError``), importable without torch so that search spaces
  can be checked and sampled without it;
* ``apply(model, spec, ctx) -> model``: make the model trainable the method's way, and
  return it (peft methods return a wrapped ``PeftModel``);
* ``METHOD = Method(...)``: its registry entry.

``build.py`` freezes the base model, applies each method of a candidate in turn, and
trains the task head. To add a method: write the module; the registry finds every
module of this package whose name does not start with ``_`` (``registry`` aside).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autopeft.errors import UserError

CATEGORIES = ("baseline", "additive", "partial", "reparameterized", "hybrid", "unified")

# Listing order in `autopeft methods`: the baseline first, then the review's categories.
_ORDER = {c: i for i, c in enumerate(CATEGORIES)}


@dataclass(frozen=True)
class Method:
    name: str
    category: str  # one of CATEGORIES (the review's taxonomy, plus the full-FT baseline)
    spec: type
    apply: Callable[..., Any]
    summary: str
    engine: str = "autopeft"  # "peft" when peft implements it
    peft_native: bool = False  # alone in a candidate, it exports to peft's own format
    exclusive: bool = False  # cannot be combined with any other method (full fine-tuning)
    families: tuple[str, ...] = ("encoder", "decoder", "encoder-decoder")
    # (family, reason) for families above whose sequence-classification model it cannot
    # train (their language models it can): a space drops it there with the reason.
    no_classification: tuple[tuple[str, str], ...] = ()
    # Adds virtual tokens through peft's prompt learning (prefix, prompt, P-tuning, and the
    # hybrids built on prefix): it must be the outer PeftModel, and one per candidate.
    prompt_learning: bool = False
    # Puts its spec's ``num_virtual_tokens`` before every input row (prompt tuning,
    # P-tuning; prefix tuning adds keys and values only): a step runs on that many more
    # tokens a row, so it costs more than the probe's (``Candidate.input_tokens``).
    lengthens_input: bool = False
    # (base, spec, ctx) -> names of the base's parameters it replaces from the base itself
    # (``ctx.originals``), so ``build`` does not copy them first (QLoRA quantises from it).
    replaces: Callable[..., set[str]] | None = None

    @property
    def build_order(self) -> int:
        """Where ``build`` applies it: prompt learning first (it wraps the model; peft can
        only inject other methods beside it), other peft methods next (``get_peft_model``
        freezes what is not its adapter), autopeft's own methods last."""
        if self.prompt_learning:
            return 0
        return 1 if self.engine == "peft" else 2

    def params(self) -> dict[str, Any]:
        """Field name -> default, for ``autopeft methods`` and space validation."""
        return {f.name: _default(f) for f in dataclasses.fields(self.spec)}

    def fields(self) -> list[dict[str, Any]]:
        """``{name, default, help}`` per spec field, in declaration order: what
        ``autopeft methods NAME`` shows."""
        return [{"name": f.name, "default": _default(f), "help": f.metadata.get("help", "")}
                for f in dataclasses.fields(self.spec)]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def undocumented(spec: type) -> list[str]:
    """Fields of ``spec`` declared without a help text (``metadata={"help": ...}``)."""
    return [f.name for f in dataclasses.fields(spec) if not str(f.metadata.get("help", "")).strip()]


def check_model_kind(method: Method, family: str, classification: bool) -> None:
    """A ``UserError`` with the reason where ``method`` cannot train this kind of model."""
    if family not in method.families:
        raise UserError(f"{method.name} does not support {family} models")
    reason = dict(method.no_classification).get(family) if classification else None
    if reason:
        raise UserError(f"{method.name} does not support {family} classification models "
                        f"({reason}); it trains their language models (generation tasks)")


PLUGINS_ENV = "AUTOPEFT_PLUGINS"  # comma-separated modules that register more methods


def register(method: Method, methods: dict[str, Method] | None = None) -> Method:
    """Add ``method`` to the catalogue: its name must be new, its category known, and every
    field of its spec documented (``autopeft methods NAME`` shows the help texts)."""
    methods = METHODS if methods is None else methods
    if method.category not in CATEGORIES:
        raise ValueError(f"method {method.name!r}: unknown category {method.category!r}; "
                         f"use one of {', '.join(CATEGORIES)}")
    missing = undocumented(method.spec)
    if missing:
        raise ValueError(f"method {method.name!r}: spec field(s) {', '.join(missing)} have no "
                         "help; declare each as field(default=..., metadata={'help': '...'})")
    if method.name in methods:
        raise ValueError(f"a method named {method.name!r} is already registered")
    methods[method.name] = method
    return method


def _load() -> dict[str, Method]:
    """Every ``autopeft/methods/<name>.py`` module's ``METHOD``, in category order, then the
    modules named in ``AUTOPEFT_PLUGINS`` (imported, they call ``register``; the variable
    reaches trial and worker processes, so they have the same catalogue)."""
    found: dict[str, Method] = {}
    for info in pkgutil.iter_modules([os.path.dirname(os.path.abspath(__file__))]):
        if info.name.startswith("_") or info.name == "registry":
            continue
        register(importlib.import_module(f"autopeft.methods.{info.name}").METHOD, found)
    return dict(sorted(found.items(), key=lambda kv: (_ORDER[kv[1].category], kv[0])))


METHODS: dict[str, Method] = _load()
for _plugin in filter(None, os.environ.get(PLUGINS_ENV, "").split(",")):
    importlib.import_module(_plugin.strip())


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def make_spec(name: str, params: dict[str, Any]) -> Any:
    """Build and validate a method's spec from a dict of parameters."""
    method = get_method(name)
    known = method.params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise UserError(f"method {name!r} has no parameter(s) {', '.join(unknown)}; "
                        f"its parameters: {', '.join(known) or 'none'}")
    try:
        return method.spec(**params)
    except TypeError as exc:
        raise UserError(f"bad parameters for method {name!r}: {exc}") from None


def check_combination(names: list[str]) -> None:
    """Reject combinations that cannot work, naming the pair."""
    for name in names:
        get_method(name)
    if len(set(names)) != len(names):
        raise UserError(f"method listed twice in {'+'.join(names)}")
    for name in names:
        if METHODS[name].exclusive and len(names) > 1:
            other = next(n for n in names if n != name)
            raise UserError(f"{name!r} cannot be combined with {other!r}: {name} already "
                            "trains every weight")
    prompt = [n for n in names if METHODS[n].prompt_learning]
    if len(prompt) > 1:
        raise UserError(f"{prompt[0]!r} cannot be combined with {prompt[1]!r}: both add virtual "
                        "tokens through peft's prompt learning, and a model takes one set")
