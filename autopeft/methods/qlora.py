"""QLoRA (Dettmers et al., 2023): LoRA on a base model whose linear layers are stored in 4-bit
NormalFloat (NF4, bitsandbytes), with double quantisation of the scales.

The base model arrives in fp32 (loaded once per worker, deep-copied per candidate), so
``apply`` quantises the copy itself: every linear layer outside the task head becomes a
frozen ``bnb.nn.Linear4bit`` (GPT-2's ``Conv1D`` too, its weight transposed; those the model
keeps in fp32, T5's ``wo``, and a language model's output projection stay), ``prepare``
readies it as peft's k-bit training expects, then peft puts its 4-bit LoRA layer
(``peft.tuners.lora.bnb.Linear4bit``) on the targets, so ``merge_and_unload()`` of an
exported candidate de-quantises, adds the LoRA product and re-quantises. The LoRA fields are LoRA's;
the LoRA targets default to every linear role, as in the paper.

CUDA is the real target: the 4-bit matmuls de-quantise to ``compute_dtype`` (``auto``: bf16
on a GPU with native bf16, compute capability 8.0+; else fp32). The weights are quantised on
the device the base model is on: the training device (``--device``, e.g. ``cuda:1``), where
``Bench.run`` keeps the base. ``fp16`` is not offered: autopeft trains without a loss scaler,
and fp16 gradients of small LoRA products underflow. bitsandbytes (0.50.2) also runs 4-bit on
CPU, measured about 15x slower than fp32 LoRA, so QLoRA is offered there with a one-time
warning. Without bitsandbytes (``pip install 'autopeft[qlora]'``) building a candidate is a
``UserError``.

Trainable parameters are LoRA's: ``r * (in + out)`` per target, plus the task head.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, field
from typing import Any

from autopeft.arch import ROLES
from autopeft.errors import UserError
from autopeft.methods import lora
from autopeft.methods._common import attach_peft, one_of, targets_field, unwrap
from autopeft.methods.registry import Method

COMPUTE_DTYPES = ("auto", "bf16", "fp32")
_warned_cpu = False


@dataclass
class Spec(lora.Spec):
    targets: list[str] = targets_field(ROLES, "modules to adapt (every linear role, as in "
                                              "the paper)")
    quant_type: str = field(default="nf4", metadata={
        "help": "4-bit format of the frozen base: nf4 (the paper's NormalFloat) | fp4"})
    double_quant: bool = field(default=True, metadata={
        "help": "also quantise the quantisation scales (the paper's double quantisation)"})
    compute_dtype: str = field(default="auto", metadata={
        "help": f"matmul dtype: {' | '.join(COMPUTE_DTYPES)} (auto: bf16 on CUDA, fp32 on CPU)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("quant_type", self.quant_type, ("nf4", "fp4"), "qlora")
        if self.compute_dtype == "fp16":
            raise UserError("qlora: compute_dtype fp16 is not offered: autopeft trains without a "
                            "loss scaler, so fp16 gradients underflow; use bf16 (GPUs of compute "
                            "capability 8.0+), fp32 or auto")
        one_of("compute_dtype", self.compute_dtype, COMPUTE_DTYPES, "qlora")
        if not isinstance(self.double_quant, bool):
            raise UserError(f"qlora: double_quant must be true or false, got {self.double_quant!r}")


def check_environment(spec: Spec, device: Any) -> Any:
    """bitsandbytes, or a ``UserError`` saying what is missing. ``device``: where the base
    is (a meta skeleton: the check is this machine's)."""
    import torch

    try:
        import bitsandbytes
    except ImportError:
        raise UserError("qlora: needs bitsandbytes (4-bit NF4 weights); install it with "
                        "pip install 'autopeft[qlora]', or drop qlora from the space") from None
    on_cuda = device.type == "cuda" or (device.type == "meta" and torch.cuda.is_available())
    if not on_cuda and spec.compute_dtype == "bf16":
        raise UserError("qlora: compute_dtype bf16 needs CUDA and the model trains on the CPU; "
                        "use compute_dtype auto or fp32 on CPU")
    global _warned_cpu
    if device.type == "cpu" and not _warned_cpu:
        _warned_cpu = True
        warnings.warn("qlora: training on the CPU; 4-bit QLoRA runs there but is slow (about "
                      "15x a fp32 LoRA step)", stacklevel=3)
    return bitsandbytes


def compute_dtype(spec: Spec, device: Any) -> Any:
    """The matmul dtype on ``device``: ``auto`` is bf16 where the device has it natively."""
    import torch

    from autopeft.devices import bf16_native

    name = spec.compute_dtype if spec.compute_dtype != "auto" else (
        "bf16" if bf16_native(device) else "fp32")
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def quantize(model: Any, spec: Spec, ctx: Any, bnb: Any, device: Any) -> int:
    """Swap every linear layer outside the task head for a 4-bit one; returns how many."""
    import torch

    heads = tuple(ctx.arch.head_names(model))
    # Modules the model must keep in fp32 (T5's ``wo``: its FFN casts its input to wo's dtype),
    # as transformers' own 4-bit loading does.
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    # A language model's output projection (often tied to the embeddings) stays too, as in
    # transformers' 4-bit loading.
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    dtype = compute_dtype(spec, device)
    swapped = 0
    for name, module in list(model.named_modules()):
        conv1d = type(module).__name__ == "Conv1D"
        if not (type(module) is torch.nn.Linear or conv1d) or module is output:
            continue
        if name.rpartition(".")[2] in keep or any(name == h or name.startswith(h + ".")
                                                  for h in heads):
            continue
        weight = module.weight.detach()
        weight = weight.t() if conv1d else weight  # Conv1D stores (in, out)
        out_f, in_f = weight.shape
        new = bnb.nn.Linear4bit(in_f, out_f, bias=module.bias is not None, compute_dtype=dtype,
                                compress_statistics=spec.double_quant, quant_type=spec.quant_type,
                                device="meta")
        new.weight = bnb.nn.Params4bit(weight.contiguous().to(torch.float32), requires_grad=False,
                                       compress_statistics=spec.double_quant,
                                       quant_type=spec.quant_type, module=new).to(device)
        if in_f % new.weight.blocksize or out_f % 32:
            # bitsandbytes 0.50.2 repacks 4-bit weights for its AVX512-BF16 CPU kernel at the
            # first no-grad forward and fails on widths it cannot block (tiny models).
            new.support_avx512bf16_for_cpu = False
        if module.bias is not None:
            new.bias = torch.nn.Parameter(module.bias.detach().to(device), requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        swapped += 1
    return swapped


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    inner = unwrap(model)
    config = lora.peft_config(inner, spec, ctx)  # checks ranks on the unquantised shapes
    device = next(inner.parameters()).device  # the training device, where Bench keeps the base
    bnb = check_environment(spec, device)
    # A meta-device skeleton (checking a space) has no weights to quantise: LoRA alone shows
    # whether the candidate fits the model.
    if device.type != "meta":
        if not quantize(inner, spec, ctx, bnb, device):
            raise UserError("qlora: this model has no linear layer outside its head to quantise")
        prepare(inner)
    return attach_peft(model, config, ctx, "qlora")


def prepare(inner: Any) -> None:
    """Mark and prepare the quantised model as peft's k-bit training expects: with
    ``is_loaded_in_4bit`` (what transformers' 4-bit loading sets) peft puts its 4-bit LoRA
    layer (``peft.tuners.lora.bnb.Linear4bit``, which merges by de-quantising) on the
    targets instead of the generic ``lora.Linear``; ``prepare_model_for_kbit_training``
    casts 16-bit weights to fp32 and freezes the base. Its gradient checkpointing is left to
    the study's ``gradient_checkpointing`` setting (non-reentrant, so inputs need no grad).
    What trained before (a prompt method's head copy) trains again."""
    from peft import prepare_model_for_kbit_training

    trainable = [p for p in inner.parameters() if p.requires_grad]
    inner.is_loaded_in_4bit = True
    prepare_model_for_kbit_training(inner, use_gradient_checkpointing=False)
    for param in trainable:
        param.requires_grad_(True)


# Without bitsandbytes it runs on no model: no family (so the method contract skips it).
FAMILIES = (("encoder", "decoder", "encoder-decoder")
            if importlib.util.find_spec("bitsandbytes") else ())

METHOD = Method(name="qlora", category="reparameterized", spec=Spec, apply=apply, engine="peft",
                peft_native=True, families=FAMILIES,
                summary="QLoRA: LoRA on a 4-bit NF4 base (bitsandbytes; CUDA, slow on CPU)")
