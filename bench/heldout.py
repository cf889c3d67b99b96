"""The benchmark's data: each shared GLUE task split once into the rows a search may see
and a **test split no search or selection ever sees** (issue 28: the benchmark reported on
the same validation rows it selected on).

From ``../shared/data/glue/<task>/`` (read-only), with a fixed seed, into a git-ignored
work folder:

  ``search/glue/<task>/train.tsv``       the training file less the test rows
  ``search/glue/<task>/validation.tsv``  GLUE's validation rows (``VAL_ROWS``):
                                         what a search scores and selects on
  ``search/glue/<task>/test.tsv``        ``TEST_ROWS`` rows carved from the training file:
                                         only ever scored to report
  ``record/glue/<task>/validation.tsv``  validation then test, one file, so the recording
                                         scores both with one evaluator (``record.py``)

The same seed gives the same rows on any machine (``random.Random``, not numpy), so the
files need not be committed: every script calls ``prepare`` and gets them.
"""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

TASKS = ("sst2", "cola", "stsb", "rte")
CARVE_SEED = 2026
# Rows carved from the training file for the test split, and GLUE validation rows kept (a
# seeded subset; GLUE has SST-2 872, CoLA 1,043, STS-B 1,500, RTE 277). Fewer for the pair
# tasks: their rows are 1.6x (STS-B) and 5x (RTE) as long as SST-2's (MiniLM tokens: 13.3,
# 13.4, 21.7, 66.6 a row), and the recording scores both splits at every point.
TEST_ROWS = {"sst2": 500, "cola": 500, "stsb": 400, "rte": 300}
VAL_ROWS = {"sst2": 500, "cola": 500, "stsb": 400, "rte": 277}


@dataclass(frozen=True)
class Split:
    """Where one task's carved files are, and how many validation / test rows they hold."""

    task: str
    search_dir: Path  # --data-dir for a search: train + validation (+ test, never read by it)
    record_dir: Path  # --data-dir for the recording: validation is validation + test
    val_rows: int
    test_rows: int


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], rows[1:]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:  # the source's own format: no quoting
        f.writelines("\t".join(r) + "\n" for r in [header, *rows])
    tmp.replace(path)


def prepare(task: str, shared: Path, work: Path) -> Split:
    """Carve ``task`` (idempotent: the same files every time)."""
    source = shared / "glue" / task
    header, train = _read(source / "train.tsv")
    vheader, val = _read(source / "validation.tsv")
    rng = random.Random(f"{CARVE_SEED}:{task}")
    test_idx = set(rng.sample(range(len(train)), TEST_ROWS[task]))
    test = [r for i, r in enumerate(train) if i in test_idx]
    rest = [r for i, r in enumerate(train) if i not in test_idx]
    if len(val) > VAL_ROWS[task]:
        keep = sorted(random.Random(f"{CARVE_SEED}:{task}:val").sample(range(len(val)), VAL_ROWS[task]))
        val = [val[i] for i in keep]
    search = work / "search" / "glue" / task
    record = work / "record" / "glue" / task
    if not (search / "test.tsv").exists():
        _write(record / "train.tsv", header, rest)
        _write(record / "validation.tsv", vheader, val + test)
        _write(search / "train.tsv", header, rest)
        _write(search / "validation.tsv", vheader, val)
        _write(search / "test.tsv", header, test)  # last: its presence says all are there
    return Split(task, work / "search", work / "record", len(val), len(test))
