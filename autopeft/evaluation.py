"""Scoring a trained candidate on a task's validation data: one function per way of
scoring (a task kind's ``scoring``: logits, generation, loss, choice).

Every evaluator returns the metric's components and ``score``, the study's first
objective (maximised). All run without gradients, in length-sorted batches.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from autopeft.data import Encoded, collate, eval_order
from autopeft.kinds import kind_of
from autopeft.metrics import METRICS, bleu
from autopeft.tasks import Task
from autopeft.train import TrainSettings, autocast, batches_on

Evaluator = Callable[[Any], dict[str, float]]


def _batches(enc: Encoded, settings: TrainSettings, pad_id: int, device: torch.device):
    """``(rows, batch on device)``: on CUDA collated and pinned ahead in another thread and
    copied asynchronously, as training's batches (``train.batches_on``)."""
    return batches_on(device, iter(eval_order(enc, settings.eval_batch_size)),
                      lambda rows: collate(enc, rows, pad_id))


def token_logits(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """A language model's logits at the input's positions. peft's prompt tuning and P-tuning
    put their virtual tokens before a decoder's input and return their logits too: dropped."""
    logits = model(**inputs).logits.float()
    return logits[:, logits.shape[1] - inputs["input_ids"].shape[1]:]


@torch.no_grad()
def classify(model: Any, enc: Encoded, metric: str, settings: TrainSettings, pad_id: int,
             device: torch.device) -> dict[str, float]:
    """Classification (argmax) or regression (the single logit, for float labels)."""
    regression = enc.labels.dtype.kind == "f"
    preds = np.empty(len(enc), dtype=np.float64 if regression else np.int64)
    for batch, inputs in _batches(enc, settings, pad_id, device):
        inputs.pop("labels")
        with autocast(device, settings.precision):
            logits = model(**inputs).logits.float()
        preds[batch] = (logits[:, 0] if regression else logits.argmax(-1)).cpu().numpy()
    return METRICS[metric](preds, enc.labels)


@torch.no_grad()
def translate(model: Any, enc: Encoded, settings: TrainSettings, tokenizer: Any,
              device: torch.device) -> dict[str, float]:
    """Generate (greedy or beam search) and score corpus BLEU against the references."""
    hyps: list[str] = [""] * len(enc)
    for batch, inputs in _batches(enc, settings, tokenizer.pad_token_id, device):
        with autocast(device, settings.precision):
            out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                 num_beams=settings.num_beams, max_new_tokens=settings.max_new_tokens)
        for i, text in zip(batch, tokenizer.batch_decode(out, skip_special_tokens=True)):
            hyps[i] = text.strip()
    return bleu(hyps, enc.references or [])


@torch.no_grad()
def lm_loss(model: Any, enc: Encoded, settings: TrainSettings, pad_id: int,
            device: torch.device) -> dict[str, float]:
    """Mean negative log-likelihood per scored token; score = -loss (higher is better)."""
    total, tokens = 0.0, 0
    for _, inputs in _batches(enc, settings, pad_id, device):
        labels = inputs.pop("labels")
        with autocast(device, settings.precision):
            logits = token_logits(model, inputs)
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                                shift_labels.reshape(-1), ignore_index=-100,
                                                reduction="sum")
        total += nll.item()
        tokens += int((shift_labels != -100).sum())
    loss = total / max(1, tokens)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "score": -loss}


@torch.no_grad()
def multiple_choice(model: Any, enc: Encoded, settings: TrainSettings, pad_id: int,
                    device: torch.device) -> dict[str, float]:
    """Pick the answer letter with the highest next-token log-likelihood after the prompt."""
    assert enc.choice_ids is not None
    letters = torch.as_tensor(enc.choice_ids, device=device)
    preds = np.empty(len(enc), dtype=np.int64)
    for batch, inputs in _batches(enc, settings, pad_id, device):
        inputs.pop("labels")
        with autocast(device, settings.precision):
            logits = token_logits(model, inputs)
        last = inputs["attention_mask"].sum(1) - 1  # right padding: the prompt's last token
        next_token = logits[torch.arange(len(batch), device=device), last]
        preds[batch] = next_token[:, letters].argmax(-1).cpu().numpy()
    return METRICS["accuracy"](preds, enc.labels)


def make_evaluator(task: Task, enc: Encoded, settings: TrainSettings, tokenizer: Any,
                   device: torch.device) -> Evaluator:
    """``task``'s scorer of a model on ``enc``, chosen by its kind's ``scoring``."""
    pad_id = tokenizer.pad_token_id
    scorers: dict[str, Evaluator] = {
        "logits": lambda model: classify(model, enc, task.metric, settings, pad_id, device),
        "generation": lambda model: translate(model, enc, settings, tokenizer, device),
        "loss": lambda model: lm_loss(model, enc, settings, pad_id, device),
        "choice": lambda model: multiple_choice(model, enc, settings, pad_id, device),
    }
    return scorers[kind_of(task).scoring]
