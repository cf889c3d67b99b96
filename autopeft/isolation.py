"""Trials in a child process, so that a hard crash of one candidate (segfault, the kernel's
OOM killer, an abort in native code) fails that trial, not the study.

The child ("trial server") loads the base model and the tokenised data once, like an
in-process ``Bench``, then trains one candidate per request. Progress (``on_step``) and
rung scores (``on_eval``) travel back over a pipe; a rung waits for the parent's verdict,
so pruning decisions stay in the study process. If the child dies, the trial raises
``TrialCrashed`` and the next trial starts a fresh child. Ctrl-C reaches the parent only
(the child ignores SIGINT); the parent then stops the child.

Cost (measured in BENCHMARKS.md): one extra model load per worker, and a pipe message per
``STEP_REPORT_SECONDS`` of training (the steps in between travel together).
``IsolatedBench.run`` has the signature of ``Bench.run`` (a checkpoint to continue from is
passed as its path); its ``Outcome.model`` is None (the trained model stays in the
child; ``export --train`` trains in-process).
"""
from __future__ import annotations

import gc
import multiprocessing as mp
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch

from autopeft.candidate import Candidate
from autopeft.devices import cuda_broken
from autopeft.errors import UserError
from autopeft.protocols import Trainer
from autopeft.runner import DataSettings, Fidelity, Outcome
from autopeft.train import Diverged, TrainResult, TrainSettings


# A trial's steps travel to the parent together, at most this often (and at a rung, at the
# end): not a pipe message per step. The child still looks for a "stop" at every step. Each
# step carries the time it ended in the child (``time.perf_counter``: the system's monotonic
# clock, the same in both processes), read as ``IsolatedBench.step_time`` during ``on_step``,
# so the cost probe times the steps, not their arrival.
STEP_REPORT_SECONDS = 0.1


class TrialCrashed(RuntimeError):
    """The trial's process died (signal or hard exit) before it finished."""


class _Stop(BaseException):
    """Raised inside the child when the parent stops the trial (pruned, budget, interrupt);
    ``keep_checkpoint``: the parent paused it at a rung, so its checkpoint is saved there."""

    def __init__(self, keep_checkpoint: bool = False) -> None:
        super().__init__()
        self.keep_checkpoint = keep_checkpoint


ERRORS: dict[str, type[BaseException]] = {"Diverged": Diverged, "MemoryError": MemoryError,
                                          "UserError": UserError}


def _serve(conn: Any, model: str, data: dict, settings: dict, cache_dir: str | None,
           trust_remote_code: bool, threads: int) -> None:
    """The child's loop: load once, then train candidates until told to exit.

    ``threads`` is the parent's torch thread count: CPU results are bit-identical only for
    the same count, so a trial scores in the child exactly as it would in the parent. A
    parent that died (kill -9) closes the pipe: the child then ends quietly, without a
    ``BrokenPipeError`` traceback in the search's log."""
    torch.set_num_threads(threads)
    try:
        _serve_until_exit(conn, model, data, settings, cache_dir, trust_remote_code)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass


