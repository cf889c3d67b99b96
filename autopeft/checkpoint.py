"""A training run's checkpoint: all it takes to go on exactly where the run stopped, so a
run stopped at a rung and continued (in this process or a fresh one) ends bit for bit where
the uninterrupted run ends (``tests/test_checkpoint.py``).

What a ``Checkpoint`` holds, and why each part:

* ``tensors``: every trainable tensor (``contract.trainable_parameters``) and every buffer
  (what methods register, e.g. VeRA's shared matrices): the model is rebuilt from the
  candidate (same seed, same frozen weights), then these are copied in;
* ``optimizer`` and ``scheduler``: AdamW's moments and step counts, the schedule's position;
* ``rng``: torch's CPU generator (and CUDA's where present), Python's ``random`` and
  NumPy's global ones: dropout and Child-Tuning F's random masks draw from them;
* ``position``: (epoch, index) of the next micro-batch of ``train.micro_batches``, so the
  continued run draws exactly the next one (an optimiser step may span two epochs);
* ``hooks``: each step hook's own state (``contract.register_step_hook``: AdaLoRA's rank
  allocator, Child-Tuning D's masks); a hook that cannot give its state says so with
  ``can_continue = False`` and its runs are never checkpointed (they train from step 0);
* the loop's counters (``samples``, the last and first loss for the divergence check, the
  peak memory so far) and what identifies the run (``candidate``, ``settings``,
  ``schedule_steps``), checked before a run continues (``mismatch``), and the
  ``rung_scores`` reached, so a continued trial keeps them.

``save`` writes ``torch.save`` to a temporary file and renames it over the old one
(``os.replace``): a reader sees the old checkpoint or the new one, never half of one. Under
a disk cap (``space``: bytes the folder may hold, ``--checkpoint-space``) it writes only
what fits, checked under a lock on the folder so that two workers cannot both take the
last room. ``Writer`` runs the saves on a background thread, so training goes on while
the file is written.
Where the files live is ``paths.checkpoints_dir``; when a run continues is the search's
decision (``search/continuation.py``); the loop that fills them is ``train.train``.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from autopeft.contract import trainable_parameters

# Training settings that do not change what a run computes (a run may continue elsewhere).
NOT_IDENTIFYING = ("device", "eval_batch_size", "num_beams", "max_new_tokens")


@dataclass
class Checkpoint:
    step: int  # optimiser steps done
    schedule_steps: int  # the learning-rate schedule's length the run follows
    position: tuple[int, int]  # (epoch, index) of the next micro-batch
    samples: int  # training examples seen so far
    loss: float  # the last micro-batch's loss
    first_loss: float | None  # the first one (divergence check)
    peak_memory: int  # bytes, the peak so far
    tensors: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    hooks: list[Any]  # each step hook's state_dict() (None: it has none)
    candidate: dict[str, Any] = field(default_factory=dict)  # filled by runner.Bench.run
    settings: dict[str, Any] = field(default_factory=dict)
    rung_scores: dict[int, float] = field(default_factory=dict)

    def mismatch(self, candidate: dict[str, Any], settings: dict[str, Any],
                 schedule_steps: int) -> str | None:
        """Why this checkpoint cannot continue that run (None: it can)."""
        if self.candidate != candidate:
            return "it is of another candidate (or seed)"
        if self.schedule_steps != schedule_steps:
            return (f"it follows a {self.schedule_steps}-step schedule, not a "
                    f"{schedule_steps}-step one")
        if _identifying(self.settings) != _identifying(settings):
            return "it was trained with other training settings"
        return None

    def restore(self, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                hooks: Sequence[Any]) -> None:
        """Put the run's state back: tensors, optimiser, schedule, step hooks, and last the
        random generators (nothing may draw from them after this, before the next step)."""
        named = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        missing = sorted(set(self.tensors) - set(named))
        if missing:
            raise ValueError(f"the checkpoint has tensors this model lacks: {missing[:3]}")
        with torch.no_grad():
            for name, value in self.tensors.items():
                named[name].copy_(value)
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        for hook, state in zip(hooks, self.hooks):
            if state is not None:
                hook.load_state_dict(state)
        set_rng_state(self.rng)


def _identifying(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in NOT_IDENTIFYING}


def settings_dict(settings: Any) -> dict[str, Any]:
    """A ``TrainSettings`` as the checkpoint stores it."""
    return asdict(settings)


CHECKPOINT_BYTES_PER_PARAM = 12  # each trained fp32 tensor and AdamW's two moments
CHECKPOINT_OVERHEAD = 32 * 2**10  # random generators, counters, the format (measured: 22 KiB)


def checkpoint_bytes(trained_params: int, buffer_bytes: int = 0) -> int:
    """About what a run's checkpoint takes on disk, before it is written: the trained
    tensors and AdamW's moments, the model's buffers (``buffer_bytes``; those a method adds,
    e.g. VeRA's shared matrices, come on top: ``save`` checks the real size) and the rest."""
    return CHECKPOINT_BYTES_PER_PARAM * trained_params + buffer_bytes + CHECKPOINT_OVERHEAD


def continuable(hooks: Sequence[Any]) -> bool:
    """Whether every step hook can give and take back its state."""
    return all(getattr(h, "can_continue", True) for h in hooks)


def model_tensors(model: Any) -> dict[str, torch.Tensor]:
    """Copies (on the CPU) of every trainable tensor and every buffer, by name."""
    out = {name: p for name, p in trainable_parameters(model)}
    seen = {id(p) for p in out.values()}
    for name, b in model.named_buffers():
        if id(b) not in seen:
            seen.add(id(b))
            out[name] = b
    return {name: t.detach().to("cpu", copy=True) for name, t in out.items()}


def copied(state: Any) -> Any:
    """A deep copy of a state dict with its tensors on the CPU (training goes on after it)."""
    if torch.is_tensor(state):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: copied(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(copied(v) for v in state)
    return state


def hook_states(hooks: Sequence[Any]) -> list[Any]:
    return [copied(h.state_dict()) if hasattr(h, "state_dict") else None for h in hooks]


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(), "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(checkpoint: Checkpoint, path: str, space: int | None = None) -> bool:
    """Write ``checkpoint`` to ``path`` atomically (a temporary file, then a rename);
    returns whether it was written. ``space``: what the folder's files may hold together,
    in bytes: a checkpoint that does not fit beside the others is not written (the run's
    previous one stays: a continuation starts there), and one that fits only without the
    run's previous one deletes that first (a crash then leaves none, not half of one)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if space is None:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
        return _finish(fd, tmp, path, lambda fh: torch.save(asdict(checkpoint), fh))
    buffer = io.BytesIO()  # its size must be known before it takes any room
    torch.save(asdict(checkpoint), buffer)
    size = buffer.getbuffer().nbytes
    with _locked(folder):
        old = os.path.getsize(path) if os.path.isfile(path) else 0
        others = held(folder) - old
        if others + size > space:
            return False
        if others + old + size > space:
            with contextlib.suppress(FileNotFoundError):  # the search made room meanwhile
                os.unlink(path)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
        try:
            _reserve(fd, size)  # the other writers count it from now on
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
    return _finish(fd, tmp, path, lambda fh: fh.write(buffer.getbuffer()))  # outside the lock


def _finish(fd: int, tmp: str, path: str, write: Any) -> bool:
    """``write`` the open temporary file ``fd`` and rename it to ``path``; it is deleted
    if anything fails."""
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def held(folder: str) -> int:
    """Bytes held by the files in ``folder`` (checkpoints and those being written)."""
    total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):  # renamed or deleted meanwhile
                if entry.is_file():
                    total += entry.stat().st_size
    return total


def _reserve(fd: int, size: int) -> None:
    """Give the open file its final size now (its blocks allocated where the file system
    can: a full disk fails here, before anything is written)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except (AttributeError, OSError) as exc:  # no fallocate here: the size alone
        if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL,
                                                          errno.ENOSYS):
            raise
        os.ftruncate(fd, size)


@contextlib.contextmanager
def _locked(folder: str) -> Any:
    """An exclusive lock on ``folder`` (a lock file in it), between processes."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one writer per machine is assumed
        yield
        return
    with open(os.path.join(folder, ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Writer:
    """Saves checkpoints on a background thread, one at a time, so training goes on while
    ``torch.save`` writes (full fine-tuning of a base-size model: about 1.5 GB a rung). A
    second ``submit`` waits for the first (one checkpoint in memory besides the run's own
    state); ``wait`` blocks until the last is on disk and raises what the write raised.
    A run waits at its end, before anything may read or replace the file."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, checkpoint: Checkpoint, path: str, space: int | None = None) -> None:
        self.wait()

        def write() -> None:
            try:
                save(checkpoint, path, space)
            except BaseException as exc:  # raised in the training thread by ``wait``
                self._error = exc

        self._thread = threading.Thread(target=write, name="checkpoint-writer")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def load(path: str, lazy: bool = False) -> Checkpoint:
    """The checkpoint at ``path`` (``lazy``: tensors memory-mapped, read only when used,
    for a cheap look at its step and identity). Raises ``OSError`` or ``ValueError`` if it
    is missing or unreadable."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=lazy)
    except OSError:
        raise
    except Exception as exc:  # truncated, not a checkpoint, another format
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from None
    try:
        data["position"] = tuple(data["position"])
        data["rung_scores"] = {int(k): float(v) for k, v in data.get("rung_scores", {}).items()}
        return Checkpoint(**data)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a checkpoint of this version ({exc})") from None
