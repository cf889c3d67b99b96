"""The CUDA path, tested with stand-ins on a machine without a GPU (``bench/gpu_check.py``
runs it for real where there is one): memory caps for workers sharing a GPU, native bf16,
which CUDA errors break a process, training memory measured apart from scoring, the frozen
base in bf16, batches prepared off the main thread, fused AdamW, TF32, QLoRA's precision,
and when out-of-memory failures block larger candidates."""
from __future__ import annotations

import threading
import types
from typing import Any

import numpy as np
import optuna
import pytest
import torch

from autopeft import devices
from autopeft.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)
CUDA = torch.device("cuda")


GIB = 2**30


def test_a_worker_sharing_its_gpu_caps_its_own_allocations(monkeypatch: pytest.MonkeyPatch) -> None:
    capped: list[tuple[float, Any]] = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda f, d: capped.append((f, d)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: types.SimpleNamespace(total_memory=80 * GIB))
    monkeypatch.delenv(devices.SHARE_ENV, raising=False)
    assert devices.claim_share(CUDA) == 1.0 and capped == []  # alone on its GPU: no cap
    monkeypatch.setenv(devices.SHARE_ENV, "0.25")
    assert devices.claim_share(torch.device("cpu")) == 1.0 and capped == []  # CPU: nothing
    fraction = (0.25 * 0.9 * 80 * GIB - devices.CUDA_CONTEXT_BYTES) / (80 * GIB)
    assert devices.claim_share(CUDA) == pytest.approx(fraction) and capped == [(fraction, CUDA)]


@pytest.mark.parametrize("k, total_gib", [(2, 80), (4, 80), (8, 24), (4, 141)])
def test_k_capped_workers_and_their_cuda_contexts_fit_in_the_usable_memory(
        k: int, total_gib: int) -> None:
    """The 1/K cap leaves each process's CUDA context (outside the allocator) and the
    usable share's slack: K caps plus K contexts never exceed 90% of the device."""
    total = total_gib * GIB
    fraction = devices.share_fraction(1 / k, total)
    held = k * (fraction * total + devices.CUDA_CONTEXT_BYTES)
    assert held == pytest.approx(devices.USABLE_FRACTION * total)
    assert fraction < 1 / k  # a plain 1/K would let the contexts push a neighbour out


def test_the_search_process_takes_its_own_slot_and_gives_it_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(devices.SHARE_ENV, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # not the slot's 1 (a pytest-xdist worker runs on 1)
    try:
        with devices.own_slot(devices.Slot("4", 0.5, 1)):
            assert devices.os.environ[devices.SHARE_ENV] == "0.5"  # its trial child inherits it
            assert torch.get_num_threads() == 1
        assert devices.SHARE_ENV not in devices.os.environ and torch.get_num_threads() == 3
        with devices.own_slot(devices.Slot(None)):  # CPU: threads and environment untouched
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


def fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int],
             native: bool) -> list[Any]:
    """A CUDA device of ``capability``; returns the devices asked about."""
    asked: list[Any] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: asked.append(i) or capability)
    monkeypatch.setattr(torch.cuda, "device", lambda i: __import__("contextlib").nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native or including_emulation)
    return asked


