"""Tiny generation setups: a word-level tokenizer shared by a tiny T5 and a tiny GPT-2 /
LLaMA, saved with ``save_pretrained``, and small offline data files for translation,
instruction tuning and MMLU-style multiple choice."""
from __future__ import annotations

import json
import random
from pathlib import Path

import transformers

EN = "the a cat dog sees eats likes big small red house tree water food".split()
RO = {w: w[::-1] for w in EN}  # a made-up "Romanian": every word reversed


def tokenizer(folder: Path) -> transformers.PreTrainedTokenizerBase:
    words = sorted(set(EN) | set(RO.values()) | {"translate", "english", "to", "romanian:",
                                                 "question", "answer:", "a.", "b.", "c.", "d.",
                                                 "a", "b", "c", "d", "yes", "no"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(folder)
    return tok


def tiny_lm(folder: Path, family: str) -> Path:
    """A tiny ``family`` (t5 | gpt2 | llama) LM saved with a word-level tokenizer."""
    transformers.logging.set_verbosity_error()
    folder.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(folder)
    ids = dict(vocab_size=len(tok), pad_token_id=0, eos_token_id=3, bos_token_id=2)
    if family == "t5":
        cfg = transformers.T5Config(d_model=32, num_layers=2, num_heads=2, d_ff=64, d_kv=16,
                                    decoder_start_token_id=0, **ids)
        model = transformers.AutoModelForSeq2SeqLM.from_config(cfg)
    else:
        cfg = (transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, **ids)
               if family == "gpt2" else
               transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=2, intermediate_size=64,
                                        max_position_embeddings=128, **ids))
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder)
    return folder


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(EN) for _ in range(rng.randint(2, 5)))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def translation_data(root: Path, n: int = 24) -> Path:
    rng = random.Random(0)
    for split in ("train", "validation"):
        rows = []
        for _ in range(n):
            en = sentence(rng)
            rows.append({"en": en, "ro": " ".join(RO[w] for w in en.split())})
        write_jsonl(root / "wmt16" / "ro-en" / f"{split}.jsonl", rows)
    return root


def mmlu_data(root: Path, n: int = 16) -> Path:
    rng = random.Random(1)
    for split in ("train", "validation"):
        rows = [{"question": f"question {sentence(rng)}", "choices": [sentence(rng) for _ in range(4)],
                 "answer": rng.randint(0, 3)} for _ in range(n)]
        write_jsonl(root / "mmlu" / f"{split}.jsonl", rows)
    return root


def instruct_file(path: Path, n: int = 24) -> Path:
    rng = random.Random(2)
    rows = []
    for _ in range(n):
        en = sentence(rng)
        rows.append({"prompt": f"translate english to romanian: {en}",
                     "response": " ".join(RO[w] for w in en.split())})
    return write_jsonl(path, rows)
