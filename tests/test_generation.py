"""Translation (T5), instruction tuning and MMLU-style multiple choice (decoders), offline,
on tiny models; evaluators checked against hand-computed values."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from autopeft.candidate import Candidate, MethodSpec
from autopeft.cli import main
from autopeft.data import Encoded, encode
from autopeft.evaluation import lm_loss, multiple_choice
from autopeft.metrics import bleu
from autopeft.runner import Bench, DataSettings
from autopeft.tasks import TASKS, load_task
from autopeft.train import TrainSettings
from lm_fixtures import instruct_file, mmlu_data, tiny_lm, translation_data


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm")
    tiny_lm(root / "t5", "t5")
    tiny_lm(root / "gpt2", "gpt2")
    tiny_lm(root / "llama", "llama")
    translation_data(root / "data")
    mmlu_data(root / "data")
    instruct_file(root / "instruct.jsonl")
    return root


def test_bleu_by_hand() -> None:
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"])["score"] == pytest.approx(100)
    assert bleu(["dog"], ["the cat sat on the mat"])["score"] == 0.0


def test_lm_loss_equals_the_models_own_loss(lm_dir: Path) -> None:
    b = Bench.load(str(lm_dir / "gpt2"), DataSettings(f"instruct:{lm_dir / 'instruct.jsonl'}"),
                   TrainSettings(eval_batch_size=64, max_length=48, device="cpu"))
    from autopeft.data import collate

    model = b.base.model.eval()
    batch = collate(b.eval_data, list(range(len(b.eval_data))), b.base.tokenizer.pad_token_id)
    with torch.no_grad():
        expected = model(**batch).loss.item()  # one batch: HF's mean over scored tokens
    got = lm_loss(model, b.eval_data, b.settings, b.base.tokenizer.pad_token_id, torch.device("cpu"))
    assert got["loss"] == pytest.approx(expected, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert got["score"] == -got["loss"]


class LetterModel(torch.nn.Module):
    """Fake LM: at every position, the highest logit is the token ``favourite``."""

    def __init__(self, vocab: int, favourite: int):
        super().__init__()
        self.vocab, self.favourite = vocab, favourite

    def forward(self, input_ids, attention_mask, **_):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.favourite] = 1.0
        return type("Out", (), {"logits": logits})()


def test_multiple_choice_picks_the_most_likely_letter() -> None:
    ids = [torch.tensor([5, 6, 7]).numpy(), torch.tensor([5, 6]).numpy()]
    enc = Encoded(ids, None, torch.tensor([2, 1]).numpy(), choice_ids=torch.tensor([10, 11, 12, 13]).numpy())
    settings = TrainSettings(eval_batch_size=4)
    # The fake model always prefers token 12 = letter C = choice 2: one of two answers right.
    got = multiple_choice(LetterModel(20, 12), enc, settings, 0, torch.device("cpu"))
    assert got["accuracy"] == 0.5


def test_multiple_choice_encoding_scores_only_the_answer(lm_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_dir / "gpt2")
    data = load_task("mmlu", str(lm_dir / "data"))
    train = encode(tok, TASKS["mmlu"], data.train, 64, for_training=True)
    for ids, labels in zip(train.input_ids, train.labels):
        scored = labels[labels != -100]
        assert len(scored) == 1 and scored[0] == ids[-1]  # only the answer letter
    evaluation = encode(tok, TASKS["mmlu"], data.validation, 64, for_training=False)
    assert len(evaluation.choice_ids) == 4 and list(evaluation.labels) == data.validation["answer"]


@pytest.mark.parametrize("model,task", [("t5", "wmt16-en-ro"), ("gpt2", "mmlu"), ("llama", "mmlu"),
                                        ("gpt2", "instruct"), ("llama", "instruct")])
def test_two_trial_search_per_generation_kind(model: str, task: str, lm_dir: Path, workdir: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    task_arg = f"instruct:{lm_dir / 'instruct.jsonl'}" if task == "instruct" else task
    space = workdir / "s.yaml"
    space.write_text("candidates: [full, lora]\nlearning_rate: 1.0e-3\n"
                     "methods:\n  lora: {r: 4, targets: [query, value]}\n")
    argv = ["search", "--task", task_arg, "--model", str(lm_dir / model), "--data-dir",
            str(lm_dir / "data"), "--n-trials", "2", "--study", "g", "--batch-size", "8",
            "--max-length", "48", "--max-new-tokens", "12", "--space", str(space),
            "--sampler", "random", "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["show", "g", "--all", "--json"]) == 0
    trials = json.loads(capsys.readouterr().out)
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"], trials
    import autopeft

    for t in autopeft.load_study("g").trials:
        metrics = t.user_attrs["metrics"]
        assert metrics["score"] == t.values[0]
        if task == "wmt16-en-ro":  # corpus BLEU, 0..100, is the score
            assert 0 <= metrics["bleu"] <= 100 and metrics["score"] == metrics["bleu"]
        elif task == "mmlu":  # right letters out of the 16 validation questions
            k = metrics["accuracy"] * 16
            assert abs(k - round(k)) < 1e-9 and 0 <= k <= 16 and metrics["score"] == metrics["accuracy"]
        else:  # instruction tuning: the score is minus the loss, perplexity its exponential
            assert metrics["loss"] > 0 and metrics["score"] == -metrics["loss"]
            assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-9)


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5"])
def test_peft_on_a_language_model_leaves_its_lm_head_frozen(family: str, lm_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from autopeft.build import build, count_trainable

    cls = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    base = cls.from_pretrained(lm_dir / family)
    model = build(base, Candidate([MethodSpec("lora", {"r": 2, "targets": ["query", "value"]})], 1e-3))
    assert type(model).__name__ == ("PeftModelForSeq2SeqLM" if family == "t5" else "PeftModelForCausalLM")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names), names
    assert count_trainable(model) == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
