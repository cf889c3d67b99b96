"""Task loading from the offline layout, tokenisation cache, dynamic padding, budgets."""
from __future__ import annotations

import numpy as np
import pytest

from autopeft import data as data_mod
from autopeft.data import collate, encode, train_order
from autopeft.search.budget import parse_duration
from autopeft.tasks import load_task
from conftest import SHARED_DATA


def test_real_sst2_from_shared_data() -> None:
    task = load_task("sst2", str(SHARED_DATA))
    assert len(task.train["label"]) == 67349 and len(task.validation["label"]) == 872
    assert sum(task.validation["label"]) == 444
    sub = load_task("sst2", str(SHARED_DATA), train_samples=100, eval_samples=50, seed=1)
    assert len(sub.train["sentence"]) == 100 and len(sub.validation["label"]) == 50
    again = load_task("sst2", str(SHARED_DATA), train_samples=100, eval_samples=50, seed=1)
    assert sub.train == again.train  # a seeded subset is the same subset


def test_data_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tiny_data) -> None:
    monkeypatch.setenv("AUTOPEFT_DATA_DIR", str(tiny_data))
    assert len(load_task("sst2").train["label"]) == 200


def test_tokenisation_is_cached_in_memory_and_on_disk(tmp_path, tiny_model, tiny_data) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = load_task("sst2", str(tiny_data))
    first = encode(tok, task.task, task.train, 32, str(tmp_path))
    assert encode(tok, task.task, task.train, 32, str(tmp_path)) is first
    assert len(list(tmp_path.glob("tokens-*.npz"))) == 1
    data_mod._MEMORY.clear()
    from_disk = encode(tok, task.task, task.train, 32, str(tmp_path))
    assert from_disk is not first
    assert all(np.array_equal(a, b) for a, b in zip(first.input_ids, from_disk.input_ids))
    assert max(first.lengths()) <= 32


def test_batches_pad_to_their_longest_example(tiny_model, tiny_data) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = load_task("sst2", str(tiny_data))
    enc = encode(tok, task.task, task.train, 64)
    order = train_order(enc, 16, seed=0)
    assert sorted(np.concatenate(order).tolist()) == list(range(len(enc)))
    for idx in order:
        b = collate(enc, idx, tok.pad_token_id)
        assert b["input_ids"].shape[1] == max(len(enc.input_ids[i]) for i in idx)
        assert b["attention_mask"].sum().item() == sum(len(enc.input_ids[i]) for i in idx)
    padded = sum(collate(enc, i, 0)["input_ids"].numel() for i in order)
    assert padded < len(enc) * max(enc.lengths())  # dynamic padding saves work


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("4h", 14400), ("1h30m", 5400),
                                          ("90s", 90), ("2", 120), ("1d", 86400)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1x", "h", "0m", "1h30"])
def test_parse_duration_rejects(text: str) -> None:
    from autopeft.errors import UserError

    with pytest.raises(UserError):
        parse_duration(text)
