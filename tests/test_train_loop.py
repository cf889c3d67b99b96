"""The training loop's parts: the named learning-rate schedule, the micro-batch stream that
gradient accumulation reads, and the callbacks (the search's rungs live outside the loop)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from autopeft.data import Encoded, train_order
from autopeft.train import TrainSettings, micro_batches, scored, train, warmup_then_decay


def data(n: int) -> Encoded:
    rng = np.random.default_rng(0)
    return Encoded(input_ids=[rng.integers(1, 20, size=int(rng.integers(3, 9))) for _ in range(n)],
                   token_type_ids=None, labels=rng.integers(0, 2, size=n))


class Bag(torch.nn.Module):
    """A bag-of-embeddings classifier: enough to train, fast, with dropout to see the mode."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(20, 8)
        self.drop = torch.nn.Dropout(0.5)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask, labels, **_):
        pooled = (self.emb(input_ids) * attention_mask[..., None]).sum(1)
        loss = torch.nn.functional.cross_entropy(self.out(self.drop(pooled)), labels)
        return type("Output", (), {"loss": loss})


def test_the_schedule_warms_up_then_decays_to_zero() -> None:
    factors = [warmup_then_decay(s, 4, 20) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert warmup_then_decay(20, 4, 20) == 0.0 and warmup_then_decay(0, 0, 10) == 1.0


def test_micro_batches_run_epoch_after_epoch_in_seeded_orders() -> None:
    enc = data(10)
    stream = list(itertools.islice(micro_batches(enc, 4, seed=7), 6))  # 3 batches an epoch
    want = train_order(enc, 4, 7) + train_order(enc, 4, 8)
    assert all(np.array_equal(a, b) for a, b in zip(stream, want))
    with pytest.raises(ValueError, match="no batches"):
        next(micro_batches(Encoded([], None, []), 4, 0))


def test_accumulated_steps_see_every_micro_batch_and_callbacks_run_in_order() -> None:
    enc = data(10)  # 3 micro-batches an epoch; 2 per step: steps span the epochs
    settings = TrainSettings(batch_size=4, grad_accum=2, epochs=2, device="cpu")
    seen: list[tuple] = []
    modes: list[bool] = []
    result = train(Bag(), enc, lambda m: modes.append(m.training) or {"score": 0.5}, 1e-2, 0,
                   settings, 0, on_step=lambda s, t, loss: seen.append(("step", s, t)),
                   after_step=lambda s, m: seen.append(("after", s)))
    assert result.steps == 3 and result.samples == 2 * 10  # 6 micro-batches: two epochs
    assert seen == [("step", 1, 3), ("after", 1), ("step", 2, 3), ("after", 2), ("step", 3, 3)]
    assert modes == [False] and result.score == 0.5  # scored once, at the end, in eval mode


def test_scored_evaluates_in_eval_mode_and_restores_the_mode() -> None:
    model = Bag().train()
    assert scored(model, lambda m: {"score": float(m.training)}) == {"score": 0.0}
    assert model.training


def test_a_callback_that_raises_stops_training_there() -> None:
    class Stop(Exception):
        pass

    steps: list[int] = []

    def after(step: int, model) -> None:
        steps.append(step)
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        train(Bag(), data(40), lambda m: {"score": 0.0}, 1e-2, 0,
              TrainSettings(batch_size=4, device="cpu"), 0, after_step=after)
    assert steps == [1, 2]


def long_tail(n: int) -> Encoded:
    """``data(n)`` with one row six times the longest other: the schedule's widest batch."""
    enc = data(n)
    enc.input_ids[-1] = np.arange(1, 49) % 19 + 1
    return enc


def test_a_run_stopped_early_reads_the_peak_of_its_whole_schedule() -> None:
    enc = long_tail(40)  # 10 batches an epoch; the first batch does not hold the long row
    settings = TrainSettings(batch_size=4, device="cpu")
    assert len(enc) - 1 not in micro_batches(enc, 4, 0).__next__()
    one = train(Bag(), enc, lambda m: {"score": 0.0}, 1e-2, 0, settings, 0, stop_at=1)
    full = train(Bag(), enc, lambda m: {"score": 0.0}, 1e-2, 0, settings, 0)
    assert full.steps == 10 and one.steps == 1
    assert one.peak_memory == full.peak_memory  # fidelity-independent: the longest batch's


def test_measuring_the_longest_batch_leaves_the_run_as_it_was(monkeypatch) -> None:
    import autopeft.train as train_mod

    enc, settings = long_tail(40), TrainSettings(batch_size=4, device="cpu")

    def run() -> tuple[list[float], torch.Tensor]:
        losses: list[float] = []
        model = Bag()
        train(model, enc, lambda m: {"score": 0.0}, 1e-2, 0, settings, 0,
              on_step=lambda s, t, loss: losses.append(loss))
        return losses, model.out.weight.detach().clone()

    measured, weights = run()
    monkeypatch.setattr(train_mod, "longest_batch", lambda *a, **k: None)
    plain, plain_weights = run()
    assert measured == plain and torch.equal(weights, plain_weights)  # dropout, grads untouched