def _serve_until_exit(conn: Any, model: str, data: dict, settings: dict,
                      cache_dir: str | None, trust_remote_code: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from autopeft.models import quiet_libraries
    from autopeft.runner import Bench

    quiet_libraries()

    try:
        bench = Bench.load(model, DataSettings(**data), TrainSettings(**settings), cache_dir,
                           trust_remote_code)
    except UserError as exc:
        conn.send(("error", "UserError", str(exc)))
        return
    conn.send(("ready",))
    while True:
        msg = conn.recv()
        if msg[0] == "exit":
            return
        if msg[0] != "run":  # a "stop" that arrived after the trial had already ended
            continue
        _, cand, eval_at, fidelity, resume, checkpoint = msg

        steps: list[tuple[int, int, float]] = []  # reported, not yet sent
        sent = [time.monotonic()]

        def flush() -> None:
            if steps:
                conn.send(("steps", list(steps)))
                steps.clear()
                sent[0] = time.monotonic()

        def on_step(step: int, total: int, loss: float) -> None:
            steps.append((step, total, loss, time.perf_counter()))  # when it ended, here
            if step == total or time.monotonic() - sent[0] >= STEP_REPORT_SECONDS:
                flush()
            if conn.poll() and conn.recv()[0] == "stop":
                raise _Stop

        def on_eval(step: int, score: float) -> None:
            flush()
            conn.send(("rung", step, score))
            answer = conn.recv()
            if answer[0] == "stop":
                raise _Stop(len(answer) > 1 and bool(answer[1]))

        try:
            out = bench.run(Candidate.from_dict(cand), on_step, eval_at, on_eval,
                            Fidelity(**fidelity), resume, checkpoint)
            reply: tuple = ("done", asdict(out.result), out.trainable, out.total, out.trained,
                            out.rung_scores)
            del out
        except _Stop:
            reply = ("stopped",)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise  # the parent is gone: nobody to report to
        except Exception as exc:  # reported to the parent; the child lives on, unless ...
            reply = ("error", type(exc).__name__, str(exc), cuda_broken(exc))
        broken = reply[0] == "error" and reply[3]
        if broken:  # ... its CUDA context is broken: say so, then end (a fresh child follows)
            flush()
            conn.send(reply)
            return
        flush()  # every step reported before the outcome
        _release()  # out of the except block: the traceback no longer holds the model
        conn.send(reply)


def _release() -> None:
    """Give the finished trial's memory back: Python's, and the CUDA allocator's cache (a
    worker sharing its GPU leaves the room to the next trial, or to its neighbour). Never
    raises: a CUDA error here (a context an earlier error broke) must not kill the child
    before its reply is sent."""
    gc.collect()
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:  # the next trial's first CUDA call says what is wrong, in its trial
        pass


class _FromLocal:
    """An ``IsolatedBench`` attribute answered by its local ``Bench`` (what the search asks
    before training), so that it is a ``protocols.Trainer`` without imitating all of Bench."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, bench: Any, owner: type | None = None) -> Any:
        if bench is None:
            return self
        if bench._local is None:
            raise AttributeError(f"an IsolatedBench without a local Bench has no {self.name!r}")
        return getattr(bench._local, self.name)


class IsolatedBench:
    """``Bench.run`` in a child process (started on first use, restarted after a crash).

    ``local`` (optional) is this process's own ``Bench`` of the same model and data: it
    answers the questions the search asks before training (``base``, ``task``,
    ``train_data``, ``eval_data``: predictions, step counts). Use it in a ``with`` block,
    which ends the child on leaving.

    A CUDA error that breaks the child's CUDA context (``devices.cuda_broken``: a
    device-side assert, an illegal address) fails its trial and ends the child; the next
    trial starts a fresh one, so later candidates are not blamed."""

    restarts_on_cuda_error = True
    step_time: float | None = None  # during ``on_step``: when that step ended in the child

    def __init__(self, model: str, data: DataSettings, settings: TrainSettings,
                 cache_dir: str | None = None, trust_remote_code: bool = False,
                 local: Trainer | None = None):
        self._args = (model, asdict(data), asdict(settings), cache_dir, trust_remote_code)
        self._proc: Any = None
        self._conn: Any = None
        self._local = local
        self.settings = settings

    @classmethod
    def around(cls, bench: Trainer, model: str, data: DataSettings, cache_dir: str | None,
               trust_remote_code: bool = False) -> IsolatedBench:
        return cls(model, data, bench.settings, cache_dir, trust_remote_code, local=bench)

    base = _FromLocal()
    task = _FromLocal()
    train_data = _FromLocal()
    eval_data = _FromLocal()

    def __enter__(self) -> IsolatedBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        ctx = mp.get_context("spawn")  # fork is unsafe once torch's thread pools exist
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, *self._args, torch.get_num_threads()),
                                 daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        reply = self._recv()
        if reply[0] == "error":
            self.close()
            raise ERRORS.get(reply[1], RuntimeError)(reply[2])

    def _recv(self) -> tuple:
        while not self._conn.poll(0.2):
            if not self._proc.is_alive():
                raise self._died()
        try:
            return self._conn.recv()
        except EOFError:
            raise self._died() from None

    def _died(self) -> TrialCrashed:
        self._proc.join(5)
        code = self._proc.exitcode
        self._proc = None
        how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
        return TrialCrashed(f"the trial process died ({how})")

    def run(self, candidate: Candidate,
            on_step: Callable[[int, int, float], None] | None = None,
            eval_at: Sequence[int] = (),
            on_eval: Callable[[int, float], None] | None = None,
            fidelity: Fidelity | None = None,
            resume: str | None = None,
            checkpoint: str | None = None) -> Outcome:
        """``Bench.run`` in the child; ``resume`` and ``checkpoint`` are paths (a checkpoint
        travels as a file, not over the pipe)."""
        if resume is not None and not isinstance(resume, str):
            raise TypeError("IsolatedBench.run continues from a checkpoint's path, not the object")
        if self._proc is None or not self._proc.is_alive():
            self.start()
        self._conn.send(("run", candidate.to_dict(), list(eval_at), asdict(fidelity or Fidelity()),
                         resume, checkpoint))
        while True:
            try:
                msg = self._recv()
            except KeyboardInterrupt:
                self.close()
                raise
            if msg[0] == "done":
                return Outcome(TrainResult(**msg[1]), msg[2], msg[3], None, msg[4], msg[5])
            if msg[0] == "error":
                name, text = msg[1], msg[2]
                if msg[3]:  # the child ended itself: its CUDA context was broken
                    self.close()
                raise ERRORS.get(name, RuntimeError)(text if name in ERRORS else f"{name}: {text}")
            try:
                if msg[0] == "steps" and on_step:
                    for *step, ended in msg[1]:
                        self.step_time = ended  # the child's clock: steps travel in batches
                        on_step(*step)
                elif msg[0] == "rung":
                    if on_eval:
                        on_eval(*msg[1:])
                    self._conn.send(("continue",))
            except KeyboardInterrupt:
                self.close()
                raise
            except BaseException as exc:  # our callback raised (pruned, budget): stop the
                self._stop_trial(getattr(exc, "keep_checkpoint", False))  # child's trial
                raise

    def _stop_trial(self, keep_checkpoint: bool = False) -> None:
        """Tell the child to stop (saving its checkpoint at this rung where the trial is
        paused) and wait until it has (it answers "stopped")."""
        if self._proc is None:
            return
        try:
            self._conn.send(("stop", keep_checkpoint))
            while self._recv()[0] not in ("stopped", "done", "error"):
                pass
        except (TrialCrashed, OSError):
            self.close()

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(("exit",))
            except OSError:
                pass
            self._proc.join(2)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        self._proc = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
