"""Additive methods (adapters, prefix, prompt, P-tuning) and hybrids (MAM, UniPELT, free
combinations) on the tiny models: hand counts, prefix tuning with the installed
transformers, padding, hooks that survive deepcopy, hybrids that train and reload, and
peft's own format for the peft-native ones.

Tiny BERT: hidden H=32, L=2 layers, 2 labels. The task head (Linear(H, 2)) trains with
every method, as in ``build.py``.
"""
from __future__ import annotations

import copy

import pytest
import torch

from autopeft.build import build, count_trainable, trainable_parameters
from autopeft.candidate import Candidate, MethodSpec
from autopeft.errors import UserError
from autopeft.export import put_weights, trained_state
from autopeft.methods import check_combination
from families import batch, tiny_model
from test_method_contract import scrambled, two_steps

H, L, LABELS = 32, 2, 2
HEAD = H * LABELS + LABELS


def built(*methods: tuple[str, dict], family: str = "bert", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cand = Candidate([MethodSpec(name, params) for name, params in methods], 1e-2, seed=3)
    return build(tiny_model(family), cand, total_steps=10)


def count(name: str, **params) -> int:
    return count_trainable(built((name, params)))


def inputs(seed: int = 9) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch(seed=seed).items() if k != "labels"}


def bottleneck(b: int, gated: bool = False) -> int:
    """down (H*b + b) + up (b*H + H), plus a gate Linear(H, 1) when gated."""
    return 2 * H * b + b + H + (H + 1 if gated else 0)


# --- hand counts -------------------------------------------------------------------------

def test_serial_adapter_counts() -> None:
    # reduction_factor 16: bottleneck 32 / 16 = 2; Pfeiffer: one adapter per layer (FFN).
    assert count("adapter") == L * bottleneck(2) + HEAD
    # Houlsby: after attention output and after FFN output, and the layer's two LayerNorms
    # (weight and bias, H each) train.
    assert count("adapter", placement="houlsby", bottleneck=4) \
        == L * (2 * bottleneck(4) + 2 * 2 * H) + HEAD
    assert count("adapter", bottleneck=4, layers=[1]) == bottleneck(4) + HEAD


def test_parallel_adapter_counts() -> None:
    assert count("parallel_adapter", bottleneck=4, scaling=4.0) == L * bottleneck(4) + HEAD


def test_prefix_counts() -> None:
    p, e = 5, 16
    # A key and a value vector per virtual token per layer.
    assert count("prefix", num_virtual_tokens=p) == p * L * 2 * H + HEAD
    # Projection: embeddings P*H, then Linear(H, e), tanh, Linear(e, L*2*H).
    assert count("prefix", num_virtual_tokens=p, prefix_projection=True, encoder_hidden_size=e) \
        == p * H + (H * e + e) + (e * L * 2 * H + L * 2 * H) + HEAD


def test_prompt_and_ptuning_counts() -> None:
    p, e = 5, 16
    assert count("prompt", num_virtual_tokens=p) == p * H + HEAD
    # P-tuning's MLP encoder: Linear(H, e), ReLU, Linear(e, e), ReLU, Linear(e, H) (the LSTM,
    # its default, is counted in test_method_fidelity_b.py).
    assert count("ptuning", num_virtual_tokens=p, encoder_hidden_size=e, encoder_type="MLP") \
        == p * H + (H * e + e) + (e * e + e) + (e * H + H) + HEAD


def test_hybrid_counts() -> None:
    p, b, r = 5, 4, 4
    prefix = p * L * 2 * H
    assert count("mam", num_virtual_tokens=p, bottleneck=b) == prefix + L * bottleneck(b) + HEAD
    # UniPELT per layer: gated LoRA on query and value (r*H + H*r, no biases, gate H+1),
    # gated adapter after the FFN, one prefix gate Linear(H, 1) (keys and values share it).
    lora = 2 * (r * H + H * r + H + 1)
    per_layer = lora + bottleneck(b, gated=True) + (H + 1)
    assert count("unipelt", r=r, num_virtual_tokens=p, bottleneck=b, prefix_projection=False) \
        == prefix + L * per_layer + HEAD


# --- prefix tuning with the installed transformers ----------------------------------------

