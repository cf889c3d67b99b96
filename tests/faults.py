"""Fault injection for tests: a ``fault`` method that fails on demand, the real way.

Test code, so not in the package: ``enable_faults()`` registers it through the registry's
public ``register`` and names this module in ``AUTOPEFT_PLUGINS`` (with this folder on
``PYTHONPATH``), so trial and worker processes started from here register it too. Kinds: ``raise`` (a RuntimeError), ``memory``
(a real MemoryError from an impossible allocation), ``nan`` (weights set to NaN, so the
loss really becomes NaN), ``explode`` (trained weights scaled up: the loss really explodes),
``segfault`` (the process dies by SIGSEGV), ``sleep`` (slow
steps, for interrupt tests), ``tick`` (each step advances the test clock ``CLOCK`` by
``seconds`` instead of sleeping: budget tests pass it as the search's clock, in-process),
``cuda`` (the error a device-side assert raises, which leaves a process's CUDA context
broken). A ``sleep`` fault with ``barrier: N`` waits on its process's first step until N
processes have reached theirs (files in the folder ``$AUTOPEFT_TEST_BARRIER``): every worker
of a scale-out test takes a trial, however slowly it started.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

@dataclass
class Spec:
    kind: str = field(default="raise", metadata={
        "help": "raise | memory | nan | explode | segfault | sleep | tick | cuda"})
    at_step: int = field(default=0, metadata={
        "help": "the optimiser step (0-based) at which it strikes"})
    seconds: float = field(default=0.5, metadata={"help": 'for "sleep", "tick": seconds per step'})
    barrier: int = field(default=0, metadata={
        "help": 'for "sleep": processes to wait for on the first step (0: none)'})


class Clock:
    """A wall clock that moves only when told (``budget.Clock``: called for the time)."""

    def __init__(self, start: float = 1_000_000.0):
        self.t = start

    def __call__(self) -> float:
        return self.t


CLOCK = Clock()
BARRIER_SECONDS = 180.0  # a worker that has not started a trial by then is not coming
_passed_barriers: set[str] = set()


def wait_at_barrier(parties: int) -> None:
    """Once per process and barrier folder: mark this process arrived, then wait until
    ``parties`` have."""
    folder = os.environ["AUTOPEFT_TEST_BARRIER"]
    if folder in _passed_barriers:
        return
    open(os.path.join(folder, str(os.getpid())), "w").close()
    end = time.monotonic() + BARRIER_SECONDS
    while len(os.listdir(folder)) < parties:
        if time.monotonic() > end:
            raise RuntimeError(f"only {len(os.listdir(folder))} of {parties} processes "
                               f"started a trial within {BARRIER_SECONDS:.0f} s")
        time.sleep(0.05)
    _passed_barriers.add(folder)


class _Fault:
    def __init__(self, model: Any, spec: Spec):
        self.model, self.spec = model, spec

    def before_optimizer_step(self, step: int) -> None:
        kind = self.spec.kind
        if kind == "sleep":
            if self.spec.barrier:
                wait_at_barrier(self.spec.barrier)
            time.sleep(self.spec.seconds)
        if kind == "tick":
            CLOCK.t += self.spec.seconds
        if step != self.spec.at_step:
            return
        if kind == "raise":
            raise RuntimeError(f"injected fault at step {step}")
        if kind == "memory":
            bytearray(1 << 62)  # far beyond any machine: a real MemoryError
        if kind == "nan":
            import torch

            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
        if kind == "explode":  # trained weights x1e5: huge logits, a huge but finite loss
            import torch

            with torch.no_grad():
                for p in self.model.parameters():
                    if p.requires_grad:
                        p.mul_(1e5)
        if kind == "cuda":
            raise RuntimeError("CUDA error: device-side assert triggered\nCUDA kernel errors "
                               "might be asynchronously reported at some other API call")
        if kind == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.contract import register_step_hook

    for name, p in model.named_parameters():  # train the head so there is a step to take
        if any(name.startswith(h) for h in ctx.arch.head_names(model)):
            p.requires_grad_(True)
    register_step_hook(model, _Fault(model, spec))
    return model


METHOD = None  # set on registration


def _register() -> None:
    global METHOD
    from autopeft.methods.registry import METHODS, Method, register

    if "fault" not in METHODS:
        METHOD = register(Method(name="fault", category="baseline", spec=Spec, apply=apply,
                                 summary="test-only: fails on demand"))


def enable_faults() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["AUTOPEFT_PLUGINS"] = "faults"  # trial processes started from here register it
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [here, *paths] if p)
    _register()


if os.environ.get("AUTOPEFT_PLUGINS", "").split(",").count("faults"):
    _register()  # imported as a plugin by the registry of a trial or worker process


# -- a worker on another machine that went silent: what heartbeats alone must catch ---------

def go_silent(url: str, trial_id: int | None = None) -> None:
    """The workers died long ago: the last heartbeats in the study storage ``url`` (SQLite or
    PostgreSQL; of ``trial_id``, else all) move to the year 2000, so three missed beats need
    no waiting."""
    import sqlalchemy

    sql = "UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000'"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            if trial_id is None:
                conn.execute(sqlalchemy.text(sql))
            else:
                conn.execute(sqlalchemy.text(sql + " WHERE trial_id = :id"), {"id": trial_id})
    finally:
        engine.dispose()


def run_elsewhere(study: Any, number: int) -> None:
    """Record trial ``number``'s worker as a process of another machine: this machine's
    process check (``storage.fail_dead_workers``) then leaves it to the heartbeats."""
    from autopeft.search.storage import WORKER_PROCESS

    trial = study.get_trials(deepcopy=False)[number]
    record = {**trial.user_attrs[WORKER_PROCESS], "host": "another-machine"}
    study._storage.set_trial_user_attr(trial._trial_id, WORKER_PROCESS, record)
