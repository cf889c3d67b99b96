"""Load a base model and its tokenizer, once per worker.

A model is a Hugging Face hub id or a local directory. ``trust_remote_code`` stays off
unless the user asks for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from autopeft.errors import UserError


@dataclass
class BaseModel:
    model: Any
    tokenizer: Any
    name: str


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_base(name: str, num_labels: int, trust_remote_code: bool = False) -> BaseModel:
    """Load ``name`` for sequence classification with ``num_labels`` outputs."""
    _quiet_transformers()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = os.path.expanduser(name)
    # A hub id is "name" or "org/name"; anything else that is not a directory is a typo.
    if not os.path.isdir(path) and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise UserError(f"model directory {name!r} does not exist; give a local model directory "
                        "or a Hugging Face hub id")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        # A checkpoint's own head may have another label count: the head is always
        # re-initialised and trained, so a size mismatch there is expected.
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load model {name!r}: {first} (offline? pass a local model "
                        "directory with --model)") from None
    if tokenizer.pad_token_id is None:  # decoders (GPT-2, LLaMA) ship without a pad token
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return BaseModel(model=model, tokenizer=tokenizer, name=name)
