"""The GPU check: the first run on a GPU proves the CUDA path end to end, through autopeft's
own code (Bench, IsolatedBench, the CLI), offline.

    python bench/gpu_check.py                        # one GPU, about 9 minutes; writes
                                                     # bench/gpu_check.json and BENCHMARKS.md
    python bench/gpu_check.py --device cpu --quick   # the CPU-runnable parts, tiny model
                                                     # (tests/test_gpu_check.py runs this)

The base is a random model of roberta-base's size (``RobertaConfig``: 12 layers, hidden
768, vocabulary 50,265) with the tests' word-piece tokenizer recipe (SST-2 words), so no
download; the data are SST-2 from ``../shared/data`` (``--data-dir``). Each section runs in
a process of its own with its own timeout (a hung or crashed section is reported, the others
run), and prints one JSON object:

* ``environment``: versions, the device, bf16 natively (compute capability >= 8.0) and with
  emulation, TF32 switches, the attention kernel the model uses;
* ``loop``: ms/step of a trial (``Bench.run``) against a bare loop on the same batches, the
  overhead, the start cost of a bench and of a trial process, ms/step isolated;
* ``memory``: lora, bitfit, full, qlora: training peak, scoring peak, the static prediction,
  the CPU estimate (tensor accounting), and a leak check over 3 trials in one process;
* ``precision``: bf16, fp32 and fp32 + TF32 (``--precision tf32``): score, loss, s/step;
* ``qlora``: 4-bit layers, peak against LoRA, score, merge logit difference, the round trip
  of the trained tensors through a safetensors file;
* ``sharing``: ``autopeft search --workers 1/2/4 --trials-per-gpu 1/2/4`` on one GPU:
  trials per minute, out-of-memory failures;
* ``cuda_error``: a real device-side assert in a trial, then a valid trial: the first fails
  alone, the trial process restarts, the second trains.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from _report import DATA, write_section  # noqa: E402

# Section: (seconds allowed on a GPU, seconds allowed with --quick)
SECTIONS: dict[str, tuple[int, int]] = {
    "environment": (60, 60), "loop": (100, 120), "memory": (150, 120), "precision": (70, 90),
    "qlora": (70, 90), "sharing": (200, 120), "cuda_error": (60, 90)}
LORA = {"r": 8, "targets": ["query", "value"]}


@dataclass
class Ctx:
    """What every section needs: where the model and data are, the device, the sizes."""

    model: str
    data: str
    work: str
    device: str
    quick: bool

    @property
    def steps(self) -> int:
        return 3 if self.quick else 40

    def data_settings(self) -> Any:
        from autopeft.runner import DataSettings

        return DataSettings("sst2", self.data, train_samples=64 if self.quick else 4000,
                            eval_samples=32 if self.quick else 872)

    def settings(self, **kw: Any) -> Any:
        from autopeft.train import TrainSettings

        return TrainSettings(batch_size=8 if self.quick else 32, eval_batch_size=16 if self.quick
                             else 128, max_length=32 if self.quick else 128, device=self.device,
                             **kw)

    def bench(self, **kw: Any) -> Any:
        from autopeft.runner import Bench

        return Bench.load(self.model, self.data_settings(), self.settings(**kw),
                          str(Path(self.work) / "cache"))


def default_data() -> str:
    """SST-2 beside the checkout (``../shared/data``), or inside it (``shared/data``, where a
    copy of the working tree carries it), or ``$AUTOPEFT_TEST_DATA``."""
    for folder in (DATA, ROOT / "shared" / "data", Path(os.environ.get("AUTOPEFT_TEST_DATA", DATA))):
        if (folder / "glue" / "sst2").is_dir():
            return str(folder)
    return str(DATA)


def make_model(folder: Path, quick: bool, data: Path) -> Path:
    """A random RoBERTa (roberta-base's sizes, or tiny) with the tests' tokenizer recipe: a
    word-piece vocabulary of the commonest SST-2 words."""
    import csv

    import transformers
    from transformers import AutoModelForSequenceClassification, BertTokenizer

    if (folder / "config.json").exists():
        return folder
    transformers.logging.set_verbosity_error()
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
    size = (dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64) if quick else
            dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=514))
    config = transformers.RobertaConfig(**size, type_vocab_size=1, num_labels=2, pad_token_id=0)
    import torch

    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    return folder


def cand(name: str, params: dict | None = None, lr: float = 1e-3) -> Any:
    from autopeft.candidate import Candidate, MethodSpec

    return Candidate([MethodSpec(name, dict(params or {}))], lr, seed=0)


def has_bnb() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_run(bench: Any, candidate: Any, steps: int) -> tuple[Any, float]:
    """``bench.run`` for ``steps`` steps; seconds a step from the step callbacks (scoring,
    building and the first step's warm-up left out)."""
    from autopeft.runner import Fidelity

    stamps: list[float] = []
    out = bench.run(candidate, on_step=lambda s, n, loss: s and stamps.append(time.perf_counter()),
                    fidelity=Fidelity(stop_at=steps))
    per_step = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
    return out, per_step


# -- the sections -----------------------------------------------------------------------------

def environment(ctx: Ctx) -> dict:
    import importlib.metadata as md

    import torch

    from autopeft.devices import bf16_native, visible_devices
    from autopeft.train import resolve_device

    out: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    for pkg in ("torch", "transformers", "peft", "optuna", "bitsandbytes"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    device = resolve_device(ctx.device)
    out["device"] = str(device)
    out["cuda"] = torch.version.cuda
    if device.type == "cuda":
        index = device.index or 0
        props = torch.cuda.get_device_properties(index)
        out.update(name=props.name, capability=".".join(map(str, torch.cuda.get_device_capability(index))),
                   memory_gib=round(props.total_memory / 2**30, 1),
                   visible=visible_devices(),
                   bf16_native=bf16_native(device),
                   bf16_with_emulation=torch.cuda.is_bf16_supported(),
                   tf32_matmul_default=torch.backends.cuda.matmul.allow_tf32,
                   tf32_cudnn_default=torch.backends.cudnn.allow_tf32,
                   sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
                   sdpa_mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled())
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(ctx.model))
    out["attention"] = getattr(model.config, "_attn_implementation", None)
    out["base_params"] = sum(p.numel() for p in model.parameters())
    return out


def loop(ctx: Ctx) -> dict:
    """A trial against a bare loop on the same batches (same model, optimiser, precision)."""
    from autopeft.data import collate
    from autopeft.isolation import IsolatedBench
    from autopeft.runner import Fidelity
    from autopeft.train import (_optimizer, autocast, bf16_base, frozen_in_bf16, micro_batches,
                                resolve_device, to_device)

    t0 = time.perf_counter()
    bench = ctx.bench()
    load_s = time.perf_counter() - t0
    lora = cand("lora", LORA)
    timed_run(bench, lora, 2)  # warm-up: CUDA context, kernels, the base on the device
    _, trial_s = timed_run(bench, lora, ctx.steps)
    # The bare loop: the same model, batches, optimiser and autocast, nothing else.
    device = resolve_device(ctx.device)
    model = bench.build(lora)
    model.to(device).train()
    if bf16_base(bench.settings):  # as the trial stores its frozen weights
        frozen_in_bf16(model)
    opt = _optimizer(model, 1e-3, 0.01, fused=device.type == "cuda")
    stream = micro_batches(bench.train_data, bench.settings.batch_size, lora.seed)
    pad = bench.base.tokenizer.pad_token_id
    times = []
    for _ in range(ctx.steps):
        inputs = to_device(collate(bench.train_data, next(stream), pad), device)
        with autocast(device, bench.settings.precision):
            loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(ctx.device)
        times.append(time.perf_counter())
    bare_s = (times[-1] - times[0]) / max(1, len(times) - 1)
    del model, opt
    with IsolatedBench(ctx.model, ctx.data_settings(), bench.settings,
                       str(Path(ctx.work) / "cache")) as iso:
        t0 = time.perf_counter()
        iso.run(lora, fidelity=Fidelity(stop_at=1))
        start_s = time.perf_counter() - t0
        _, iso_s = timed_run(iso, lora, ctx.steps)
    return {"steps": ctx.steps, "trial_ms_per_step": round(1e3 * trial_s, 2),
            "bare_ms_per_step": round(1e3 * bare_s, 2),
            "overhead_pct": round(100 * (trial_s / bare_s - 1), 1),
            "isolated_ms_per_step": round(1e3 * iso_s, 2),
            "bench_load_s": round(load_s, 2), "trial_process_start_s": round(start_s, 2),
            "last_loss": float(loss.detach().float())}


def memory(ctx: Ctx) -> dict:
    import gc

    import torch

    from autopeft.runner import Fidelity
    from autopeft.search.constraints import predict
    from autopeft.train import bf16_base
    from autopeft.validate import skeleton

    bench = ctx.bench()
    cpu = ctx.bench(device="cpu") if not ctx.quick else None  # the CPU estimate, for comparison
    if cpu is not None:
        cpu = replace(cpu, eval_data=cpu.eval_data.subset(range(32)))
    methods = {"lora": LORA, "bitfit": {}, "full": {}, **({"qlora": LORA} if has_bnb() else {})}
    rows = []
    for name, params in methods.items():
        c = cand(name, params, 1e-4 if name == "full" else 1e-3)
        pred = predict(skeleton(bench.base.model), bench.base.model, c, ctx.steps,
                       bf16_base(bench.settings))
        out = bench.run(c, fidelity=Fidelity(stop_at=ctx.steps))
        r = out.result
        row = {"method": name, "trainable": out.trainable, "training_peak": r.peak_memory,
               "scoring_peak": r.scoring_peak_memory, "memory_method": r.memory_method,
               "static_prediction": pred.memory_bytes, "score": round(r.score, 4)}
        if cpu is not None and name != "qlora":  # 4-bit on the CPU: minutes at this size
            row["cpu_estimate"] = cpu.run(c, fidelity=Fidelity(stop_at=2)).result.peak_memory
        rows.append(row)
        del out
    allocated = []
    for _ in range(3):  # a leak grows what stays allocated between trials of one process
        bench.run(cand("lora", LORA), fidelity=Fidelity(stop_at=ctx.steps))
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
            allocated.append(torch.cuda.memory_allocated())
    leak = allocated[-1] - allocated[0] if allocated else None
    return {"rows": rows, "allocated_after_trials": allocated, "leak_bytes": leak}


def precision(ctx: Ctx) -> dict:
    precisions = ["fp32", "bf16"] if ctx.quick or not ctx.device.startswith("cuda") else \
        ["bf16", "fp32", "tf32"]
    rows = []
    base = ctx.bench()
    for p in precisions:
        bench = replace(base, settings=replace(base.settings, precision=p))
        out, per_step = timed_run(bench, cand("lora", LORA), ctx.steps)
        rows.append({"precision": p, "score": round(out.result.score, 4),
                     "final_loss": round(out.result.final_loss, 4),
                     "s_per_step": round(per_step, 4), "training_peak": out.result.peak_memory})
    return {"rows": rows}


def qlora(ctx: Ctx) -> dict:
    if not has_bnb():
        return {"skipped": "bitsandbytes is not installed"}
    import tempfile

    import bitsandbytes as bnb
    import torch
    from safetensors.torch import load_file, save_file

    from autopeft.data import collate
    from autopeft.export import put_weights, trained_state
    from autopeft.runner import Fidelity
    from autopeft.train import autocast, resolve_device, to_device

    bench = ctx.bench()
    device = resolve_device(ctx.device)
    lora = bench.run(cand("lora", LORA), fidelity=Fidelity(stop_at=ctx.steps))
    q_cand = cand("qlora", LORA)
    q = bench.run(q_cand, fidelity=Fidelity(stop_at=ctx.steps))
    model = q.model.eval()
    layers = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    pad = bench.base.tokenizer.pad_token_id
    inputs = to_device(collate(bench.eval_data, list(range(min(16, len(bench.eval_data)))), pad), device)
    inputs.pop("labels", None)

    def logits(m: Any) -> torch.Tensor:
        with torch.no_grad(), autocast(device, bench.settings.precision):
            return m(**inputs).logits.float()

    before = logits(model)
    with tempfile.TemporaryDirectory() as tmp:  # the trained tensors through a file
        save_file(trained_state(model), f"{tmp}/w.safetensors")
        again = bench.build(q_cand).to(device).eval()
        put_weights(again, load_file(f"{tmp}/w.safetensors"))
    round_trip = (logits(again) - before).abs().max().item()
    del again
    merged = model.merge_and_unload()
    merge_diff = (logits(merged) - before).abs().max().item()
    return {"linear4bit_layers": layers, "qlora_peak": q.result.peak_memory,
            "lora_peak": lora.result.peak_memory,
            "peak_ratio": round(q.result.peak_memory / max(1, lora.result.peak_memory), 3),
            "qlora_score": round(q.result.score, 4), "lora_score": round(lora.result.score, 4),
            "merge_max_logit_diff": merge_diff, "round_trip_max_logit_diff": round_trip}


def sharing(ctx: Ctx) -> dict:
    """``autopeft search`` with 1, 2 and 4 workers on the GPU (each capped at its share)."""
    import optuna

    space = Path(ctx.work) / "share.yaml"
    space.write_text("candidates: [lora, bitfit]\nlearning_rate: {low: 1.0e-4, high: 1.0e-3}\n")
    configs = [1] if ctx.quick else [1, 2, 4]
    trials = 2 if ctx.quick else 6
    rows = []
    for k in configs:
        study = f"share{k}"
        url = f"sqlite:///{Path(ctx.work) / (study + '.db')}"
        d, s = ctx.data_settings(), ctx.settings()
        cmd = [sys.executable, "-m", "autopeft", "search", "--task", "sst2", "--model", ctx.model,
               "--data-dir", ctx.data, "--space", str(space), "--study", study, "--storage", url,
               "--n-trials", str(trials), "--trial-steps", str(ctx.steps), "--no-warm-start",
               "--pruner", "none", "--refit-share", "0", "--quiet", "--device", ctx.device,
               "--train-samples", str(d.train_samples), "--eval-samples", str(d.eval_samples),
               "--batch-size", str(s.batch_size), "--max-length", str(s.max_length),
               "--workers", str(k), "--trials-per-gpu", str(k)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ctx.work, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        row: dict[str, Any] = {"workers": k, "trials_per_gpu": k, "exit": proc.returncode,
                               "wall_s": round(wall, 1)}
        if proc.returncode == 0:
            ts = optuna.load_study(study_name=study, storage=url).trials
            done = [t for t in ts if t.state.name == "COMPLETE"]
            row.update(complete=len(done), trials_per_minute=round(60 * len(done) / wall, 2),
                       out_of_memory=sum(bool(t.user_attrs.get("out_of_memory")) for t in ts),
                       failed=sum(t.state.name == "FAIL" for t in ts))
        else:
            row["stderr"] = proc.stderr.strip().splitlines()[-1:]
        rows.append(row)
    return {"rows": rows}


def cuda_error(ctx: Ctx) -> dict:
    """A real device-side assert (on the CPU: the same error, raised) fails its trial; the
    trial process restarts and the next valid trial trains."""
    from autopeft.isolation import IsolatedBench
    from autopeft.runner import Fidelity

    os.environ["AUTOPEFT_PLUGINS"] = "gpu_check_fault"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(ROOT),
                                                             os.environ.get("PYTHONPATH")]))
    import gpu_check_fault  # noqa: F401  (registers the method here too)

    out: dict[str, Any] = {}
    with IsolatedBench(ctx.model, ctx.data_settings(), ctx.settings(),
                       str(Path(ctx.work) / "cache")) as iso:
        iso.run(cand("lora", LORA), fidelity=Fidelity(stop_at=1))
        pid = iso._proc.pid
        try:
            iso.run(cand("device_assert"), fidelity=Fidelity(stop_at=ctx.steps))
            out["failing_trial"] = "did not fail"
        except Exception as exc:
            out["failing_trial"] = str(exc).splitlines()[0][:200]
        out["child_restarted"] = iso._proc is None
        after = iso.run(cand("lora", LORA), fidelity=Fidelity(stop_at=ctx.steps))
        out["next_trial_steps"] = after.result.steps
        out["next_trial_score"] = round(after.result.score, 4)
        out["new_child"] = iso._proc.pid != pid
    out["ok"] = out["child_restarted"] and out["new_child"] and out["next_trial_steps"] == ctx.steps
    return out


