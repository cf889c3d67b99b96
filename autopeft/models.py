"""Load a base model and its tokenizer, once per worker.

A model is a Hugging Face hub id or a local directory. ``trust_remote_code`` stays off
unless the user asks for it.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from autopeft.errors import UserError
from autopeft.kinds import kind_of
from autopeft.tasks import Task


# The attribute on a loaded model naming the parameters ``from_pretrained`` created rather
# than read (a new task head): ``build`` re-draws them from the candidate's seed.
NEW_PARAMETERS_ATTR = "autopeft_new_parameters"
LOAD_DTYPE = "float32"  # a base model's weights in memory, whatever its checkpoint stores


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


# bitsandbytes (0.50) looks up a CPU 4-bit matmul kernel on the Hugging Face hub when it is
# imported on a CPU with AVX512-BF16 (``kernels.get_kernel("kernels-community/
# quantization-bitsandbytes")``): online a download at import time, offline a line from
# ``kernels`` ("Skipping publisher trust check ...") and one from bitsandbytes ("Failed to
# load CPU gemm_4bit_forward ..."). peft imports bitsandbytes whenever it is installed, and
# transformers' Trainer imports peft, so every model build would pay it.
_BNB_CPU_OPS_LOGGER = "bitsandbytes.backends.cpu.ops"


def import_bitsandbytes_quietly() -> None:
    """Import bitsandbytes (if installed) before peft or transformers' Trainer do, with its
    hub kernel look-up turned off: while it imports, ``kernels`` is unimportable (a ``None``
    entry in ``sys.modules``), so bitsandbytes takes its own fallback (its C library's 4-bit
    CPU matmul; on CUDA nothing changes) and says nothing. Idempotent and cheap after the
    first call; ``kernels`` works as before for everyone else afterwards."""
    if "bitsandbytes" in sys.modules or importlib.util.find_spec("bitsandbytes") is None:
        return
    missing = object()
    kernels = sys.modules.get("kernels", missing)
    log = logging.getLogger(_BNB_CPU_OPS_LOGGER)
    level = log.level
    sys.modules["kernels"] = None  # type: ignore[assignment]  # `from kernels import` fails
    log.setLevel(logging.ERROR)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass  # a broken install: peft's own `try: import bitsandbytes` copes the same way
    finally:
        log.setLevel(level)
        if kernels is missing:
            del sys.modules["kernels"]
        else:
            sys.modules["kernels"] = kernels


def _quiet_transformers() -> None:
    import_bitsandbytes_quietly()  # before anything of transformers can import peft
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def model_class(task: Task) -> Any:
    """The transformers auto class a task trains (its kind's choice): a classifier, a seq2seq
    or a causal LM."""
    import transformers

    return getattr(transformers, kind_of(task).auto_class)


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
        # fp32 whatever the checkpoint stores (transformers 5 loads ``dtype="auto"``: a bf16
        # checkpoint, every LLaMA, would train its trainable weights in bf16): what trains
        # keeps fp32 master weights; a bf16 run casts only the frozen ones
        # (``train.frozen_in_bf16``), and ``--precision fp32`` is fp32 throughout.
        model, info = cls.from_pretrained(path, trust_remote_code=trust_remote_code,
                                          output_loading_info=True, dtype=LOAD_DTYPE, **head)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load model {name!r}: {first} (offline? pass a local model "
                        "directory with --model)") from None
    if tokenizer.pad_token_id is None:  # decoders (GPT-2, LLaMA) ship without a pad token
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    setattr(model, NEW_PARAMETERS_ATTR, new_parameters(model, info))
    return BaseModel(model=model, tokenizer=tokenizer, name=name)


def new_parameters(model: Any, info: dict[str, Any]) -> tuple[str, ...]:
    """Parameters ``from_pretrained`` initialised itself (missing from the checkpoint, or of
    another size there). It draws them from the process's unseeded generator, so without
    re-drawing them every process would train a different head. A name that shares its
    tensor with a loaded parameter (tied weights) is not new."""
    missing = set(info.get("missing_keys", ())) | {k[0] for k in info.get("mismatched_keys", ())}
    by_id: dict[int, set[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(param), set()).add(name)
    return tuple(sorted(name for names in by_id.values() if names <= missing for name in names))


def reinit_new_parameters(model: Any) -> None:
    """Re-draw the parameters ``from_pretrained`` created, from torch's generator (``build``
    seeds it with the candidate's seed), with the model's own init scheme: ``_init_weights``
    of the nearest pretrained (sub)model, as loading does. Other tensors of the same modules
    keep their loaded values."""
    import torch

    names = set(getattr(model, NEW_PARAMETERS_ATTR, ()))
    with torch.no_grad():
        for owner_name in sorted({n.rpartition(".")[0] for n in names}):
            owner = model.get_submodule(owner_name)
            if any(p.is_meta for p in owner.parameters(recurse=False)):
                continue
            own = [*owner.named_parameters(recurse=False), *owner.named_buffers(recurse=False)]
            keep = {k: t.detach().clone() for k, t in own
                    if (f"{owner_name}.{k}" if owner_name else k) not in names}
            # Drawn on the CPU wherever the model is (a base kept on a GPU): the same values
            # as a CPU build, from the same generator.
            device = next(iter([*owner.parameters(), *owner.buffers()]), torch.empty(0)).device
            if device.type != "cpu":
                owner.to("cpu")
            _initialiser(model, owner_name)._init_weights(owner)
            for k, value in keep.items():
                getattr(owner, k).copy_(value)
            if device.type != "cpu":
                owner.to(device)


def _initialiser(model: Any, module_name: str) -> Any:
    """The deepest pretrained model on the path to ``module_name`` (composite models)."""
    from transformers import PreTrainedModel

    found, path = model, ""
    for part in module_name.split(".") if module_name else ():
        path = f"{path}.{part}" if path else part
        sub = model.get_submodule(path)
        if isinstance(sub, PreTrainedModel):
            found = sub
    return found