def test_auto_precision_takes_bf16_only_where_the_training_device_has_it_natively(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.train import uses_bf16

    asked = fake_gpu(monkeypatch, (7, 0), native=False)  # V100: bf16 only emulated
    assert not devices.bf16_native(torch.device("cuda:1"))
    assert asked == [1]  # the training device, not the current one
    assert not uses_bf16(torch.device("cuda:1"), "auto") and uses_bf16(CUDA, "bf16")
    fake_gpu(monkeypatch, (8, 0), native=True)  # A100
    assert devices.bf16_native(CUDA) and uses_bf16(CUDA, "auto")
    assert not uses_bf16(CUDA, "fp32") and not uses_bf16(torch.device("cpu"), "auto")


def test_cuda_errors_that_break_the_context_are_told_from_the_rest() -> None:
    assert devices.cuda_broken(RuntimeError("CUDA error: device-side assert triggered"))
    assert devices.cuda_broken(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not devices.cuda_broken(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert not devices.cuda_broken(RuntimeError("injected fault at step 1"))
    assert not devices.cuda_broken(ValueError("shapes do not match"))


class FakeAllocator:
    """torch.cuda's memory counters, driven by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, allocated: int):
        self.allocated = self.peak = allocated
        for name, fn in {"synchronize": lambda d=None: None,
                         "reset_peak_memory_stats": self.reset,
                         "memory_allocated": lambda d=None: self.allocated,
                         "max_memory_allocated": lambda d=None: self.peak}.items():
            monkeypatch.setattr(torch.cuda, name, fn)

    def reset(self, d: Any = None) -> None:
        self.peak = self.allocated

    def use(self, n: int) -> None:  # allocate n bytes, then free them
        self.peak = max(self.peak, self.allocated + n)


def test_training_memory_is_measured_apart_from_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.memory import PeakMemory

    gpu = FakeAllocator(monkeypatch, allocated=1000)  # a worker's base kept on the device
    model = torch.nn.Linear(2, 2)
    memory = PeakMemory(model, torch.optim.AdamW(model.parameters()), CUDA)
    gpu.use(300)  # a training step
    with memory.scoring():
        gpu.use(5000)  # scoring a rung: a large eval batch's logits
    gpu.use(350)  # training again
    with memory.scoring():
        gpu.use(4000)  # the final scoring
    # What the process held before the trial is not the trial's; scoring is not training.
    assert memory.bytes() == 350 and memory.scoring_bytes() == 5000


def test_the_longest_batch_counts_with_the_optimiser_state_it_did_not_have_yet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.memory import PeakMemory

    gpu = FakeAllocator(monkeypatch, allocated=1000)
    model = torch.nn.Linear(2, 2)  # 6 parameters: AdamW's two moments, 48 bytes, and a step
    optimizer = torch.optim.AdamW(model.parameters())
    memory = PeakMemory(model, optimizer, CUDA)
    with memory.longest():
        gpu.use(900)  # the widest batch: weights' gradients and activations, no state yet
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()  # the state exists from the first step on
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values())
    gpu.use(300)  # a short batch of the run itself
    assert memory.bytes() == 900 + state  # the longest batch's, with the state it will hold


def test_the_loop_scores_rungs_and_the_end_inside_the_scoring_measurement(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    from autopeft.memory import PeakMemory
    from autopeft.train import TrainSettings, train
    from test_train_loop import Bag, data

    inside: list[bool] = []
    state = {"scoring": False}

    @contextlib.contextmanager
    def scoring(self: Any) -> Any:
        state["scoring"] = True
        yield
        state["scoring"] = False

    monkeypatch.setattr(PeakMemory, "scoring", scoring)
    settings = TrainSettings(batch_size=4, epochs=2, device="cpu")
    result = train(Bag(), data(12), lambda m: inside.append(state["scoring"]) or {"score": 0.5},
                   1e-2, 0, settings, 0, after_step=lambda s, m: inside.append(state["scoring"]))
    assert inside == [True] * result.steps  # every rung (after_step) and the end
    assert result.scoring_peak_memory is None  # CPU: scoring saves nothing, none measured


class Frozen(torch.nn.Module):
    """A block with a frozen weight, a bias, a LayerNorm and a trainable adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.adapter = torch.nn.Linear(4, 4)


@pytest.mark.parametrize("trains, kept_fp32", [
    ("adapter", {"adapter.weight", "adapter.bias"}),  # LoRA-like: the new tensors
    ("bias", {"dense.bias", "norm.bias", "adapter.bias"}),  # BitFit: every bias trains
    ("all", {"dense.weight", "dense.bias", "norm.weight", "norm.bias", "adapter.weight",
             "adapter.bias"}),  # full fine-tuning: nothing is cast
])
def test_a_frozen_base_trains_in_bf16_and_whatever_trains_stays_fp32(trains: str,
                                                                    kept_fp32: set[str]) -> None:
    from autopeft.train import frozen_in_bf16

    model = Frozen()
    for name, p in model.named_parameters():
        p.requires_grad_(trains == "all" or (trains == "bias" and name.endswith("bias"))
                         or (trains == "adapter" and name.startswith("adapter")))
    frozen_in_bf16(model)
    assert {n for n, p in model.named_parameters() if p.dtype == torch.float32} == kept_fp32
    assert frozen_in_bf16(Frozen().requires_grad_(False)) == 6
    quantised = Frozen().requires_grad_(False)
    quantised.is_loaded_in_4bit = True
    assert frozen_in_bf16(quantised) == 0


def test_the_static_prediction_sees_a_bf16_base() -> None:
    from autopeft.search.constraints import static_memory

    model = Frozen().requires_grad_(False)
    model.adapter.requires_grad_(True)
    frozen, trained = 4 * 4 + 4 + 4 + 4, 4 * 4 + 4
    assert static_memory(model) == 4 * (frozen + trained) + 3 * 4 * trained
    assert static_memory(model, bf16_frozen=True) == 2 * frozen + 4 * trained + 3 * 4 * trained


def test_on_cuda_batches_are_collated_and_pinned_ahead_in_another_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import autopeft.train as train_mod

    pinned, threads = [], []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t) or t)
    monkeypatch.setattr(train_mod, "to_device", lambda batch, device: batch)

    def make(rows: list[int]) -> dict[str, torch.Tensor]:
        threads.append(threading.current_thread().name)
        return {"input_ids": torch.tensor(rows)}

    rows = [[0, 1], [2, 3], [4, 5], [6, 7]]
    with train_mod.batches_on(CUDA, iter(rows), make) as stream:
        got = list(zip(range(3), stream))
    # closed: the batch drawn ahead is finished, so no collate thread outlives the stream
    assert not [t for t in threading.enumerate() if t.name.startswith("autopeft-collate")]
    assert [r for _, (r, _) in got] == rows[:3]  # in order, the next one ahead
    assert [b["input_ids"].tolist() for _, (_, b) in got] == rows[:3]
    assert set(threads) == {t for t in threads if t.startswith("autopeft-collate")} and pinned
    threads.clear()
    cpu = list(train_mod.batches_on(torch.device("cpu"), iter(rows), make))
    assert [r for r, _ in cpu] == rows and set(threads) == {threading.current_thread().name}


def test_only_pinned_batches_are_copied_asynchronously(monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.train import to_device

    calls: list[bool] = []

    class T:
        def __init__(self, pinned: bool):
            self.pinned = pinned

        def is_pinned(self) -> bool:
            return self.pinned

        def to(self, device: Any, non_blocking: bool) -> T:
            calls.append(non_blocking)
            return self

    to_device({"a": T(True), "b": T(False)}, CUDA)
    to_device({"a": T(True)}, torch.device("cpu"))
    assert calls == [True, False, False]


def test_adamw_is_fused_on_cuda_and_tf32_follows_the_precision(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import autopeft.train as train_mod

    made: list[dict] = []
    monkeypatch.setattr(torch.optim, "AdamW", lambda groups, **kw: made.append(kw))
    model = torch.nn.Linear(2, 2)
    train_mod._optimizer(model, 1e-3, 0.01, fused=True)
    train_mod._optimizer(model, 1e-3, 0.01)
    assert made[0].get("fused") is True and "fused" not in made[1]
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        train_mod.set_tf32(CUDA, "tf32")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        train_mod.set_tf32(CUDA, "fp32")  # exact fp32
        assert not torch.backends.cuda.matmul.allow_tf32
        train_mod.set_tf32(torch.device("cpu"), "tf32")  # CPU: untouched
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
        torch.backends.cudnn.allow_tf32 = True


def test_qlora_refuses_fp16_without_a_loss_scaler_and_picks_native_bf16(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.methods import make_spec
    from autopeft.methods.qlora import compute_dtype

    with pytest.raises(UserError, match="fp16 is not offered: autopeft trains without a loss"):
        make_spec("qlora", {"compute_dtype": "fp16"})
    spec = make_spec("qlora", {})
    assert compute_dtype(spec, torch.device("cpu")) == torch.float32
    fake_gpu(monkeypatch, (7, 5), native=False)  # T4
    assert compute_dtype(spec, CUDA) == torch.float32
    fake_gpu(monkeypatch, (9, 0), native=True)  # H100
    assert compute_dtype(spec, CUDA) == torch.bfloat16


def test_a_kept_base_on_a_gpu_draws_the_new_head_as_on_the_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The head ``from_pretrained`` created is re-drawn on the CPU generator wherever the
    model is, so a build from a base kept on a GPU starts from the same head."""
    from autopeft.models import NEW_PARAMETERS_ATTR, reinit_new_parameters

    moved: list[str] = []

    class Head(torch.nn.Linear):
        def to(self, device: Any) -> Any:  # record the moves; stay on the CPU
            moved.append(str(device))
            return self

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = Head(4, 2)

        def _init_weights(self, module: Any) -> None:
            module.weight.data.normal_()

    model = Model()
    setattr(model, NEW_PARAMETERS_ATTR, ("classifier.weight",))
    torch.manual_seed(3)
    reinit_new_parameters(model)
    on_cpu = model.classifier.weight.detach().clone()
    assert moved == []
    monkeypatch.setattr(torch.Tensor, "device", property(lambda t: CUDA))
    torch.manual_seed(3)
    reinit_new_parameters(model)
    monkeypatch.undo()
    assert moved == ["cpu", "cuda"] and torch.equal(model.classifier.weight, on_cpu)


# -- out of memory: when it blocks larger candidates ----------------------------------------

def runner_on(study: optuna.Study) -> Any:
    from autopeft.search.constraints import Limits
    from autopeft.search.objective import TrialRunner

    return TrialRunner(study, None, None, None, Limits(), None, None, None)


def add(study: optuna.Study, state: str, predicted: int, oom: bool = False) -> None:
    from optuna.trial import TrialState, create_trial

    from autopeft.results import PREDICTED_MEMORY

    attrs = {PREDICTED_MEMORY: predicted, **({"out_of_memory": True} if oom else {})}
    s = TrialState[state]
    study.add_trial(create_trial(state=s, values=[0.5, 1, 1] if state == "COMPLETE" else None,
                                 user_attrs=attrs))


def test_one_out_of_memory_blocks_nothing_two_block_larger_candidates_until_one_succeeds() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    runner = runner_on(study)
    add(study, "FAIL", 100, oom=True)
    assert runner._ran_out_before(500) == []  # a neighbour's doing, perhaps: tried again
    add(study, "FAIL", 200, oom=True)
    assert "2 trials that ran out of memory" in runner._ran_out_before(500)[0]
    assert runner._ran_out_before(150) == []  # only one ran out at or below 150
    add(study, "COMPLETE", 300)  # a larger candidate trained after both: the block lifts
    assert runner._ran_out_before(500) == []
    add(study, "FAIL", 400, oom=True)
    add(study, "FAIL", 450, oom=True)
    assert runner._ran_out_before(500) and runner._ran_out_before(350) == []


# -- placing this machine's workers before the search starts ----------------------------------

class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(text)


def placed(monkeypatch: pytest.MonkeyPatch, peak: int | None, gib: int, **cfg: Any) -> tuple:
    """``placement`` on 2 stand-in GPUs of ``gib`` GiB, with a study that measured ``peak``."""
    from autopeft.memory import CUDA_METHOD
    from autopeft.search.config import SearchConfig
    from autopeft.search.study import placement
    from autopeft.train import TrainSettings

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    import autopeft.search.study as study_mod

    asked: list[str] = []
    monkeypatch.setattr(study_mod, "device_memory", lambda e: asked.append(e) or gib * 2**30)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    if peak is not None:
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, values=[0.9, 1, peak],
            user_attrs={"peak_memory_bytes": peak, "memory_method": CUDA_METHOD}))
    base = torch.nn.Linear(256, 256)  # 65,792 parameters, 263,168 bytes kept on the device
    bench = types.SimpleNamespace(settings=TrainSettings(device="cuda:1"),
                                  base=types.SimpleNamespace(model=base))
    notes = Notes()
    cfg = SearchConfig(task="sst2", model="m", n_trials=8, **cfg)
    slots = placement(cfg, bench, study, notes)
    assert asked in ([], ["7"])  # the search's own GPU, when there is something to check
    if len(slots) == 1:  # alone on its GPU: the GPU is not even asked
        assert asked == []
    return slots, notes.lines


def test_placement_shares_the_gpus_and_says_in_one_line_when_trials_may_not_fit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slots, notes = placed(monkeypatch, 10 * 2**30, 80, workers=4, trials_per_gpu=2)
    assert [s.device for s in slots] == ["7", "6", "7", "6"]  # the search keeps its cuda:1
    assert {s.share for s in slots} == {0.5} and notes == []  # 2 x 10 GiB fit in 80
    slots, notes = placed(monkeypatch, 50 * 2**30, 80, workers=4, trials_per_gpu=2)
    assert len(slots) == 4 and len(notes) == 1 and "may not fit" in notes[0]
    with pytest.raises(UserError, match="--trials-per-gpu 1"):
        placed(monkeypatch, None, 80, workers=3)
    slots, notes = placed(monkeypatch, None, 80)  # the default: the search alone on cuda:1
    assert [(s.device, s.share) for s in slots] == [("7", 1.0)] and notes == []


def test_trials_per_gpu_auto_starts_as_many_workers_as_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    slots, notes = placed(monkeypatch, 20 * 2**30, 141, trials_per_gpu="auto")
    assert len(slots) == 2 * 6 and {s.share for s in slots} == {1 / 6}
    assert "auto: 6 per GPU (12 workers)" in notes[0]


def test_trials_per_gpu_is_a_count_or_auto() -> None:
    from autopeft.cli import parser
    from autopeft.search.config import SearchConfig

    for bad in (0, "two", 1.5):
        with pytest.raises(UserError, match="trials_per_gpu"):
            SearchConfig(task="sst2", model="m", n_trials=1, trials_per_gpu=bad)
    args = parser().parse_args(["search", "--task", "sst2", "--model", "m", "--trials-per-gpu", "auto"])
    assert args.trials_per_gpu == "auto"
    args = parser().parse_args(["search", "--task", "sst2", "--model", "m", "--trials-per-gpu", "3"])
    assert args.trials_per_gpu == 3


def test_a_checkpoint_on_cuda_continues_after_the_batches_trained_not_the_one_drawn_ahead(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import autopeft.train as train_mod
    from test_train_loop import data

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: t)
    monkeypatch.setattr(train_mod, "to_device", lambda batch, device: batch)
    enc = data(10)
    make = lambda rows: {"input_ids": torch.tensor(list(rows))}  # noqa: E731
    for device in (CUDA, torch.device("cpu")):
        stream = train_mod.batches_on(device, train_mod.micro_batches(enc, 4, 0), make)
        reference = train_mod.micro_batches(enc, 4, 0)
        for _ in range(4):  # across an epoch's end (3 batches an epoch)
            next(stream)
            next(reference)
            assert stream.position == reference.position


# -- the GPU defects of issue 30, on the CPU (bench/gpu_check.py checks the rest on a GPU) ------

def test_a_bf16_checkpoint_loads_as_fp32_master_weights(tmp_path: Any) -> None:
    """transformers 5 loads ``dtype="auto"``: without an explicit dtype a bf16 checkpoint
    (every LLaMA) would train its head, BitFit's biases and full fine-tuning in bf16."""
    from transformers import AutoModelForSequenceClassification

    from autopeft.models import load_base
    from autopeft.tasks import get_task
    from conftest import make_tiny_bert

    folder = make_tiny_bert(tmp_path / "m")
    AutoModelForSequenceClassification.from_pretrained(folder).to(torch.bfloat16).save_pretrained(folder)
    base = load_base(str(folder), get_task("sst2"))
    assert {p.dtype for p in base.model.parameters()} == {torch.float32}


@pytest.mark.parametrize("method", ["lora", "bitfit", "full", "qlora"])
def test_a_bf16_build_copies_frozen_weights_in_bf16_and_trains_fp32_master_weights(
        method: str) -> None:
    """No fp32 copy of the whole model next to the kept base: the copy is bf16; what trains
    (and what a 4-bit model keeps unquantised) is fp32, with the base's exact values, and
    the new head is drawn as in a fp32 build."""
    from autopeft.build import build
    from autopeft.candidate import Candidate, MethodSpec
    from families import tiny_model

    base = tiny_model("bert")
    cand = Candidate([MethodSpec(method, {"r": 2} if "lora" in method else {})], 1e-3, seed=3)
    plain, low = build(base, cand, 10), build(base, cand, 10, frozen_dtype=torch.bfloat16)
    want = dict(plain.named_parameters())
    for name, p in low.named_parameters():
        if p.requires_grad:
            assert p.dtype == torch.float32, name
            if "lora_" not in name and "modules_to_save" not in name:  # peft's own: via bf16
                assert torch.equal(p, want[name]), name
        elif p.dtype.is_floating_point:
            assert p.dtype == (torch.float32 if method == "qlora" else torch.bfloat16), name
    frozen = [n for n, p in low.named_parameters() if p.dtype == torch.bfloat16]
    assert bool(frozen) == (method in ("lora", "bitfit"))


def test_what_the_build_allocates_counts_in_the_trial_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.memory import build_peak
    from autopeft.train import TrainSettings, train
    from test_train_loop import Bag, data

    gpu = FakeAllocator(monkeypatch, allocated=1000)  # the kept base
    with build_peak(CUDA) as built:
        gpu.use(700)  # the copy and its casts, freed in part afterwards
    assert built == [700]
    with build_peak(torch.device("cpu")) as none:
        gpu.use(900)
    assert none == [0]
    settings = TrainSettings(batch_size=4, epochs=1, device="cpu")
    small = train(Bag(), data(8), lambda m: {"score": 0.5}, 1e-2, 0, settings, 0)
    big = train(Bag(), data(8), lambda m: {"score": 0.5}, 1e-2, 0, settings, 0,
                build_bytes=10 * small.peak_memory)
    assert big.peak_memory == big.build_peak_memory == 10 * small.peak_memory
    assert small.build_peak_memory is None


class PipeEnd:
    """A trial process's end of the pipe, scripted: ``inbox`` answers, ``sent`` collects."""

    def __init__(self, inbox: list) -> None:
        self.inbox, self.sent = inbox, []

    def send(self, msg: tuple) -> None:
        self.sent.append(msg)

    def recv(self) -> tuple:
        return self.inbox.pop(0)

    def poll(self) -> bool:
        return False


def test_a_broken_cuda_context_is_reported_with_its_own_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child replies with the device-side assert before anything touches CUDA again
    (``empty_cache`` on a broken context raises and would kill it: "exit code 1")."""
    from autopeft import isolation
    from autopeft.runner import Bench

    class Broken:
        def run(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("CUDA error: device-side assert triggered")

    def cache_raises() -> None:
        raise RuntimeError("CUDA error: device-side assert triggered (empty_cache)")

    monkeypatch.setattr(Bench, "load", classmethod(lambda cls, *a, **k: Broken()))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", cache_raises)
    isolation._release()  # never raises
    cand = {"methods": [{"name": "lora", "params": {}}], "learning_rate": 1e-3, "seed": 0}
    conn = PipeEnd([("run", cand, [], {}, None, None), ("exit",)])
    released: list[int] = []  # replies sent when the child touched CUDA's cache
    monkeypatch.setattr(isolation, "_release", lambda: released.append(len(conn.sent)))
    isolation._serve_until_exit(conn, "m", {"task": "sst2"}, {}, None, False)
    assert released == []  # nothing between the broken trial and its reply
    assert conn.sent[0] == ("ready",)
    assert conn.sent[1][:2] == ("error", "RuntimeError") and conn.sent[1][3] is True
    assert "device-side assert triggered" in conn.sent[1][2]
    assert conn.inbox == [("exit",)]  # it ended after its reply: a fresh child follows


def test_a_trial_process_sends_its_steps_together_not_one_message_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps travel to the parent at most every ``STEP_REPORT_SECONDS`` (and all before a
    rung and before the outcome), so a step costs no pipe message; none is lost."""
    from autopeft import isolation
    from autopeft.runner import Bench

    clock = [0.0]
    monkeypatch.setattr(isolation.time, "monotonic", lambda: clock[0])

    class Steps:
        def run(self, cand: Any, on_step: Any, eval_at: Any, on_eval: Any, *a: Any) -> Any:
            for step in range(1, 7):
                clock[0] += 0.03  # 30 ms a step: the first message after 4 steps
                on_step(step, 6, float(step))
                if step == 5:
                    on_eval(5, 0.8)
            raise ValueError("done training")  # an outcome without building a real one

    monkeypatch.setattr(Bench, "load", classmethod(lambda cls, *a, **k: Steps()))
    cand = {"methods": [{"name": "lora", "params": {}}], "learning_rate": 1e-3, "seed": 0}
    conn = PipeEnd([("run", cand, [5], {}, None, None), ("continue",), ("exit",)])
    isolation._serve_until_exit(conn, "m", {"task": "sst2"}, {}, None, False)
    kinds = [m[0] if m[0] != "steps" else [s[0] for s in m[1]] for m in conn.sent]
    assert kinds == ["ready", [1, 2, 3, 4], [5], "rung", [6], "error"]


def test_the_trainer_paths_peak_leaves_its_evaluations_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.hf_trainer import Metric, RungCallback

    gpu = FakeAllocator(monkeypatch, allocated=1000)
    model = torch.nn.Linear(2, 2)
    rungs = RungCallback(model, Metric("eval_accuracy", True), 2, [1], None, None)
    args = types.SimpleNamespace(device="cuda")
    control = types.SimpleNamespace(should_evaluate=False, should_training_stop=False)
    opt = torch.optim.AdamW(model.parameters())
    for step, train_bytes, eval_bytes in ((1, 300, 5000), (2, 350, 4000)):
        rungs.on_step_begin(args, None, control, optimizer=opt)
        gpu.use(train_bytes)
        rungs.on_step_end(args, types.SimpleNamespace(global_step=step), control)
        gpu.use(eval_bytes)  # the Trainer evaluates between steps, and after the last
    assert rungs.memory.bytes() == 350 and rungs.memory.scoring_bytes() == 5000


def test_qlora_quantises_where_the_model_will_train() -> None:
    from autopeft.methods.qlora import _target

    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert _target(None, cpu) == cpu and _target("cpu", cpu) == cpu
    assert _target("cuda:1", cpu) == torch.device("cuda:1")  # the Trainer path builds on CPU
    assert _target("cuda:1", meta) == meta  # a skeleton stays a skeleton
    assert _target("auto", cpu) == (torch.device("cuda", 0) if torch.cuda.is_available() else cpu)


def test_qlora_predicts_its_4bit_weights_and_asks_bitsandbytes_to_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The static prediction counts 4 bits a quantised weight, as the built model stores
    them (``--max-memory`` no longer skips QLoRA candidates that fit); bitsandbytes must run
    a 4-bit op on the device, not merely import."""
    import bitsandbytes.functional as F

    from autopeft.build import build, count_total
    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.methods import qlora
    from autopeft.search.constraints import predict, static_memory
    from autopeft.validate import skeleton
    from families import tiny_model

    base = tiny_model("bert")
    cand = Candidate([MethodSpec("qlora", {"r": 2})], 1e-3)
    pred = predict(skeleton(base), base, cand, 10)
    real = build(base, cand, 10)
    assert pred.memory_bytes == static_memory(real) and pred.total_params == count_total(real)
    lora = predict(skeleton(base), base, Candidate([MethodSpec("lora", {"r": 2})], 1e-3), 10)
    assert pred.memory_bytes < lora.memory_bytes
    monkeypatch.setattr(qlora, "_works", {})
    assert qlora.works_on(torch.device("cpu")) is None

    def no_kernel(*a: Any, **k: Any) -> Any:
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(qlora, "_works", {})
    monkeypatch.setattr(F, "quantize_4bit", no_kernel)
    with pytest.raises(UserError, match="kernels do not run on cpu .*no kernel image"):
        build(base, cand, 10)


def test_on_cuda_a_steps_losses_are_read_a_step_late_without_a_host_sync(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same steps and losses as reading each at once; ``on_step(s)`` comes after step
    s + 1 has computed (its forward ran), except at a rung and at the end."""
    import autopeft.train as train_mod
    from autopeft.train import TrainSettings, train
    from test_train_loop import Bag, data

    monkeypatch.setattr(train_mod, "longest_batch", lambda *a, **k: None)  # its forward: not a step's

    def run(late: bool) -> list[tuple[int, float, int]]:
        monkeypatch.setattr(train_mod, "reports_late", lambda device: late)
        forwards, calls = [0], []
        model = Bag()
        model.register_forward_hook(lambda *a: forwards.__setitem__(0, forwards[0] + 1))
        settings = TrainSettings(batch_size=4, epochs=1, device="cpu")
        train(model, data(24), lambda m: {"score": 0.5}, 1e-2, 0, settings, 0,
              on_step=lambda s, n, loss: calls.append((s, loss, forwards[0])),
              after_step=lambda s, m: None, after_step_at={3})
        return calls

    at_once, late = run(False), run(True)
    assert [c[:2] for c in late] == [c[:2] for c in at_once]
    assert [s for s, _, _ in late] == [1, 2, 3, 4, 5, 6]
    assert [f for _, _, f in at_once] == [1, 2, 3, 4, 5, 6]
    assert [f for _, _, f in late] == [2, 3, 3, 5, 6, 6]  # step 3: a rung; 6: the end


def test_a_qlora_build_quantises_from_the_base_without_copying_those_layers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The layers QLoRA makes 4-bit are never copied in full precision (``Method.replaces``):
    the copy holds weightless stand-ins and each layer is quantised from the base, one at a
    time, to the same model a full copy gives."""
    import dataclasses

    from autopeft.build import _copy, build, context_for
    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.methods import get_method, make_spec
    from autopeft.methods.registry import METHODS
    from families import tiny_model

    base = tiny_model("bert")
    spec = make_spec("qlora", {"r": 2})
    names = get_method("qlora").replaces(base, spec, context_for(base))
    assert "bert.encoder.layer.0.attention.self.query.weight" in names
    assert not any(n.startswith("classifier.") for n in names)
    copied, _ = _copy(base, None, names)
    params = dict(copied.named_parameters())
    assert all(params[n].is_meta for n in names)
    assert not any(p.is_meta for n, p in params.items() if n not in names)
    cand = Candidate([MethodSpec("qlora", {"r": 2})], 1e-3)
    import autopeft.build as build_mod

    asked: list[set] = []
    monkeypatch.setattr(build_mod, "_copy", lambda b, d, r: asked.append(r) or _copy(b, d, r))
    lean = dict(build(base, cand, 10).named_parameters())
    assert asked == [names]  # build asked for the stand-ins
    monkeypatch.setitem(METHODS, "qlora", dataclasses.replace(METHODS["qlora"], replaces=None))
    full = dict(build(base, cand, 10).named_parameters())
    assert lean.keys() == full.keys()
    assert all(torch.equal(lean[n], full[n]) for n in full)
