"""A tiny causal LM and a toy language, built offline in a second, so the examples run
anywhere (a CPU, no hub). Replace them with your own model id and data."""
from __future__ import annotations

import argparse
import random
from pathlib import Path

WORDS = "the a cat dog sees eats likes big small red house tree water food".split()


def toy_sentences(n: int, seed: int) -> list[str]:
    """Sentences of a tiny grammar: ``the big cat sees a red tree .``"""
    rng = random.Random(seed)
    nouns, adjectives, verbs = WORDS[2:4] + WORDS[10:], WORDS[7:10], WORDS[4:7]

    def phrase() -> str:
        return " ".join([rng.choice(["the", "a"]), *rng.sample(adjectives, rng.randint(0, 1)),
                         rng.choice(nouns)])

    return [f"{phrase()} {rng.choice(verbs)} {phrase()} ." for _ in range(n)]


def tiny_causal_lm(folder: Path) -> Path:
    """A 2-layer, 32-wide random Llama and its word-level tokenizer, saved in ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[BOS]", "[EOS]", *WORDS, "."])}
    words = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="[PAD]",
                                        unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                         max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
                         eos_token_id=3)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def example_options(doc: str) -> tuple[argparse.Namespace, Path]:
    """The examples' command line, and the model: ``--model``, else a tiny one built now."""
    cli = argparse.ArgumentParser(description=doc.splitlines()[0])
    cli.add_argument("--model", type=Path, help="a causal LM (default: a tiny one, built now)")
    cli.add_argument("--out", type=Path, default=Path("example-output"))
    cli.add_argument("--n-trials", type=int, default=4)
    cli.add_argument("--report-to", default="none", help="tensorboard, mlflow, wandb, all, none")
    opts = cli.parse_args()
    return opts, opts.model or tiny_causal_lm(opts.out / "tiny-llama")