@pytest.mark.parametrize("family", ["bert", "roberta", "llama", "gpt2"])
def test_prefix_tuning_classifies_sequences(family: str) -> None:
    """transformers >= 5.24 renamed past_key_values to cache; peft 0.21.2 rejected the
    model. With the shim the prefix reaches every layer: it moves the logits, trains,
    and extra right padding changes nothing."""
    model = built(("prefix", {"num_virtual_tokens": 4}), family=family)
    model.eval()
    base = tiny_model(family)
    with torch.no_grad():
        assert not torch.allclose(model(**inputs()).logits, base(**inputs()).logits, atol=1e-4)
    losses = two_steps(model)
    assert all(torch.isfinite(torch.tensor(losses)))
    model.eval()
    assert_padding_invariant(model)


@pytest.mark.parametrize("name", ["prompt", "ptuning", "prefix", "adapter", "parallel_adapter",
                                  "mam", "unipelt"])
def test_right_padding_does_not_change_logits(name: str) -> None:
    """Virtual tokens change the sequence length: the mask must still hide the pads."""
    model = built((name, {}))
    for p in model.parameters():  # make every added module do something
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    model.eval()
    assert_padding_invariant(model)


def assert_padding_invariant(model: torch.nn.Module) -> None:
    one = {k: v[1:2] for k, v in inputs().items()}
    padded = {k: torch.cat([v, torch.zeros(1, 3, dtype=v.dtype)], dim=1) for k, v in one.items()}
    with torch.no_grad():
        assert torch.allclose(model(**one).logits, model(**padded).logits, atol=1e-5)


# --- own modules: registered, copied with the model, live ---------------------------------

def test_adapters_are_submodules_and_survive_deepcopy() -> None:
    # GELU: a 2-unit ReLU bottleneck of the tiny model can be dead for these inputs, and then
    # scaling its up-projection changes nothing (the test is about the copy, not the ReLU).
    model = built(("adapter", {"placement": "houlsby", "activation": "gelu"}),
                  ("parallel_adapter", {"activation": "gelu"}))
    names = [n for n, _ in trainable_parameters(model)]
    assert "bert.encoder.layer.0.attention.output.dense.adapter.up.weight" in names
    assert "bert.encoder.layer.1.output.dense.parallel_adapter.down.weight" in names
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    model.eval()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.allclose(model(**inputs()).logits, twin(**inputs()).logits)
        # The copy's hooks use the copy's adapters, not the original's.
        twin.get_submodule("bert.encoder.layer.1.output.dense.adapter").up.weight.mul_(5)
        assert not torch.allclose(model(**inputs()).logits, twin(**inputs()).logits)


def test_a_fresh_adapter_computes_the_base_model() -> None:
    """Up-projections start at zero: adding an adapter changes nothing before training."""
    model = built(("adapter", {"placement": "houlsby"}), ("parallel_adapter", {}))
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**inputs()).logits, tiny_model("bert")(**inputs()).logits,
                              atol=1e-6)


@pytest.mark.parametrize("gate", ["unipelt_lora", "unipelt_adapter", "unipelt_prefix_gate"])
def test_unipelt_gates_are_live(gate: str) -> None:
    model = built(("unipelt", {}))
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.3)
    model.eval()
    with torch.no_grad():
        before = model(**inputs()).logits
        for name, module in model.named_modules():
            if name.endswith(gate):
                lin = module.linear if gate == "unipelt_prefix_gate" else module.gate
                lin.bias.fill_(-30.0)  # gate closed
        assert not torch.allclose(before, model(**inputs()).logits, atol=1e-4)


# --- free combinations --------------------------------------------------------------------

THREE = (("lora", {"r": 4}), ("parallel_adapter", {"bottleneck": 4}),
         ("prefix", {"num_virtual_tokens": 4}))


