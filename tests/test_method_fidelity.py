"""Methods as their papers and reference code define them (issue 13): parameters that train
vs parameters stored, ProPETL's masks (bits, own learning rate, they flip), Houlsby's layer
norms, Pfeiffer's placement after the FFN's LayerNorm, UniPELT's gates.

Tiny BERT: hidden H=32, L=2 layers, 2 labels; the task head Linear(H, 2) trains always.
"""
from __future__ import annotations

import math

import pytest
import torch

from autopeft.build import build, count_stored, count_trainable, trainable_parameters
from autopeft.candidate import Candidate, MethodSpec
from autopeft.search.constraints import predict
from autopeft.train import _optimizer
from autopeft.validate import skeleton
from families import batch, tiny_model

H, L, LABELS = 32, 2, 2
HEAD = H * LABELS + LABELS


def built(name: str, family: str = "bert", lr: float = 1e-3, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(tiny_model(family), Candidate([MethodSpec(name, params)], lr), total_steps=10)


def counts(name: str, **params) -> tuple[int, int]:
    model = built(name, **params)
    return count_trainable(model), count_stored(model)


def bits(entries: int) -> int:
    """A mask of ``entries`` bits in 32-bit-parameter equivalents."""
    return math.ceil(entries / 32)


# --- trained vs stored --------------------------------------------------------------------

def test_propetl_stores_its_masks_as_bits() -> None:
    b = 4
    prototype = H * b + b + b * H + H  # down and up, biases shared
    trained, stored = counts("propetl", bottleneck=b)
    assert trained == prototype + L * 2 * H * b + HEAD  # a 32-bit score per mask entry
    assert stored == prototype + L * 2 * bits(H * b) + HEAD
    # Stored, ProPETL is now smaller than one Pfeiffer adapter per layer of the same width.
    assert stored < counts("adapter", bottleneck=b)[1]


def test_propetl_lora_variant_shares_one_prototype_per_role() -> None:
    r = 4
    prototype = 2 * (r * H + H * r)  # query and value: A (r x H), B (H x r)
    trained, stored = counts("propetl", variant="lora", r=r)
    assert trained == prototype + L * 2 * (2 * H * r) + HEAD
    assert stored == prototype + L * 2 * 2 * bits(H * r) + HEAD


@pytest.mark.parametrize("projection", [False, True])
def test_prefix_stores_the_prefix_values_not_the_mlp(projection: bool) -> None:
    p, e = 5, 16
    values = p * L * 2 * H  # a key and a value vector per virtual token per layer
    trained, stored = counts("prefix", num_virtual_tokens=p, prefix_projection=projection,
                             encoder_hidden_size=e)
    mlp = p * H + (H * e + e) + (e * L * 2 * H + L * 2 * H)  # embedding, Linear, tanh, Linear
    assert trained == (mlp if projection else values) + HEAD
    assert stored == values + HEAD


def test_prediction_on_the_meta_skeleton_agrees_with_both_counts() -> None:
    base = tiny_model("bert")
    for params in ({"bottleneck": 4}, {"variant": "lora", "r": 4}):
        cand = Candidate([MethodSpec("propetl", params)], 1e-3)
        model = build(base, cand, total_steps=10)
        pred = predict(skeleton(base), base, cand, 10)
        assert pred.trainable_params == count_stored(model) < count_trainable(model)
        assert pred.trained_params == count_trainable(model)


# --- ProPETL training mechanics -----------------------------------------------------------

def mask_scores(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if ".propetl_mask.scores." in n]


def test_propetl_mask_scores_get_their_own_learning_rate() -> None:
    model = built("propetl", lr=1e-4, bottleneck=4)
    groups = _optimizer(model, 1e-4, 0.01).param_groups
    scores = {id(p) for p in mask_scores(model)}
    mask_groups = [g for g in groups if {id(p) for p in g["params"]} & scores]
    assert [g["lr"] for g in mask_groups] == [3e-3]  # the reference's adapter mask rate
    assert {id(p) for p in mask_groups[0]["params"]} == scores
    others = [p for g in groups if g not in mask_groups for p in g["params"]]
    assert others and all(g["lr"] == 1e-4 for g in groups if g not in mask_groups)
    assert len(others) + len(scores) == len(trainable_parameters(model))
    lora = built("propetl", variant="lora", r=4)
    assert 3e-2 in {g["lr"] for g in _optimizer(lora, 1e-4, 0.0).param_groups}


def flipped_share(mask_lr: float | None, steps: int = 10) -> float:
    """Share of mask entries that changed after ``steps`` steps at prototype lr 1e-4."""
    model = built("propetl", lr=1e-4, bottleneck=4, activation="gelu", mask_lr=mask_lr)
    masks = [m for n, m in model.named_modules() if n.endswith("propetl_mask")]
    before = [m.mask(s).detach().clone() for m in masks for s in m.scores]
    opt = _optimizer(model, 1e-4, 0.0)
    model.train()
    for step in range(steps):
        model(**batch(seed=step)).loss.backward()
        opt.step()
        opt.zero_grad()
    after = [m.mask(s).detach() for m in masks for s in m.scores]
    changed = sum(int((a != b).sum()) for a, b in zip(after, before))
    return changed / sum(b.numel() for b in before)


def test_propetl_masks_flip_within_a_few_steps() -> None:
    """``up`` starts at 0, so the masks get no gradient at first; still, at the reference's
    mask rate some entries flip within 10 steps, at the prototype's rate (the old
    behaviour) none do."""
    fast, slow = flipped_share(None), flipped_share(1e-4)
    assert fast > 0
    assert slow == 0


def test_propetl_masks_keep_the_top_share_of_score_magnitudes() -> None:
    model = built("propetl", bottleneck=4, sparsity=0.75)
    mask = next(m for n, m in model.named_modules() if n.endswith("propetl_mask"))
    scores = mask.scores[0]
    kept = mask.mask(scores).detach().bool()
    assert int(kept.sum()) == round(0.25 * scores.numel())
    assert scores.abs()[kept].min() >= scores.abs()[~kept].max()
    assert (scores < 0).any()  # Kaiming-uniform, symmetric: magnitudes rank, not values


# --- serial adapters --------------------------------------------------------------------------

def test_houlsby_trains_the_layer_norms_of_its_layers() -> None:
    model = built("adapter", placement="houlsby", bottleneck=4, layers=[1])
    norms = {n for n, p in model.named_parameters() if "LayerNorm" in n and p.requires_grad}
    assert norms == {f"bert.encoder.layer.1.{m}.LayerNorm.{w}" for m in ("attention.output", "output")
                     for w in ("weight", "bias")}
    pfeiffer = built("adapter", placement="pfeiffer", bottleneck=4)
    assert not any("LayerNorm" in n for n, _ in trainable_parameters(pfeiffer)
                   if ".adapter." not in n)


def test_pfeiffer_adapter_reads_after_the_ffn_layernorm_and_adds_before_it() -> None:
    """AdapterHub's Pfeiffer config: ``x = LN(s)``, output ``LN(s + f(x))`` with ``s`` the
    FFN output plus the residual. The old placement fed the FFN output (before the norm)."""
    model = built("adapter", bottleneck=4, layers=[0])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".adapter." in n:
                p.normal_(std=0.3)
    norm = model.get_submodule("bert.encoder.layer.0.output.LayerNorm")
    adapter = norm.get_submodule("adapter")
    seen: dict[str, torch.Tensor] = {}
    norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("s", a[0]))
    adapter.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    norm.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out))
    with torch.no_grad():
        model(**{k: v for k, v in batch().items() if k != "labels"})
        x = torch.nn.functional.layer_norm(seen["s"], (H,), norm.weight, norm.bias, norm.eps)
        assert torch.allclose(seen["x"], x, atol=1e-5)  # the adapter reads the normed sum
        expected = norm.forward(seen["s"] + adapter(x))
        assert torch.allclose(seen["out"], expected, atol=1e-5)


