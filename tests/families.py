"""Tiny random models of each family (2 layers, 32 wide) and a random batch, for method tests."""
from __future__ import annotations

import torch
import transformers

transformers.logging.set_verbosity_error()

VOCAB = 64
FAMILIES = {"bert": "encoder", "roberta": "encoder", "llama": "decoder", "gpt2": "decoder",
            "t5": "encoder-decoder"}


def tiny_config(family: str) -> transformers.PretrainedConfig:
    t = transformers
    common = dict(vocab_size=VOCAB, num_labels=2, pad_token_id=0)
    if family == "bert":
        return t.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64, **common)
    if family == "roberta":
        return t.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=70, **common)
    if family == "llama":
        return t.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             num_key_value_heads=2, intermediate_size=64,
                             max_position_embeddings=64, **common)
    if family == "gpt2":
        return t.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, **common)
    if family == "t5":
        return t.T5Config(d_model=32, num_layers=2, num_heads=2, d_ff=64, d_kv=16,
                          decoder_start_token_id=0, **common)
    raise KeyError(family)


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = transformers.AutoModelForSequenceClassification.from_config(tiny_config(family))
    model.eval()
    return model


def batch(n: int = 4, length: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, length), generator=g)
    mask = torch.ones_like(ids)
    ids[:, -1] = 1  # end-of-sequence (T5 classifies from it; id 1 is T5's eos)
    ids[0, -3] = 1
    ids[0, -2:] = 0  # some padding
    mask[0, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1] * (n // 2))}