def test_three_method_hybrid_trains_and_reloads() -> None:
    """Listed in any order, prefix becomes the outer PeftModel, LoRA is injected beside it
    and stays trainable, the adapter is hooked in: all of them train, nothing else does,
    and the saved tensors rebuild the same logits."""
    model = built(*THREE)
    count_ = count_trainable(model)
    assert count_ == 2 * L * 4 * (H + H) + L * bottleneck(4) + 4 * L * 2 * H + HEAD
    trainable = {n for n, _ in trainable_parameters(model)}
    assert any("lora_A" in n for n in trainable) and any("prompt_encoder" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(torch.isfinite(torch.tensor(two_steps(model))))
    for n, p in model.named_parameters():
        assert (not torch.equal(before[n], p.detach())) == (n in trainable), n
    model.eval()
    rebuilt = scrambled(built(*THREE))
    put_weights(rebuilt, trained_state(model))
    rebuilt.eval()
    with torch.no_grad():
        assert torch.allclose(model(**inputs()).logits, rebuilt(**inputs()).logits, atol=1e-5)


@pytest.mark.parametrize("combo", [("lora", "ia3"), ("prompt", "lora"), ("mam", "lora"),
                                   ("unipelt", "ia3", "adapter")])
def test_combinations_train_every_trainable_tensor(combo: tuple[str, ...]) -> None:
    """peft's injection of a second adapter switched off the first one and the task head's
    trained copy (``attach_peft`` restores them): every part must train."""
    model = built(*[(name, {}) for name in combo])
    trainable = {n for n, _ in trainable_parameters(model)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    two_steps(model)
    for n, p in model.named_parameters():
        assert (not torch.equal(before[n], p.detach())) == (n in trainable), n


def test_injected_lora_is_active_beside_prefix() -> None:
    model = built(("prefix", {"num_virtual_tokens": 4}), ("lora", {"r": 4}))
    model.eval()
    with torch.no_grad():
        before = model(**inputs()).logits
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.5)
        assert not torch.allclose(before, model(**inputs()).logits, atol=1e-4)


@pytest.mark.parametrize("pair", [("prefix", "mam"), ("prompt", "ptuning"), ("unipelt", "prefix"),
                                  ("mam", "unipelt")])
def test_two_prompt_learning_methods_are_rejected(pair: tuple[str, str]) -> None:
    with pytest.raises(UserError, match=f"'{pair[0]}' cannot be combined with '{pair[1]}'"):
        check_combination(["lora", *pair])


def test_bad_specs_are_user_errors() -> None:
    from autopeft.methods import make_spec

    for name, params in [("adapter", {"placement": "middle"}), ("adapter", {"bottleneck": 0}),
                         ("parallel_adapter", {"activation": "softmax"}),
                         ("prefix", {"num_virtual_tokens": 0}), ("ptuning", {"encoder_type": "GRU"}),
                         ("unipelt", {"lora_targets": ["nowhere"]}), ("mam", {"scaling": -1})]:
        with pytest.raises(UserError):
            make_spec(name, params)


# --- peft's own format ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["prefix", "prompt", "ptuning"])
def test_peft_native_export_reloads_with_peft(name: str, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    tiny_model("bert").save_pretrained(tmp_path / "base")
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    torch.manual_seed(0)
    model = build(base, Candidate([MethodSpec(name, {"num_virtual_tokens": 4})], 1e-2))
    two_steps(model)
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    fresh = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(model(**inputs()).logits, reloaded(**inputs()).logits, atol=1e-5)


@pytest.mark.parametrize("name,family", [("prefix", "bert"), ("prefix", "llama"),
                                         ("unipelt", "bert"), ("parallel_adapter", "bert")])
def test_gradient_checkpointing_gives_the_same_gradients(name: str, family: str) -> None:
    """Checkpointing re-runs each layer: the prefix must not be appended (or gated) twice,
    and transformers must not drop the prefix cache of a checkpointed layer."""
    from autopeft.train import _checkpointing

    grads = []
    for checkpoint in (False, True):
        model = built((name, {}), family=family)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        for p in model.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.1)
        if checkpoint:
            _checkpointing(model)
        model.train()
        model(**batch()).loss.backward()
        grads.append({n: p.grad for n, p in trainable_parameters(model)})
    for n, g in grads[0].items():
        assert torch.allclose(g, grads[1][n], atol=1e-6), n


def test_stock_peft_still_needs_the_prefix_shim() -> None:
    """When this fails, peft or transformers fixed prefix tuning for sequence
    classification: ``_peft_compat`` can go."""
    from peft import PeftModelForSequenceClassification as Cls

    model = built(("prefix", {}))
    original = getattr(Cls, "_autopeft_original_prefix_forward")
    with pytest.raises(ValueError, match="does not support past key values"):
        original(model, **inputs())