# -- running and reporting ---------------------------------------------------------------------

def run_section(name: str, ctx: Ctx) -> dict:
    """``name`` in a process of its own, within its timeout."""
    limit = SECTIONS[name][1 if ctx.quick else 0]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name,
           "--ctx", json.dumps(asdict(ctx))]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {limit} s"}
    took = round(time.perf_counter() - t0, 1)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"exit code {proc.returncode}", "stderr": tail, "seconds": took}
    return {**json.loads(lines[-1]), "seconds": took}


def markdown(report: dict) -> str:
    env = report["sections"].get("environment", {})
    lines = [f"Command: `python bench/gpu_check.py{' --quick' if report['quick'] else ''}`"
             f" on {env.get('name', report['device'])} ({report['date']}).", ""]
    for name, body in report["sections"].items():
        lines.append(f"**{name}** ({body.get('seconds', '?')} s)")
        rows = body.get("rows")
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            lines += ["", "| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
            lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
        rest = {k: v for k, v in body.items() if k not in ("rows", "seconds")}
        if rest:
            lines += ["", "- " + "; ".join(f"{k}: {v}" for k, v in rest.items())]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="a tiny model, a few steps")
    p.add_argument("--data-dir", default=default_data(),
                   help="holds glue/sst2 (default ../shared/data, else ./shared/data)")
    p.add_argument("--work", help="scratch folder (default: a new temporary one)")
    p.add_argument("--out", help="the JSON report (default bench/gpu_check.json; --quick: in --work)")
    p.add_argument("--benchmarks", help="write the BENCHMARKS.md section here (default: "
                                        "BENCHMARKS.md on a GPU without --quick; else none)")
    p.add_argument("--only", action="append", choices=list(SECTIONS), help="run only these sections")
    p.add_argument("--section", help=argparse.SUPPRESS)
    p.add_argument("--ctx", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.section:  # inside a section's own process
        from autopeft.models import quiet_libraries

        quiet_libraries()
        print(json.dumps(globals()[args.section](Ctx(**json.loads(args.ctx))), default=str))
        return 0
    import tempfile

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine, or with --device cpu "
              "--quick for the CPU-runnable parts", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    model = make_model(work / ("tiny-roberta" if args.quick else "roberta-base-random"),
                       args.quick, Path(args.data_dir))
    ctx = Ctx(str(model), args.data_dir, str(work), args.device, args.quick)
    report: dict[str, Any] = {"device": args.device, "quick": args.quick,
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "sections": {}}
    for name in args.only or SECTIONS:
        report["sections"][name] = run_section(name, ctx)
        print(f"{name}: {json.dumps(report['sections'][name], default=str)[:300]}", flush=True)
    out = Path(args.out) if args.out else (work / "gpu_check.json" if args.quick
                                           else HERE / "gpu_check.json")
    out.write_text(json.dumps(report, indent=2, default=str))
    target = args.benchmarks or (None if args.quick or not args.device.startswith("cuda")
                                 else str(ROOT / "BENCHMARKS.md"))
    if target:
        write_section("gpu-check", "## GPU check\n\n" + markdown(report), Path(target))
    failed = [n for n, s in report["sections"].items() if "error" in s]
    print(f"report: {out}" + (f"; failed sections: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
