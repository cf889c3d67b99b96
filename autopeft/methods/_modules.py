"""Torch modules that autopeft's own methods attach to a model with forward hooks.

One bottleneck (down-project, activate, up-project, optional gate) serves the serial
adapter, the parallel adapter, MAM's scaled parallel adapter and UniPELT's gated LoRA and
adapter; only where it reads and writes differs:

* ``serial``: ``h <- h + f(h)`` on a module's output (Houlsby adapters);
* ``after_ffn``: AdapterHub's Pfeiffer placement (``AfterFfn``): ``f`` reads the FFN
  sub-layer's output after its residual add and LayerNorm, and adds before that norm;
* ``parallel``: ``out <- out + f(x)``, ``x`` the same module's input (LoRA's form);
* ``beside``: ``out <- out + f(x)``, ``x`` the input of another module of the same layer
  (He et al.'s parallel adapter: from the FFN's input to the FFN's output).

Each bottleneck is registered as a submodule of the module whose output it changes (named
after the method), so ``named_parameters``, ``deepcopy``, ``.to(device)`` and the saved
weights include it. Hooks are bound methods of the bottleneck: ``deepcopy`` re-binds them
to the copy. The up-projection starts at zero, so a fresh model computes what the base
model computes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

_ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU,
        "identity": nn.Identity}


def dims(module: nn.Module) -> tuple[int, int]:
    """(input width, output width) of a linear layer (nn.Linear, GPT-2's Conv1D, peft's)."""
    if hasattr(module, "in_features"):
        return int(module.in_features), int(module.out_features)
    if hasattr(module, "nx"):  # transformers.pytorch_utils.Conv1D
        return int(module.nx), int(module.nf)
    raise TypeError(f"cannot tell the width of {type(module).__name__}")


class _MaskHolder:
    """The latest attention mask given to the model, for pad-aware pooling in the gates."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None

    def remember_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.mask = kwargs.get("attention_mask")


def mask_holder(model: nn.Module) -> _MaskHolder:
    """The model's one ``_MaskHolder`` (made and hooked on first use)."""
    holder = getattr(model, "autopeft_mask_holder", None)
    if holder is None:
        holder = _MaskHolder()
        model.register_forward_pre_hook(holder.remember_hook, with_kwargs=True)
        object.__setattr__(model, "autopeft_mask_holder", holder)
    return holder


def example_gate(linear: nn.Module, h: torch.Tensor, holder: _MaskHolder | None) -> torch.Tensor:
    """UniPELT's gate: ``sigmoid(linear(h))`` averaged over each example's tokens, shape
    ``(batch, out)``. The reference averages over every position; pads are left out here so
    that padding cannot change a prediction."""
    g = torch.sigmoid(linear(h.to(linear.weight.dtype)))
    mask = holder.mask if holder is not None else None
    if mask is not None and mask.dim() == 2 and mask.shape[1] >= g.shape[1]:
        m = mask[:, -g.shape[1]:].to(g.dtype).unsqueeze(-1)
        return (g * m).sum(1) / m.sum(1).clamp(min=1)
    return g.mean(1)


class AfterFfn:
    """Hooks for a block ``f`` placed as AdapterHub's Pfeiffer adapter
    (``original_ln_before``, ``residual_before_ln``): it reads ``x``, the FFN sub-layer's
    output after the residual add and LayerNorm, and adds to the FFN output before that
    norm. Post-LN models (hook on the norm, ``s`` its input): ``LN(s + f(LN(s)))``. Pre-LN
    models have no norm there (hook on the layer): ``x + f(x)``. Several blocks on one norm
    (e.g. UniPELT's adapter and an ``adapter``) all read ``x`` and all add: one hook for all,
    since a second norm hook would recompute the norm from ``s`` and drop the first's output."""

    def norm_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        delta = sum(b(output).to(output.dtype) for b in getattr(module, _AFTER_FFN))
        return module.forward(args[0] + delta)  # .forward: without re-running the hooks

    def layer_hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):  # T5's block: (hidden states, position biases)
            return (output[0] + self(output[0]).to(output[0].dtype),) + output[1:]
        return output + self(output).to(output.dtype)

    def attach_after_ffn(self, host: nn.Module, kind: str) -> None:
        if kind == "layer":
            host.register_forward_hook(self.layer_hook)
            return
        blocks = getattr(host, _AFTER_FFN, None)
        if blocks is None:  # a plain list attribute: deepcopy maps it to the copied blocks
            blocks = []
            object.__setattr__(host, _AFTER_FFN, blocks)
            host.register_forward_hook(self.norm_hook)
        blocks.append(self)


_AFTER_FFN = "autopeft_after_ffn_blocks"


def after_ffn_hosts(model: nn.Module, ctx: Any, layers: Any) -> list[tuple[str, str]]:
    """``(module name, "norm" | "layer")`` where ``AfterFfn`` hooks go in ``layers``."""
    from autopeft.arch import resolve_layers

    chosen = resolve_layers(layers, ctx.num_layers)
    if ctx.arch.ffn_norm:
        return [(n, "norm") for n in ctx.arch.find_paths(model, ctx.arch.ffn_norm, chosen)]
    paths = dict.fromkeys(ctx.arch.layer_path(n) for n in ctx.arch.find(model, ["ffn_out"], chosen))
    return [(n, "layer") for n in paths]


