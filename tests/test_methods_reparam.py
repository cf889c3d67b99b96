"""AdaLoRA, QLoRA, LoHa, LoKr, VeRA, Child-Tuning and ProPETL: hand counts of trainable
parameters on the tiny BERT (hidden H=32, 2 layers, FFN 64, 2 labels), AdaLoRA's shrinking
rank budget, Child-Tuning's masks, QLoRA's configuration errors. The contract every method
keeps (training changes exactly the trainable tensors, saved tensors rebuild the logits,
placement) is in test_method_contract.py."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from autopeft.build import build, count_trainable, trainable_parameters
from autopeft.candidate import Candidate, MethodSpec
from autopeft.data import Encoded
from autopeft.errors import UserError
from autopeft.methods import make_spec
from autopeft.train import HOOKS_ATTR, TrainSettings, optimizer_step, total_steps, train
from families import VOCAB, batch, tiny_model

H, L, F, LABELS = 32, 2, 64, 2
HEAD = H * LABELS + LABELS  # BERT's classifier Linear(H, 2): trained by every method


def built(name: str, family: str = "bert", steps: int | None = 10, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(tiny_model(family), Candidate([MethodSpec(name, params)], 1e-3), total_steps=steps)


def count(name: str, **params) -> int:
    return count_trainable(built(name, **params))


# --- hand counts ------------------------------------------------------------------------

def test_adalora_counts_a_b_and_e_at_the_initial_rank() -> None:
    # Per module: A (init_r x in) + B (out x init_r) + E (init_r); query and value, 2 layers.
    r = 4
    assert count("adalora", init_r=r, target_r=2) == L * 2 * (r * H + H * r + r) + HEAD


def test_loha_counts_two_low_rank_pairs_per_module() -> None:
    r = 4  # hada_w1_a (out x r), hada_w1_b (r x in), and the same for w2
    assert count("loha", r=r) == L * 2 * (2 * r * (H + H)) + HEAD
    assert count("loha", r=r, targets=["ffn_in"], layers=[0]) == 2 * r * (F + H) + HEAD


def test_lokr_counts_kronecker_factors() -> None:
    # 32 factors as 4 x 8: W1 is (4 x 4); W2 (8 x 8) is full when r >= 8 / 2, else W2a W2b.
    w1 = 4 * 4
    assert count("lokr", r=4) == L * 2 * (w1 + 8 * 8) + HEAD
    assert count("lokr", r=2) == L * 2 * (w1 + 8 * 2 + 2 * 8) + HEAD


def test_vera_counts_the_scaling_vectors_not_the_shared_buffers() -> None:
    r = 16  # per module: d (r) and b (out); A (r x in) and B (out x r) are shared buffers
    model = built("vera", r=r)
    assert count_trainable(model) == L * 2 * (r + H) + HEAD
    buffers = {n: b for n, b in model.named_buffers() if "vera_A" in n or "vera_B" in n}
    assert sum(b.numel() for b in buffers.values()) == r * H + H * r  # shared: one pair


def test_child_tuning_counts_the_entries_its_mask_lets_through() -> None:
    p = 0.3

    def kept(n: int) -> int:
        return max(1, round(p * n))

    # One BERT layer: q, k, v, attn-out weights (H x H) and biases (H); 2 LayerNorms (H, H);
    # FFN-in weight (F x H) and bias (F); FFN-out weight (H x F) and bias (H).
    layer = (4 * kept(H * H) + 4 * kept(H) + 4 * kept(H) + kept(F * H) + kept(F)
             + kept(H * F) + kept(H))
    assert layer == 4 * 307 + 4 * 10 + 4 * 10 + 614 + 19 + 614 + 10
    numel = 4 * (H * H + H) + 4 * H + F * H + F + H * F + H  # 8544
    # F: the expected entries of each tensor per step; D: one global top share.
    frozen = dict(reserve_p=p, embeddings="frozen")
    assert count("child_tuning", mode="F", layers=[1], **frozen) == layer + HEAD
    assert count("child_tuning", mode="F", **frozen) == L * layer + HEAD
    assert count("child_tuning", mode="D", layers=[1], **frozen) == kept(numel) + HEAD
    assert count("child_tuning", mode="D", **frozen) == kept(L * numel) + HEAD
    assert count("child_tuning", mode="D", rule="per_tensor", **frozen) == L * layer + HEAD
    # The optimiser still gets every weight of the layers (the masks act on gradients).
    model = built("child_tuning", reserve_p=p, layers=[1], embeddings="frozen")
    assert sum(t.numel() for _, t in trainable_parameters(model)) == numel + HEAD
    # As the reference, D trains the embeddings and pooler whole; they count whole.
    outside = sum(t.numel() for n, t in tiny_model("bert").named_parameters()
                  if ".layer." not in n and not n.startswith("classifier"))
    assert count("child_tuning", mode="D", reserve_p=p, layers=[1]) == kept(numel) + outside + HEAD


def test_propetl_counts_the_prototype_once_and_scores_per_layer() -> None:
    b = 4  # prototype: down (H x b + b) and up (b x H + H); per layer one score per weight
    prototype = H * b + b + b * H + H
    assert count("propetl", bottleneck=b) == prototype + L * 2 * H * b + HEAD
    assert count("propetl", bottleneck=b, layers=[1]) == prototype + 2 * H * b + HEAD


def test_qlora_counts_lora_and_quantises_every_linear_outside_the_head() -> None:
    bnb = pytest.importorskip("bitsandbytes")

    r = 4
    model = built("qlora", r=r, targets=["query", "value"])
    assert count_trainable(model) == L * 2 * r * (H + H) + HEAD
    quantised = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantised) == L * 6 + 1  # q, k, v, attn-out, FFN in/out per layer; pooler
    head = model.get_base_model().classifier.modules_to_save["default"]
    assert type(head) is torch.nn.Linear


# --- behaviour --------------------------------------------------------------------------

def tiny_train_data(n: int, seed: int = 0) -> Encoded:
    rng = np.random.default_rng(seed)
    return Encoded(input_ids=[rng.integers(3, VOCAB, size=8) for _ in range(n)],
                   token_type_ids=None, labels=rng.integers(0, 2, size=n))


def test_adalora_rank_budget_shrinks_to_its_target_during_training() -> None:
    from autopeft.methods.adalora import rank_budget

    settings = TrainSettings(epochs=1, batch_size=4, warmup_ratio=0.0)
    data = tiny_train_data(48)
    steps = total_steps(len(data), settings)  # 12
    model = built("adalora", steps=steps, init_r=6, target_r=2)
    modules = L * 2  # query and value
    assert rank_budget(model) == 0  # E starts at zero: no singular value in use yet
    result = train(model, data, lambda m: {"score": 0.0}, 1e-2, 0, settings, pad_id=0)
    assert result.steps == steps and np.isfinite(result.final_loss)
    # The final allocation keeps target_r singular values per module on average.
    assert rank_budget(model) == modules * 2
    pattern = model.peft_config["default"].rank_pattern
    assert sum(sum(v) for v in pattern.values()) == modules * 2


def test_adalora_adds_its_orthogonality_regulariser_to_the_loss() -> None:
    model = built("adalora", init_r=4, target_r=2)
    model.train()
    with torch.no_grad():
        with_reg = model(**batch()).loss
        model.peft_config["default"].orth_reg_weight = 0.0
        without = model(**batch()).loss
    assert with_reg > without


def test_adalora_needs_enough_training_steps() -> None:
    # Built without a length (a space check on a meta skeleton, a load): fine, but it
    # refuses to train.
    model = built("adalora", steps=None)
    with pytest.raises(UserError, match="without the number of training steps"):
        one_step(model, 0)
    with pytest.raises(UserError, match="too few"):
        built("adalora", steps=1)
    with pytest.raises(UserError, match="target_r .* must be smaller"):
        make_spec("adalora", {"init_r": 4, "target_r": 4})


def one_step(model: torch.nn.Module, step: int, seed: int = 0, adam: bool = False) -> None:
    """One optimiser step with the method's hooks: plain SGD (no momentum, no decay: only
    the entries with a gradient move), or Adam (tiny gradients move their entries too)."""
    params = [p for _, p in trainable_parameters(model)]
    opt = torch.optim.Adam(params, lr=1e-2) if adam else torch.optim.SGD(params, lr=0.1)
    model.train()
    model(**batch(seed=seed)).loss.backward()
    optimizer_step(opt, getattr(model, HOOKS_ATTR, []), step)
    opt.zero_grad()


def layer_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if ".encoder.layer.1." in n and n.endswith("weight") and p.ndim == 2}


def test_child_tuning_f_leaves_about_one_minus_p_of_the_entries_unchanged() -> None:
    p = 0.3
    model = built("child_tuning", mode="F", reserve_p=p, layers=[1], embeddings="frozen")
    before = layer_weights(model)
    one_step(model, 0)
    after = layer_weights(model)
    changed = sum(int((after[n] != before[n]).sum()) for n in before)
    total = sum(t.numel() for t in before.values())
    assert abs(changed / total - p) < 0.03  # 8192 entries: a Bernoulli(0.3) share
    # A fresh mask next step: entries outside the first mask change too.
    one_step(model, 1, seed=1)
    changed_twice = sum(int((layer_weights(model)[n] != before[n]).sum()) for n in before)
    assert changed_twice > changed * 1.4


def test_child_tuning_d_per_tensor_rule_keeps_each_tensors_top_share() -> None:
    p = 0.3
    model = built("child_tuning", mode="D", rule="per_tensor", reserve_p=p, layers=[1],
                  embeddings="frozen")
    hook = getattr(model, HOOKS_ATTR)[0]
    hook.before_training(model, iter([batch(seed=5)]))
    for mask, param in zip(hook.masks, hook.params):
        assert int(mask.sum()) == max(1, round(p * param.numel()))
    before = layer_weights(model)
    for step in (0, 1):
        one_step(model, step, seed=step)
    by_id = {id(param): mask for param, mask in zip(hook.params, hook.masks)}
    params = dict(model.named_parameters())
    after = layer_weights(model)
    for n in before:  # only entries inside the fixed mask changed
        moved = after[n] != before[n]
        assert not (moved & ~by_id[id(params[n])]).any(), n
        assert moved.any(), n


def test_child_tuning_rejects_bad_settings() -> None:
    with pytest.raises(UserError, match="mode must be one of D, F"):
        make_spec("child_tuning", {"mode": "E"})
    with pytest.raises(UserError, match="reserve_p must be in"):
        make_spec("child_tuning", {"reserve_p": 0})
    with pytest.raises(UserError, match="embeddings must be one of"):
        make_spec("child_tuning", {"embeddings": "some"})
    with pytest.raises(UserError, match="fisher_batches must be a positive integer"):
        make_spec("child_tuning", {"fisher_batches": 0})
    model = built("child_tuning", mode="D")
    with pytest.raises(RuntimeError, match="no Fisher pass"):
        one_step(model, 0)


def test_propetl_layers_use_different_masks_of_one_prototype() -> None:
    model = built("propetl", bottleneck=4, sparsity=0.5)
    masks = [m for n, m in model.named_modules() if n.endswith("propetl_mask")]
    assert len(masks) == L and masks[0].prototype is masks[1].prototype
    a, b = (m.mask(m.scores[0]).detach() for m in masks)
    assert int(a.sum()) == int(b.sum()) == H * 4 // 2
    assert not torch.equal(a, b)


def test_lokr_and_loha_refuse_gpt2_conv1d_but_run_on_llama() -> None:
    with pytest.raises(UserError, match="Conv1D"):
        built("loha", family="gpt2")
    with pytest.raises(UserError, match="Conv1D"):
        built("lokr", family="gpt2")
    for name in ("loha", "lokr"):
        model = built(name, family="llama")
        assert torch.isfinite(model(**batch()).loss)


# --- QLoRA configuration ----------------------------------------------------------------

def test_qlora_configuration_errors(monkeypatch) -> None:
    import sys

    with pytest.raises(UserError, match="quant_type must be one of nf4, fp4"):
        make_spec("qlora", {"quant_type": "int4"})
    with pytest.raises(UserError, match="compute_dtype must be one of"):
        make_spec("qlora", {"compute_dtype": "fp8"})
    if not torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes"):
        with pytest.raises(UserError, match="bf16 needs CUDA"):
            built("qlora", compute_dtype="bf16")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'autopeft\[qlora\]'"):
        built("qlora")


def test_qlora_trains_lora_on_a_4bit_base_on_cpu() -> None:
    bnb = pytest.importorskip("bitsandbytes")

    model = built("qlora", r=4, targets=["query", "value"])
    layer = model.get_base_model().bert.encoder.layer[0].attention.self.query.base_layer
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.dtype == torch.uint8
    assert layer.weight.quant_state.quant_type == "nf4"
    packed = layer.weight.detach().clone()
    before = {n: p.detach().clone() for n, p in trainable_parameters(model)}
    one_step(model, 0, adam=True)
    one_step(model, 1, seed=1, adam=True)
    assert torch.equal(layer.weight, packed)
    assert all(not torch.equal(before[n], p) for n, p in trainable_parameters(model))
