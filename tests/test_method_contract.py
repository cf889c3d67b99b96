"""The contract every registered method keeps, on every model family it supports.

Methods are found in the registry, so a new method is covered as soon as it is added:
two optimiser steps change every trainable tensor and no frozen one, the loss is finite,
the saved trained tensors rebuild the same logits, and a placement restricted to layer 1
trains nothing in layer 0.
"""
from __future__ import annotations

import pytest
import torch

from autopeft.build import build, trainable_parameters
from autopeft.candidate import Candidate, MethodSpec
from autopeft.export import put_weights, trained_state
from autopeft.methods import METHODS
from autopeft.train import HOOKS_ATTR, optimizer_step
from families import FAMILIES, batch, tiny_model

# Classification models of every family a method trains them on; BitFit refuses the
# bias-less ones (test_bitfit_refuses_models_without_biases).
BIASLESS = ("llama", "t5")
CASES = [(name, fam) for name, m in METHODS.items() for fam, kind in FAMILIES.items()
         if kind in m.families and kind not in dict(m.no_classification)
         and not (name == "bitfit" and fam in BIASLESS)]


def two_steps(model: torch.nn.Module) -> list[float]:
    params = [p for _, p in trainable_parameters(model)]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    hooks = getattr(model, HOOKS_ATTR, [])
    model.train()
    losses = []
    for step in range(2):
        loss = model(**batch(seed=step)).loss
        loss.backward()
        losses.append(loss.item())
        optimizer_step(opt, hooks, step)
        opt.zero_grad()
    return losses


def smooth(name: str) -> dict:
    """GELU for bottleneck methods: with the papers' ReLU, the 2-unit bottleneck of a tiny
    random model can be dead for a whole batch, so no gradient reaches its down-projection
    (a property of ReLU, not of the plumbing this test checks)."""
    return {"activation": "gelu"} if "activation" in METHODS[name].params() else {}


@pytest.mark.parametrize("name,family", CASES)
def test_training_changes_exactly_the_trainable_tensors(name: str, family: str) -> None:
    torch.manual_seed(0)
    model = build(tiny_model(family), Candidate([MethodSpec(name, smooth(name))], 1e-2),
                  total_steps=10)
    trainable = {n for n, _ in trainable_parameters(model)}
    assert trainable, "a method must train something"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = two_steps(model)
    assert all(torch.isfinite(torch.tensor(losses)))
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        if n in trainable:
            assert changed, f"{name} on {family}: trainable {n} did not change"
        else:
            assert not changed, f"{name} on {family}: frozen {n} changed"


def scrambled(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every trainable tensor redrawn: ``build`` draws the same init from the
    candidate's seed, so only the saved tensors may make a rebuilt model equal again."""
    with torch.no_grad():
        for _, p in trainable_parameters(model):
            p.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("name,family", CASES)
def test_saved_tensors_rebuild_the_same_logits(name: str, family: str) -> None:
    base = tiny_model(family)
    cand = Candidate([MethodSpec(name, {})], 1e-2, seed=3)
    torch.manual_seed(0)
    trained = build(base, cand, total_steps=10)
    two_steps(trained)
    trained.eval()
    state = trained_state(trained)
    rebuilt = scrambled(build(base, cand, total_steps=10))
    put_weights(rebuilt, state)
    rebuilt.eval()
    inputs = {k: v for k, v in batch(seed=9).items() if k != "labels"}
    with torch.no_grad():
        assert torch.allclose(trained(**inputs).logits, rebuilt(**inputs).logits, atol=1e-5)


PLACED = [(name, fam) for name, fam in CASES if "layers" in METHODS[name].params()]


@pytest.mark.parametrize("name,family", PLACED)
def test_layer_placement_keeps_other_layers_frozen(name: str, family: str) -> None:
    base = tiny_model(family)
    model = build(base, Candidate([MethodSpec(name, {"layers": [1]})], 1e-3), total_steps=10)
    arch_of = __import__("autopeft.arch", fromlist=["arch_for"]).arch_for(base.config)
    layers = set()
    for n, _ in trainable_parameters(model):
        where = arch_of.layer_of(n.rsplit(".", 1)[0].replace("base_model.model.", ""))
        if where:
            layers.add(where[0])
    assert layers == {1}, f"{name} on {family}: trainable tensors in layers {layers}"