@pytest.mark.parametrize("name", ["adapter", "parallel_adapter", "mam", "unipelt", "propetl"])
def test_bottleneck_methods_default_to_relu(name: str) -> None:
    from autopeft.methods import make_spec

    assert make_spec(name, {}).activation == "relu"


# --- UniPELT as its reference code -----------------------------------------------------------

def test_unipelt_gates_match_the_reference_shapes() -> None:
    model = built("unipelt", r=4, bottleneck=4)
    modules = dict(model.named_modules())
    loras = [m for n, m in modules.items() if n.endswith("unipelt_lora")]
    prefix_gates = [m for n, m in modules.items() if n.endswith("unipelt_prefix_gate")]
    adapters = [m for n, m in modules.items() if n.endswith("unipelt_adapter")]
    assert len(loras) == 2 * L and len(prefix_gates) == len(adapters) == L
    assert all(m.gate.weight.shape == (1, H) and m.scaling == 1.0 for m in loras + adapters)
    assert all(g.linear.weight.shape == (1, H) for g in prefix_gates)  # keys and values share
    assert adapters[0] is model.get_submodule(
        "base_model.bert.encoder.layer.0.output.LayerNorm.unipelt_adapter")  # Pfeiffer-placed
    encoder = next(iter(model.prompt_encoder.values()))
    assert encoder.transform[0].out_features == 512  # the reference's prefix MLP (mid_dim)


def test_unipelt_gate_is_one_value_per_example() -> None:
    model = built("unipelt", r=4, bottleneck=4)
    lora = model.get_submodule("base_model.bert.encoder.layer.0.attention.self.query.unipelt_lora")
    with torch.no_grad():
        lora.up.weight.normal_()
        lora.gate.weight.normal_()
        lora.holder.mask = None
        x = torch.randn(3, 7, H)
        ungated = lora.up(lora.down(x))
        ratio = lora(x) / ungated
    # The gate scales every token of an example alike, and differs between examples.
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(ratio[0, 0, 0], ratio[1, 0, 0])