class Bottleneck(AfterFfn, nn.Module):
    """``scaling * up(act(down(x)))``; gated (UniPELT), times ``example_gate`` instead of
    the scaling (the reference's gate replaces LoRA's alpha / r)."""

    def __init__(self, in_dim: int, size: int, out_dim: int, activation: str = "relu",
                 scaling: float = 1.0, bias: bool = True, gated: bool = False,
                 holder: _MaskHolder | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(in_dim, size, bias=bias)
        self.act = _ACT[activation]()
        self.up = nn.Linear(size, out_dim, bias=bias)
        nn.init.zeros_(self.up.weight)
        if bias:
            nn.init.zeros_(self.up.bias)
        self.gate = nn.Linear(in_dim, 1) if gated else None
        self.holder = holder
        self.scaling = 1.0 if gated else scaling
        self._source: torch.Tensor | None = None  # "beside": the other module's latest input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.act(self.down(x.to(self.down.weight.dtype)))) * self.scaling
        if self.gate is not None:
            y = y * example_gate(self.gate, x, self.holder).unsqueeze(1)
        return y

    # forward hooks (module, args, output) -> new output; pre-hooks (module, args)
    def serial_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + self(output).to(output.dtype)

    def parallel_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + self(args[0]).to(output.dtype)

    def remember_hook(self, module: nn.Module, args: tuple) -> None:
        self._source = args[0]

    def beside_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x, self._source = self._source, None  # do not keep the activation alive
        if x is None:
            raise RuntimeError("parallel adapter: the FFN input was not seen before its output")
        return output + self(x).to(output.dtype)


def attach(host: nn.Module, name: str, block: Bottleneck, where: str,
           sources: list[nn.Module] = ()) -> None:
    """Register ``block`` under ``host`` as ``name`` and hook it in (see module docstring)."""
    weight = next(host.parameters())
    block.to(device=weight.device, dtype=weight.dtype if weight.is_floating_point() else None)
    host.add_module(name, block)
    if where == "serial":
        host.register_forward_hook(block.serial_hook)
    elif where == "parallel":
        host.register_forward_hook(block.parallel_hook)
    elif where in ("norm", "layer"):
        block.attach_after_ffn(host, where)
    elif where == "beside":
        for source in sources:
            source.register_forward_pre_hook(block.remember_hook)
        host.register_forward_hook(block.beside_hook)
    else:
        raise ValueError(where)


def add_bottlenecks(model: nn.Module, ctx: Any, name: str, roles: list[str], layers: Any,
                    size: int, where: str, activation: str = "relu", scaling: float = 1.0,
                    bias: bool = True, gated: bool = False) -> int:
    """One bottleneck named ``name`` on each module playing ``roles`` in ``layers`` (a
    placement); returns how many. ``where="beside"`` reads the input of the layer's
    ``ffn_in`` modules (they all see the same input: LLaMA's gate and up projections)."""
    from autopeft.methods._common import target_modules

    holder = mask_holder(model) if gated else None
    if where == "after_ffn":
        hosts = after_ffn_hosts(model, ctx, layers)
        for host_name, kind in hosts:
            block = Bottleneck(ctx.hidden_size, size, ctx.hidden_size, activation, scaling, bias,
                               gated, holder)
            attach(model.get_submodule(host_name), name, block, kind)
        return len(hosts)
    names = target_modules(model, ctx, roles, layers, name)
    for host_name in names:
        host = model.get_submodule(host_name)
        in_dim, out_dim = dims(host)
        sources: list[nn.Module] = []
        if where == "beside":
            layer = ctx.arch.layer_path(host_name)
            sources = [model.get_submodule(n) for n in ctx.arch.find(model, ["ffn_in"])
                       if ctx.arch.layer_path(n) == layer]
            in_dim = dims(sources[0])[0]
        elif where == "serial":
            in_dim = out_dim
        block = Bottleneck(in_dim, size, out_dim, activation, scaling, bias, gated, holder)
        attach(host, name, block, where, sources)
    return len(names)


class PrefixGate(nn.Module):
    """UniPELT's gate on prefix tuning: scales one layer's virtual keys and values by one
    ``example_gate`` (as the reference: one gate shared by keys and values; ``h`` the
    attention's input).

    Prefix tuning hands the virtual keys/values to the model as a fresh key/value cache
    each forward; this pre-hook on the layer's self-attention rescales that layer's cache
    entry before the attention appends the real tokens to it."""

    def __init__(self, dim: int, cache_index: int, holder: _MaskHolder) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)
        self.cache_index = cache_index
        self.holder = holder

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is None:
            return
        cache = getattr(cache, "self_attention_cache", cache)
        h = args[0] if args else kwargs["hidden_states"]
        g = example_gate(self.linear, h, self.holder).to(h.dtype).view(-1, 1, 1, 1)
        entry = cache.layers[self.cache_index]
        # Gate the prefix as built, even when checkpointing re-runs this hook.
        keys, values = entry.__dict__.setdefault("autopeft_prefix", (entry.keys, entry.values))
        entry.keys, entry.values = keys * g, values * g


def add_prefix_gates(model: nn.Module, ctx: Any, name: str, layers: Any) -> int:
    """A ``PrefixGate`` on each self-attention module in ``layers`` (a placement)."""
    from autopeft.arch import resolve_layers

    holder = mask_holder(model)
    names = ctx.arch.find_paths(model, ctx.arch.self_attention,
                                resolve_layers(layers, ctx.num_layers))
    for attn_name in names:
        attn = model.get_submodule(attn_name)
        index = getattr(attn, "layer_idx", None)
        if index is None:
            index = ctx.arch.layer_of(attn_name)[0]
        gate = PrefixGate(ctx.hidden_size, int(index), holder)
        weight = next(model.parameters())
        gate.to(device=weight.device, dtype=weight.dtype)
        attn.add_module(name, gate)
        attn.register_forward_pre_hook(gate.pre_hook, with_kwargs=True)
    return len(names)
