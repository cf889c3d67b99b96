"""Load a base model and its tokenizer, once per worker.

A model is a Hugging Face hub id or a local directory. ``trust_remote_code`` stays off
unless the user asks for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from autopeft.errors import UserError
from autopeft.tasks import Task


@dataclass
class BaseModel:
    model: Any
    tokenizer: Any
    name: str


def quiet_libraries() -> None:
    """Library chatter is not for autopeft's users: deprecation notices (transformers, peft,
    optuna), load reports and progress bars, bitsandbytes' optional-kernel notice."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*experimental.*")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def model_class(task: Task) -> Any:
    """The transformers auto class a task trains: a classifier, a seq2seq or a causal LM."""
    import transformers

    if task.kind == "translation":
        return transformers.AutoModelForSeq2SeqLM
    if task.is_lm:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModelForSequenceClassification


def load_base(name: str, task: Task, trust_remote_code: bool = False) -> BaseModel:
    """Load ``name`` with the head ``task`` needs (``num_labels`` outputs for classifiers)."""
    _quiet_transformers()
    from transformers import AutoTokenizer

    path = os.path.expanduser(name)
    # A hub id is "name" or "org/name"; anything else that is not a directory is a typo.
    if not os.path.isdir(path) and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise UserError(f"model directory {name!r} does not exist; give a local model directory "
                        "or a Hugging Face hub id")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        cls = model_class(task)
        # A checkpoint's own classifier may have another label count: the head is always
        # re-initialised and trained, so a size mismatch there is expected.
        head = {} if task.is_lm else {"num_labels": task.num_labels, "ignore_mismatched_sizes": True}
        model = cls.from_pretrained(path, trust_remote_code=trust_remote_code, **head)
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
