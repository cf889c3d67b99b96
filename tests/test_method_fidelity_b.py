"""Fidelity to each method's reference: Child-Tuning D as alibaba/AliceMind's ChildTuning
(Fisher over the training data before training, one global threshold), QLoRA on peft's
4-bit LoRA layers (merge + reload), prompt methods on T5 and decoder language models, and
P-tuning's LSTM encoder against peft's own count."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autopeft.build import build, count_trainable, trainable_parameters
from autopeft.candidate import Candidate, MethodSpec
from autopeft.data import Encoded
from autopeft.errors import UserError
from autopeft.export import put_weights, trained_state
from autopeft.space import load_space, parse_space
from autopeft.train import HOOKS_ATTR, TrainSettings, total_steps, train
from autopeft.validate import fit_space
from families import VOCAB, batch, tiny_model
from lm_fixtures import instruct_file, tiny_lm, translation_data

# --- Child-Tuning D ---------------------------------------------------------------------


def tiny_data(n: int, seed: int = 0) -> Encoded:
    rng = np.random.default_rng(seed)
    return Encoded(input_ids=[rng.integers(3, VOCAB, size=8) for _ in range(n)],
                   token_type_ids=None, labels=rng.integers(0, 2, size=n))


def test_child_tuning_d_follows_the_reference() -> None:
    """Fisher pass first (no training step spent), one global top-p threshold over every
    masked tensor (embeddings and pooler too with ``embeddings: masked``), and with weight
    decay only the selected entries move; the count is what moved."""
    p = 0.3
    torch.manual_seed(0)
    model = build(tiny_model("bert"), Candidate([MethodSpec("child_tuning", {
        "mode": "D", "reserve_p": p, "embeddings": "masked"})], 1e-2), total_steps=6)
    hook = getattr(model, HOOKS_ATTR)[0]
    events: list[str] = []
    fisher_pass = hook.before_training

    def spy(m, batches):
        events.append("fisher")
        fisher_pass(m, batches)

    hook.before_training = spy
    settings = TrainSettings(epochs=1, batch_size=4, warmup_ratio=0.0, weight_decay=0.1)
    data = tiny_data(24)
    before = {id(q): q.detach().clone() for q in hook.params}
    result = train(model, data, lambda m: {"score": 0.0}, 1e-2, 0, settings, pad_id=0,
                   on_step=lambda s, n, loss: events.append("look" if s == 0 else "step"))
    assert events[0] == "fisher" and events.count("fisher") == 1
    # the Fisher pass reports its batches as step 0 (the budget sees them), then training
    assert events.index("step") > events.index("fisher") and "look" in events
    assert "look" not in events[events.index("step"):]
    assert result.steps == events.count("step") == total_steps(len(data), settings)

    numel = sum(q.numel() for q in hook.params)
    kept = sum(int(m.sum()) for m in hook.masks)
    assert kept == round(p * numel)  # one threshold: the overall density is reserve_p
    densities = [float(m.float().mean()) for m in hook.masks]
    assert min(densities) < p - 0.1 and max(densities) > p + 0.1  # not per tensor
    outside = {id(q) for n, q in model.named_parameters() if ".layer." not in n}
    assert any(id(q) in outside for q in hook.params)  # embeddings and pooler are masked too

    moved = 0
    for q, mask in zip(hook.params, hook.masks):
        changed = q.detach() != before[id(q)]
        assert not (changed & ~mask).any(), "weight decay moved a masked-out entry"
        moved += int(changed.sum())
    assert 0.9 * kept <= moved <= kept
    head = sum(q.numel() for n, q in model.named_parameters() if n.startswith("classifier"))
    assert count_trainable(model) == kept + head


def test_child_tuning_reference_trains_embeddings_whole_under_d_and_masks_them_under_f() -> None:
    def masked_and_trained(mode: str) -> tuple[set[str], set[str]]:
        model = build(tiny_model("bert"), Candidate([MethodSpec("child_tuning", {"mode": mode})],
                                                    1e-3), total_steps=4)
        masked = {id(q) for q in getattr(model, HOOKS_ATTR)[0].params}
        names = {n for n, _ in trainable_parameters(model)}
        return {n for n, q in model.named_parameters() if id(q) in masked}, names

    masked, trained = masked_and_trained("D")
    assert "bert.embeddings.word_embeddings.weight" in trained - masked
    assert "bert.pooler.dense.weight" in trained - masked
    assert all(".layer." in n for n in masked)
    masked, _ = masked_and_trained("F")
    assert "bert.embeddings.word_embeddings.weight" in masked


# --- QLoRA ------------------------------------------------------------------------------


def test_qlora_uses_peft_4bit_layers_and_merges_after_reload() -> None:
    pytest.importorskip("bitsandbytes")
    from peft.tuners.lora.bnb import Linear4bit

    from autopeft.arch import ROLES

    base = tiny_model("bert")
    cand = Candidate([MethodSpec("qlora", {"r": 4})], 1e-2, seed=3)
    torch.manual_seed(0)
    model = build(base, cand, total_steps=10)
    lora_layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert lora_layers and all(isinstance(m, Linear4bit) for m in lora_layers)
    opt = torch.optim.AdamW([q for _, q in trainable_parameters(model)], lr=1e-2)
    model.train()
    for step in range(5):
        model(**batch(seed=step)).loss.backward()
        opt.step()
        opt.zero_grad()
    state = trained_state(model)

    torch.manual_seed(1)  # reload as autopeft.load does: rebuild, put the trained tensors
    reloaded = build(base, cand, total_steps=10)
    put_weights(reloaded, state)
    reloaded.eval()
    fp32 = build(base, Candidate([MethodSpec("lora", {"r": 4, "alpha": 16.0,
                                                      "targets": list(ROLES)})], 1e-2))
    put_weights(fp32, state)  # the same LoRA on the unquantised base
    fp32.eval()
    inputs = {k: v for k, v in batch(seed=9).items() if k != "labels"}
    with torch.no_grad():
        unmerged = reloaded(**inputs).logits
        with reloaded.disable_adapter():
            without = reloaded(**inputs).logits
        full = fp32(**inputs).logits
        merged_model = reloaded.merge_and_unload()
        merged = merged_model(**inputs).logits
    assert not any(hasattr(m, "lora_A") for m in merged_model.modules())
    quant_error = (unmerged - full).abs().max()
    merge_error = (merged - unmerged).abs().max()
    # Merging re-quantises W + BA to 4 bits: no worse than quantising the base at all, and
    # the update survives it.
    assert merge_error <= quant_error
    assert merge_error < 0.25 * (unmerged - without).abs().max()


# --- prompt methods on T5 and decoder language models -----------------------------------


@pytest.fixture(scope="module")
def lms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lms")
    for family in ("t5", "llama", "gpt2"):
        tiny_lm(root / family, family)
    translation_data(root / "data")
    instruct_file(root / "instruct.jsonl")
    return root


def bench(lms: Path, family: str):
    from autopeft.runner import Bench, DataSettings

    task = "wmt16-en-ro" if family == "t5" else f"instruct:{lms / 'instruct.jsonl'}"
    return Bench.load(str(lms / family), DataSettings(task, str(lms / "data")),
                      TrainSettings(batch_size=8, max_length=48, max_new_tokens=8, device="cpu"))


@pytest.mark.parametrize("family,method", [("t5", "prompt"), ("t5", "prefix"), ("t5", "mam"),
                                           ("t5", "ptuning"), ("llama", "prompt"),
                                           ("llama", "ptuning"), ("gpt2", "prompt")])
def test_prompt_methods_train_and_evaluate_on_language_models(lms: Path, family: str,
                                                              method: str) -> None:
    from autopeft.data import collate

    b = bench(lms, family)
    cand = Candidate([MethodSpec(method, {"num_virtual_tokens": 8})], 3e-2)
    torch.manual_seed(0)
    model = b.build(cand)
    inputs = collate(b.train_data, np.arange(8), b.base.tokenizer.pad_token_id)
    opt = torch.optim.AdamW([q for _, q in trainable_parameters(model)], lr=3e-2)
    model.eval()  # no dropout: the loss of one batch, repeated, must fall by training alone
    losses = []
    for _ in range(12):
        loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    # A random tiny LM is near uniform whatever its input, so the fall is small on decoders
    # (0.007 on GPT-2); without a gradient reaching the virtual tokens it would be exactly 0.
    assert losses[-1] < losses[0] - 1e-3, losses
    outcome = b.run(cand)  # train one epoch and evaluate through the project's loop
    key = "bleu" if family == "t5" else "loss"
    assert key in outcome.result.metrics and math.isfinite(outcome.result.score)


def test_decoder_lm_loss_skips_the_virtual_tokens_logits(lms: Path) -> None:
    from autopeft.data import collate
    from autopeft.evaluation import lm_loss

    b = bench(lms, "llama")
    model = b.build(Candidate([MethodSpec("prompt", {"num_virtual_tokens": 4})], 1e-2)).eval()
    everything = np.arange(len(b.eval_data))
    inputs = collate(b.eval_data, everything, b.base.tokenizer.pad_token_id)
    with torch.no_grad():
        assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1] + 4
        expected = model(**inputs).loss.item()  # peft labels the virtual tokens -100
    settings = TrainSettings(eval_batch_size=len(everything))
    got = lm_loss(model, b.eval_data, settings, b.base.tokenizer.pad_token_id, torch.device("cpu"))
    assert got["loss"] == pytest.approx(expected, rel=1e-5)


def test_spaces_keep_what_trains_and_say_why_they_drop_the_rest(lms: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    space = parse_space({"candidates": ["prompt", "ptuning", "prefix", "mam", "bitfit", "lora"]},
                        "s.yaml")
    t5_lm = AutoModelForSeq2SeqLM.from_pretrained(lms / "t5")
    fitted, notes = fit_space(space, t5_lm)
    assert list(fitted.candidates) == ["prompt", "ptuning", "prefix", "mam", "lora"]
    assert len(notes) == 1 and "bitfit" in notes[0] and "no bias terms" in notes[0]
    fitted, _ = fit_space(space, AutoModelForCausalLM.from_pretrained(lms / "gpt2"))
    assert "bitfit" in fitted.candidates  # GPT-2 has biases
    fitted, notes = fit_space(space, tiny_model("t5"))  # T5 classification
    assert list(fitted.candidates) == ["lora"]
    assert any("prompt does not support encoder-decoder classification" in n
               and "refuses embeddings" in n for n in notes)
    assert any("prefix does not support" in n and "position bias" in n for n in notes)
    fitted, notes = fit_space(space, tiny_model("llama"))  # decoder classification
    assert list(fitted.candidates) == ["prefix", "mam", "lora"]
    assert any("ptuning does not support decoder classification" in n for n in notes)
    # The review's eleven methods on a T5 language model: all but BitFit (and QLoRA
    # without bitsandbytes).
    paper = load_space("paper")
    fitted, notes = fit_space(paper, t5_lm)
    dropped = set(paper.candidates) - set(fitted.candidates)
    assert dropped <= {"bitfit", "qlora"} and "bitfit" in dropped


def test_bitfit_refuses_models_without_biases() -> None:
    for family in ("llama", "t5"):
        with pytest.raises(UserError, match="no bias terms"):
            build(tiny_model(family), Candidate([MethodSpec("bitfit")], 1e-3))


# --- P-tuning ---------------------------------------------------------------------------


def test_ptuning_defaults_to_the_papers_lstm_and_counts_as_peft() -> None:
    from peft import PromptEncoderConfig, get_peft_model

    n, h = 5, 32  # virtual tokens; the model's width (the encoder's too, by default)
    model = build(tiny_model("bert"), Candidate([MethodSpec("ptuning", {"num_virtual_tokens": n})],
                                                1e-3))
    assert model.peft_config["default"].encoder_reparameterization_type == "LSTM"
    head = h * 2 + 2
    # Embedding; two-layer bidirectional LSTM (gates 4h, two biases per direction); MLP head.
    lstm = 2 * (4 * h * (h + h) + 8 * h) + 2 * (4 * h * (2 * h + h) + 8 * h)
    mlp = (2 * h) * (2 * h) + 2 * h + (2 * h) * h + h
    assert count_trainable(model) == n * h + lstm + mlp + head
    reference = get_peft_model(tiny_model("bert"), PromptEncoderConfig(
        task_type="SEQ_CLS", num_virtual_tokens=n, encoder_hidden_size=h,
        encoder_reparameterization_type="LSTM"))
    assert count_trainable(model) == reference.get_nb_trainable_parameters()[0]
    mlp_model = build(tiny_model("bert"), Candidate([MethodSpec("ptuning", {
        "num_virtual_tokens": n, "encoder_type": "MLP"})], 1e-3))
    assert count_trainable(mlp_model) == n * h + 3 * (h * h + h) + head
