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


_works: dict[str, str | None] = {}  # device -> None (4-bit works there) or why not


def works_on(device: Any) -> str | None:
    """None if bitsandbytes' 4-bit NF4 round trip runs on ``device`` (a 64x64 weight
    quantised and de-quantised there, close to the original), else why not, in a few words.
    Importable is not enough: a wheel without this CUDA version's library imports and then
    fails at the first 4-bit op. Asked once per device and process."""
    import torch

    key = str(device)
    if key not in _works:
        try:
            import bitsandbytes.functional as F

            w = torch.linspace(-1, 1, 64 * 64, device=device).reshape(64, 64)
            packed, state = F.quantize_4bit(w, quant_type="nf4")
            error = (F.dequantize_4bit(packed, state).float() - w).abs().max().item()
            _works[key] = None if error < 0.2 else f"its 4-bit round trip is off by {error:.3g}"
        except Exception as exc:  # ImportError, a missing CUDA library, a kernel that fails
            text = str(exc).strip().splitlines()
            _works[key] = f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
    return _works[key]


def check_environment(spec: Spec, device: Any) -> Any:
    """bitsandbytes, or a ``UserError`` saying what is missing. ``device``: where the base
    will train (a meta skeleton: the check is this machine's, and no 4-bit op runs); on a
    real device its 4-bit kernels must run there (``works_on``)."""
    import torch

    try:
        import bitsandbytes
    except ImportError:
        raise UserError("qlora: needs bitsandbytes (4-bit NF4 weights); install it with "
                        "pip install 'autopeft[qlora]', or drop qlora from the space") from None
    why = works_on(device) if device.type != "meta" else None
    if why:
        raise UserError(f"qlora: bitsandbytes is installed but its 4-bit kernels do not run on "
                        f"{device} ({why}); install a bitsandbytes built for this device, or "
                        "drop qlora from the space")
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

    dtype = compute_dtype(spec, device)
    swapped = 0
    for name, module in _quantised(model, ctx):
        conv1d = type(module).__name__ == "Conv1D"
        weight = _source(module.weight, ctx).detach()
        weight = weight.t() if conv1d else weight  # Conv1D stores (in, out)
        out_f, in_f = weight.shape
        new = bnb.nn.Linear4bit(in_f, out_f, bias=module.bias is not None, compute_dtype=dtype,
                                compress_statistics=spec.double_quant, quant_type=spec.quant_type,
                                device="meta")
        new.weight = bnb.nn.Params4bit(weight.to(device, torch.float32, copy=True).contiguous(),
                                       requires_grad=False,
                                       compress_statistics=spec.double_quant,
                                       quant_type=spec.quant_type, module=new).to(device)
        if in_f % new.weight.blocksize or out_f % 32:
            # bitsandbytes 0.50.2 repacks 4-bit weights for its AVX512-BF16 CPU kernel at the
            # first no-grad forward and fails on widths it cannot block (tiny models).
            new.support_avx512bf16_for_cpu = False
        if module.bias is not None:
            new.bias = torch.nn.Parameter(
                _source(module.bias, ctx).detach().to(device, torch.float32, copy=True),
                requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        swapped += 1
    return swapped


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    import torch

    inner = unwrap(model)
    config = lora.peft_config(inner, spec, ctx)  # checks ranks on the unquantised shapes
    # Quantised where it will train (the Trainer path builds on the CPU, then moves): on
    # CUDA, with CUDA's compute dtype; the build's own device where none is said.
    device = _target(getattr(ctx, "device", None), next(inner.parameters()).device)
    bnb = check_environment(spec, device)
    if device.type == "meta":  # a skeleton (predicting): 4-bit sizes, no weights to quantise
        if not packed_on_meta(inner, ctx):
            raise UserError("qlora: this model has no linear layer outside its head to quantise")
    else:
        if not quantize(inner, spec, ctx, bnb, device):
            raise UserError("qlora: this model has no linear layer outside its head to quantise")
        prepare(inner)
    return attach_peft(model, config, ctx, "qlora")


def replaces(base: Any, spec: Spec, ctx: Any) -> set[str]:
    """The base's parameters ``quantize`` replaces (the layers' weights and biases): ``build``
    leaves them out of the copy and ``quantize`` reads them from the base, one layer at a
    time, so a QLoRA build never holds a full-precision copy of the layers it quantises."""
    return {f"{name}.{kind}" for name, module in _quantised(base, ctx)
            for kind in ("weight", "bias") if getattr(module, kind, None) is not None}


def _source(param: Any, ctx: Any) -> Any:
    """``param``, or the base's parameter a placeholder of the copy stands for."""
    stand, base = getattr(ctx, "originals", {}).get(id(param), (None, None))
    return base if stand is param else param


def _target(wanted: str | None, here: Any) -> Any:
    """Where to quantise: the training device ``wanted`` (``auto``: CUDA if there is one),
    else ``here``, where the model is; a skeleton stays on meta."""
    import torch

    if here.type == "meta" or not wanted:
        return here
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(wanted)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _quantised(model: Any, ctx: Any) -> list[tuple[str, Any]]:
    """``(name, module)`` of the layers ``quantize`` makes 4-bit."""
    import torch

    heads = tuple(ctx.arch.head_names(model))
    # Modules the model must keep in fp32 (T5's ``wo``: its FFN casts its input to wo's dtype),
    # as transformers' own 4-bit loading does.
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    # A language model's output projection (often tied to the embeddings) stays too, as in
    # transformers' 4-bit loading.
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(name, module) for name, module in model.named_modules()
            if (type(module) is torch.nn.Linear or type(module).__name__ == "Conv1D")
            and module is not output and name.rpartition(".")[2] not in keep
            and not any(name == h or name.startswith(h + ".") for h in heads)]


def packed_on_meta(model: Any, ctx: Any) -> int:
    """On a meta skeleton, each layer ``quantize`` would swap gets the weight a 4-bit layer
    stores (bitsandbytes packs two 4-bit values a byte: ``in * out / 2`` uint8), so the
    static memory prediction (``search.constraints``) counts 4 bits a weight, not 32; the
    layer stays a ``Linear`` (LoRA sees the same shapes). Returns how many."""
    import torch

    layers = _quantised(model, ctx)
    for _, module in layers:
        size = module.weight.numel()
        module.weight = torch.nn.Parameter(torch.empty((size + 1) // 2, 1, dtype=torch.uint8,
                                                       device="meta"), requires_grad=False)
    return len(layers)


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
                peft_native=True, families=FAMILIES, replaces=replaces,
                summary="QLoRA: LoRA on a 4-bit NF4 base (bitsandbytes; CUDA, slow on CPU)")
