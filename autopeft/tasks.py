"""Tasks: where the data comes from, which columns are text and label, and the metric.

Online, a task loads from the Hugging Face hub with ``datasets``; offline, from
``DATA_DIR/<layout>/{train,validation}.tsv`` (the layout of ``../shared/data``), given by
``--data-dir`` or ``AUTOPEFT_DATA_DIR``. Validation is the task's labelled validation
split: we never tune on a test split.
"""
from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass

from autopeft.errors import UserError

Rows = dict[str, list]


@dataclass(frozen=True)
class Task:
    name: str
    hub: tuple[str, str]  # (dataset path, config) for datasets.load_dataset
    local: str  # folder under the data dir
    text_columns: tuple[str, ...]
    label_column: str
    num_labels: int
    metric: str
    summary: str


TASKS: dict[str, Task] = {
    "sst2": Task("sst2", ("nyu-mll/glue", "sst2"), "glue/sst2", ("sentence",), "label", 2,
                 "accuracy", "GLUE SST-2: binary sentiment of movie-review sentences"),
}


@dataclass
class TaskData:
    task: Task
    train: Rows
    validation: Rows
    source: str


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def _read_tsv(path: str, task: Task) -> Rows:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path} is empty; expected a header line and rows")
        need = [*task.text_columns, task.label_column]
        missing = [c for c in need if c not in header]
        if missing:
            raise UserError(f"{path} lacks column(s) {', '.join(missing)} (has {', '.join(header)})")
        idx = {c: header.index(c) for c in need}
        rows: Rows = {c: [] for c in need}
        for lineno, rec in enumerate(reader, start=2):
            if len(rec) < len(header):
                raise UserError(f"{path}:{lineno}: expected {len(header)} tab-separated fields, "
                                f"got {len(rec)}")
            for c in need:
                rows[c].append(rec[idx[c]])
    try:
        rows[task.label_column] = [int(v) for v in rows[task.label_column]]
    except ValueError:
        raise UserError(f"{path}: labels in column {task.label_column!r} must be integers") from None
    return rows


def _check(rows: Rows, task: Task, where: str) -> Rows:
    labels = rows[task.label_column]
    if not labels:
        raise UserError(f"{where} has no rows")
    bad = sorted({v for v in labels if not 0 <= v < task.num_labels})
    if bad:
        raise UserError(f"{where}: labels {bad[:5]} are outside {task.name}'s label set "
                        f"0..{task.num_labels - 1}")
    return rows


def _subsample(rows: Rows, n: int | None, seed: int) -> Rows:
    size = len(next(iter(rows.values())))
    if n is None or n >= size:
        return rows
    keep = sorted(random.Random(seed).sample(range(size), n))
    return {c: [v[i] for i in keep] for c, v in rows.items()}


def load_task(name: str, data_dir: str | None = None, train_samples: int | None = None,
              eval_samples: int | None = None, seed: int = 0) -> TaskData:
    """Load a task's train and validation rows (optionally a seeded subset of each)."""
    task = get_task(name)
    data_dir = data_dir or os.environ.get("AUTOPEFT_DATA_DIR")
    if data_dir:
        folder = os.path.join(data_dir, task.local)
        if not os.path.isdir(folder):
            raise UserError(f"data directory {folder!r} does not exist; --data-dir must hold "
                            f"{task.local}/train.tsv and {task.local}/validation.tsv")
        splits = {}
        for split in ("train", "validation"):
            path = os.path.join(folder, f"{split}.tsv")
            if not os.path.isfile(path):
                raise UserError(f"missing {path}; --data-dir must hold {task.local}/{split}.tsv")
            splits[split] = _check(_read_tsv(path, task), task, path)
        source = folder
    else:
        splits = _from_hub(task)
        source = f"hub:{task.hub[0]}/{task.hub[1]}"
    return TaskData(task, _subsample(splits["train"], train_samples, seed),
                    _subsample(splits["validation"], eval_samples, seed), source)


def _from_hub(task: Task) -> dict[str, Rows]:
    try:
        import datasets

        ds = datasets.load_dataset(*task.hub)
    except Exception as exc:  # network, auth, missing dataset: all a user-fixable problem
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot load {task.name} from the hub ({first}); offline, pass "
                        f"--data-dir DIR with {task.local}/train.tsv and validation.tsv") from None
    cols = [*task.text_columns, task.label_column]
    return {split: _check({c: list(ds[split][c]) for c in cols}, task, f"hub {split}")
            for split in ("train", "validation")}
