"""Tasks: where the data comes from, which columns are text and label, and the metric.

Named tasks (GLUE) load from the Hugging Face hub with ``datasets`` online, or from
``DATA_DIR/glue/<task>/{train,validation}.{tsv,jsonl}`` offline (the layout of
``../shared/data``; MNLI: ``validation_matched`` / ``validation_mismatched``), given by
``--data-dir`` or ``AUTOPEFT_DATA_DIR``. A user's own data is ``csv:PATH``, ``tsv:PATH`` or
``jsonl:PATH`` (see ``own_task``); any dataset ``datasets`` can load is ``hf:NAME[:CONFIG]``
(a hub id, or a folder written by ``save_to_disk``; see ``hub_task``). We score on the
labelled validation split and never tune on a test split; data without one holds out a
seeded share of train.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from autopeft.errors import UserError
from autopeft.kinds import CLASSIFICATION, REGRESSION, TASK_KINDS, Rows, get_kind, kind_of

KINDS = (CLASSIFICATION.name, REGRESSION.name)  # what own labelled data can be
LM_KINDS = tuple(n for n, k in TASK_KINDS.items() if k.is_lm)  # trained as language models


@dataclass(frozen=True)
class Task:
    name: str
    text_columns: tuple[str, ...]
    num_labels: int  # 1 for regression; choices for multiple choice; 0 for generation
    metric: str  # a key of metrics.METRICS; its "score" is the study's first objective
    summary: str
    kind: str = "classification"  # a key of kinds.TASK_KINDS: regression, translation, ...
    label_column: str = "label"  # translation: the target text; causal-lm: the response
    hub: tuple[str, str | None] | None = None  # (dataset path, config) for datasets.load_dataset
    local: str = ""  # folder under the data dir
    validation: str = "validation"  # the split scored during the search
    extra_validation: tuple[str, ...] = ()  # also scored at the end (MNLI mismatched)
    files: dict[str, str] = field(default_factory=dict)  # own data: split -> path
    label_names: tuple[str, ...] = ()  # own data with string labels: index -> name
    prefix: str = ""  # put before the input text (T5's task prefix)
    hub_splits: dict[str, str] = field(default_factory=dict)  # our split -> the hub's name
    family: str = "encoder"  # the model family it is meant for (`autopeft tasks`); any
    # sequence-classification model works for classification tasks
    header: bool = True  # own CSV/TSV files: False when columns are given by index

    def __post_init__(self) -> None:
        get_kind(self.kind)  # an unknown kind fails here, not deep in a trial

    @property
    def is_lm(self) -> bool:
        return kind_of(self).is_lm


def _glue(name: str, cols: tuple[str, ...], labels: int, metric: str, summary: str,
          **kw: object) -> Task:
    return Task(name, cols, labels, metric, summary, hub=("nyu-mll/glue", name),
                local=f"glue/{name}", **kw)  # type: ignore[arg-type]


PAIR = ("sentence1", "sentence2")
TASKS: dict[str, Task] = {t.name: t for t in (
    _glue("cola", ("sentence",), 2, "matthews", "CoLA: grammatical acceptability (Matthews corr.)"),
    _glue("sst2", ("sentence",), 2, "accuracy", "SST-2: binary sentiment of movie-review sentences"),
    _glue("mrpc", PAIR, 2, "f1_accuracy", "MRPC: paraphrase pairs (mean of F1 and accuracy)"),
    _glue("qqp", ("question1", "question2"), 2, "f1_accuracy",
          "QQP: duplicate Quora questions (mean of F1 and accuracy)"),
    _glue("stsb", PAIR, 1, "pearson_spearman",
          "STS-B: sentence similarity 0-5, regression (mean of Pearson and Spearman)",
          kind="regression"),
    _glue("mnli", ("premise", "hypothesis"), 3, "accuracy",
          "MNLI: entailment, 3 classes (matched validation; mismatched reported too)",
          validation="validation_matched", extra_validation=("validation_mismatched",)),
    _glue("qnli", ("question", "sentence"), 2, "accuracy", "QNLI: does the sentence answer the question"),
    _glue("rte", PAIR, 2, "accuracy", "RTE: textual entailment, 2 classes"),
    _glue("wnli", PAIR, 2, "accuracy", "WNLI: Winograd entailment, 2 classes"),
    Task("wmt16-en-ro", ("en",), 0, "bleu", "WMT16 English to Romanian translation (BLEU, sacrebleu)",
         kind="translation", label_column="ro", hub=("wmt/wmt16", "ro-en"), local="wmt16/ro-en",
         prefix="translate English to Romanian: ", family="encoder-decoder"),
    Task("mmlu", ("question", "choices"), 4, "accuracy",
         "MMLU multiple choice, scored by the log-likelihood of each answer letter",
         kind="multiple-choice", label_column="answer", hub=("cais/mmlu", "all"), local="mmlu",
         hub_splits={"train": "auxiliary_train"}, family="decoder"),
)}
OWN_PREFIXES = ("csv:", "tsv:", "jsonl:", "instruct:")
HUB_PREFIX = "hf:"  # any dataset datasets can load: hf:NAME[:CONFIG] or hf:FOLDER
TRAINER_PREFIX = "trainer:"  # trained and scored by the user's own Trainer (hf_trainer.py)


@dataclass
class TaskData:
    task: Task
    train: Rows
    validation: Rows
    source: str
    extra: dict[str, Rows] = field(default_factory=dict)  # extra validation splits
    note: str = ""  # what the user should know (a held-out validation split)


@dataclass
class OwnData:
    """How to read a user's own file (``--text-column``, ``--label-column``, ...)."""

    text_columns: tuple[str, ...] = ("text",)
    label_column: str = "label"
    validation: str | None = None  # a file; else a seeded 10% of train is held out
    kind: str | None = None  # classification | regression; None: inferred from the labels
    header: bool = True  # False (--no-header): no header line, columns given by index
    validation_share: float = 0.1  # held out of train where there is no validation data
    # A hub dataset (hf:NAME): which splits train and score (None: "validation" if labelled)
    train_split: str = "train"
    validation_split: str | None = None


def get_task(name: str, own: OwnData | None = None) -> Task:
    if name.startswith(TRAINER_PREFIX):
        return trainer_task(name)
    if name.startswith(HUB_PREFIX):
        return hub_task(name, own or OwnData())
    if own is not None and (own.train_split != "train" or own.validation_split is not None):
        raise UserError(f"--train-split and --validation-split are for hub datasets "
                        f"(hf:NAME[:CONFIG]); {name!r} is not one")
    if name.startswith(OWN_PREFIXES):
        return own_task(name, own or OwnData())
    if own is not None and not own.header:
        raise UserError(f"--no-header is for your own data (csv:PATH, tsv:PATH); {name!r} is a "
                        "named task with known columns")
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}, or your own "
                        "data as csv:PATH, tsv:PATH or jsonl:PATH, or any dataset as "
                        "hf:NAME[:CONFIG] (a hub id or a folder written by save_to_disk)")
    return TASKS[name]


# --- reading files -------------------------------------------------------------------------

# Own files are read with the csv module, not ``datasets.load_dataset("csv", ...)``: on SST-2's
# 67k-row train.tsv it takes 0.03 s against 1.5 s (0.6 s of import), and load_dataset writes
# an Arrow cache outside studies/ and guesses column types ("NA" becomes a missing value).
FIELD_LIMIT = 64 * 2**20  # one CSV/TSV field (the csv module's default, 128 KiB, is too small)


def _text(path: str) -> str:
    """The file as text: UTF-8 (a byte-order mark is dropped), else an error naming the line."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the "
                        "file as UTF-8") from None


def _read(path: str, columns: list[str], header: bool = True) -> Rows:
    """Rows of ``columns`` from a .tsv/.csv/.jsonl file, with line numbers in every error.

    Without a ``header`` line (``--no-header``), CSV/TSV columns are addressed by index
    ("0", "1", ...)."""
    if not os.path.isfile(path):
        raise UserError(f"data file {path} does not exist")
    if path.endswith(".jsonl"):
        if not header:
            raise UserError(f"--no-header is for CSV and TSV files; {path} is JSONL, whose keys "
                            "name the columns")
        return _read_jsonl(path, columns)
    tsv = not path.endswith(".csv")
    lines = io.StringIO(_text(path), newline="")
    reader = (csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv
              else csv.reader(lines))
    old_limit = csv.field_size_limit(FIELD_LIMIT)
    try:
        return _read_table(path, reader, columns, header)
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: cannot read this line ({exc})") from None
    finally:
        csv.field_size_limit(old_limit)


def _read_jsonl(path: str, columns: list[str]) -> Rows:
    rows: Rows = {c: [] for c in columns}
    for lineno, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object per line ({{\"key\": "
                            f"value, ...}}), got {type(rec).__name__}")
        missing = [c for c in columns if c not in rec]
        if missing:
            raise UserError(f"{path}:{lineno}: missing key(s) {', '.join(missing)}")
        for c in columns:
            rows[c].append(rec[c])
    return rows


def _read_table(path: str, reader: Iterator[list[str]], columns: list[str], header: bool) -> Rows:
    first = next(reader, None)
    if first is None:
        raise UserError(f"{path} is empty; expected " + ("a header line and rows" if header else "rows"))
    if header:
        names, start, records = first, 2, reader
    else:
        names, start, records = [str(i) for i in range(len(first))], 1, itertools.chain([first], reader)
        wrong = [c for c in columns if not c.isdigit()]
        if wrong:
            raise UserError(f"with --no-header, columns are given by index (--text-column 0 "
                            f"--label-column 1), not by name: {', '.join(wrong)}")
    missing = [c for c in columns if c not in names]
    if missing and not header:
        raise UserError(f"{path} has {len(names)} column(s) (0..{len(names) - 1}); no column "
                        f"{', '.join(missing)}")
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)} (has {', '.join(names)})"
                        + _headerless_hint(first, columns))
    idx = {c: names.index(c) for c in columns}
    rows: Rows = {c: [] for c in columns}
    for lineno, rec in enumerate(records, start=start):
        if len(rec) < len(names):
            raise UserError(f"{path}:{lineno}: expected {len(names)} fields, got {len(rec)}")
        for c in columns:
            rows[c].append(rec[idx[c]])
    return rows


def _headerless_hint(first: list[str], columns: list[str]) -> str:
    """Why a column is missing, when the first line looks like data rather than names."""
    if all(c.isdigit() for c in columns):
        return "; columns given by index need --no-header (a file without a header line)"
    if any(_is_number(v) for v in first):
        return ("; the first line looks like data, not a header: for a file without a header "
                "line pass --no-header and give columns by index (--text-column 0 "
                "--label-column 1)")
    return ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split_file(folder: str, split: str) -> str:
    for ext in (".tsv", ".jsonl", ".csv"):
        path = os.path.join(folder, split + ext)
        if os.path.isfile(path):
            return path
    raise UserError(f"missing {os.path.join(folder, split)}.tsv (or .jsonl); --data-dir must "
                    f"hold the task's {split} split there")


def _labels(rows: Rows, task: Task, where: str) -> Rows:
    """Convert and check the label column, by the task kind's rule (class indices, floats
    for regression, text for language modelling...)."""
    if not rows[task.label_column]:
        raise UserError(f"{where} has no rows")
    return kind_of(task).read_labels(rows, task, where)


def _subsample(rows: Rows, n: int | None, seed: int) -> Rows:
    size = len(next(iter(rows.values())))
    if n is None or n >= size:
        return rows
    keep = sorted(random.Random(seed).sample(range(size), n))
    return {c: [v[i] for i in keep] for c, v in rows.items()}


# --- own data ------------------------------------------------------------------------------

def trainer_task(spec: str) -> Task:
    """``trainer:METRIC``: a study whose candidates the user's own ``transformers.Trainer``
    trained and scored on ``METRIC`` (its evaluation metric without ``eval_``; ``neg_``
    before a metric where lower is better, so the score is still maximised). autopeft
    holds none of its data: see ``autopeft/hf_trainer.py``."""
    metric = spec[len(TRAINER_PREFIX):]
    if not metric:
        raise UserError("trainer: needs the metric the Trainer scores, e.g. trainer:accuracy")
    return Task(name=spec, text_columns=(), num_labels=0, metric=metric,
                summary=f"trained and scored ({metric}) by your own transformers Trainer")


def instruct_task(spec: str, own: OwnData) -> Task:
    """Causal-LM instruction tuning on ``instruct:PATH`` (JSONL with ``prompt`` and
    ``response``), scored by the held-out loss of the responses."""
    path = spec.split(":", 1)[1]
    if not os.path.isfile(path):
        raise UserError(f"data file {path} does not exist")
    files = {"train": path, **({"validation": own.validation} if own.validation else {})}
    return Task(name=spec, text_columns=("prompt",), num_labels=0, metric="neg_loss",
                summary=f"instruction tuning on {path}", kind="causal-lm",
                label_column="response", files=files, family="decoder")


def own_task(spec: str, own: OwnData) -> Task:
    """A task over the user's file ``csv:PATH`` / ``tsv:PATH`` / ``jsonl:PATH``.

    Classification or regression is inferred from the training labels (non-integer numbers:
    regression; anything else: classes, sorted) unless ``own.kind`` says."""
    fmt, path = spec.split(":", 1)
    if fmt == "instruct":
        return instruct_task(spec, own)
    _check_columns_and_kind(own)
    if not path.endswith(f".{fmt}") and not os.path.isfile(path):
        raise UserError(f"data file {path} does not exist")
    cols = [*own.text_columns, own.label_column]
    labels = _read(path, cols, own.header)[own.label_column]
    if not labels:
        raise UserError(f"{path} has no rows")
    kind = own.kind or _infer_kind(labels)
    base = Task(name=spec, text_columns=tuple(own.text_columns), num_labels=1,
                metric="pearson_spearman", summary=f"own data from {path}", kind=kind,
                label_column=own.label_column, header=own.header,
                files={"train": path, **({"validation": own.validation} if own.validation else {})})
    return _with_classes(base, labels, path)


def _check_columns_and_kind(own: OwnData) -> None:
    if not 1 <= len(own.text_columns) <= 2:
        raise UserError("give one or two --text-column values (a sentence, or a sentence pair)")
    if own.kind is not None and own.kind not in KINDS:
        raise UserError(f"--task-type must be one of {', '.join(KINDS)}, got {own.kind!r}")


def _with_classes(base: Task, labels: list, where: str,
                  names: tuple[str, ...] | None = None) -> Task:
    """``base`` (a regression task) as a classification task if its kind has classes: the
    given class ``names``, else the distinct training labels, sorted."""
    if not get_kind(base.kind).classes:
        return base
    names = names or tuple(sorted({str(v) for v in labels}, key=_natural))
    if len(names) < 2:
        raise UserError(f"{where}: only one label ({names[0]}) in column {base.label_column!r}; "
                        "classification needs at least two")
    return replace(base, num_labels=len(names), metric="accuracy", label_names=names)


def _natural(v: str) -> tuple:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def describe(task: Task, own: OwnData | None = None) -> str:
    """The line a search starts with: the task's kind, its classes (or "regression") and
    the metric that is the first objective, saying where the kind was inferred from the
    labels rather than given (a float label column becomes regression)."""
    if task.name.startswith(TRAINER_PREFIX):
        return f"task {task.name}: trained and scored by your own Trainer; metric {task.metric}"
    kind = get_kind(task.kind)
    if kind.classes:
        names = task.label_names or tuple(str(i) for i in range(task.num_labels))
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        what = f"classification, {len(names)} classes ({shown})"
    elif task.kind == "multiple-choice":
        what = f"multiple choice, {task.num_labels} choices"
    else:
        what = task.kind  # regression, translation, causal-lm
    own_labels = (task.files or task.name.startswith(HUB_PREFIX)) and task.kind in KINDS
    if own_labels and (own is None or own.kind is None):
        other = REGRESSION.name if kind.classes else CLASSIFICATION.name
        what += f" (inferred from the labels; --task-type {other} to change it)"
    return f"task {task.name}: {what}; metric {task.metric}"


def _infer_kind(labels: list) -> str:
    try:
        values = [float(v) for v in labels]
    except (TypeError, ValueError):
        return CLASSIFICATION.name
    return CLASSIFICATION.name if all(v.is_integer() for v in values) else REGRESSION.name


# --- any dataset that datasets loads (hf:NAME[:CONFIG]) ------------------------------------

_DATASETS: dict[tuple[str, str | None], Any] = {}  # loaded once per process (checked, then used)


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """``hf:NAME[:CONFIG]`` or ``hf:FOLDER`` -> (name or folder, config or None)."""
    rest = spec[len(HUB_PREFIX):]
    if not rest:
        raise UserError("hf: needs a dataset: hf:NAME[:CONFIG] (a hub id such as "
                        "stanfordnlp/imdb or tweet_eval:sentiment, or a folder written by "
                        "datasets' save_to_disk)")
    if os.path.isdir(os.path.expanduser(rest)):
        return rest, None
    path, _, config = rest.partition(":")
    return path, config or None


def _saved_to_disk(folder: str) -> bool:
    """A folder written by ``Dataset(Dict).save_to_disk`` (read with ``load_from_disk``)."""
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("dataset_dict.json", "state.json"))


def load_hub_dataset(path: str, config: str | None) -> Any:
    """The ``DatasetDict`` of ``path``: ``datasets.load_from_disk`` for a ``save_to_disk``
    folder, else ``datasets.load_dataset(path, config)`` (a hub id, or a local folder of data
    files: parquet, csv, json). A lone ``Dataset`` is its ``train`` split."""
    key = (path, config)
    if key in _DATASETS:
        return _DATASETS[key]
    import datasets

    local = os.path.expanduser(path)
    try:
        if os.path.isdir(local) and _saved_to_disk(local):
            found = datasets.load_from_disk(local)
        else:
            found = datasets.load_dataset(path, config)
    except Exception as exc:  # network, auth, no such dataset or config: the user can fix it
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = f"{path}:{config}" if config else path
        raise UserError(f"cannot load dataset {where!r} ({first})") from None
    if isinstance(found, datasets.Dataset):
        found = datasets.DatasetDict({"train": found})
    _DATASETS[key] = found
    return found


def _class_names(feature: Any) -> tuple[str, ...] | None:
    """The names of a ``ClassLabel`` feature (None for any other feature)."""
    names = getattr(feature, "names", None)
    return tuple(names) if type(feature).__name__ == "ClassLabel" and names else None


def _missing_labels(values: list) -> int:
    """Rows without a label: ``None``, or -1 (how ``ClassLabel`` marks a test set's rows)."""
    return sum(1 for v in values if v is None or (isinstance(v, int) and v == -1))


def _labelled(part: Any, column: str) -> bool:
    """Whether a split has rows and a label on every one (a test split's -1s: not labelled)."""
    return column in part.column_names and len(part) > 0 and not _missing_labels(list(part[column]))


def hub_task(spec: str, own: OwnData) -> Task:
    """A task over any dataset ``datasets`` loads: ``hf:NAME[:CONFIG]`` (``stanfordnlp/imdb``,
    ``tweet_eval:sentiment``) or ``hf:FOLDER``. Columns, kind and held-out share as for own
    files; class names from the label's ``ClassLabel`` feature where it has one, else the
    distinct training labels. Trains on ``own.train_split``; scores on
    ``own.validation_split``, else a labelled ``validation`` split, else a seeded share of
    train (never a test split unless asked for)."""
    _check_columns_and_kind(own)
    if own.validation is not None:
        raise UserError("--validation names a file of your own data; for a hub dataset choose "
                        "a split with --validation-split")
    if not own.header:
        raise UserError("--no-header is for CSV and TSV files; a dataset's columns have names")
    path, config = parse_hub_spec(spec)
    ds = load_hub_dataset(path, config)
    train = _split(ds, spec, own.train_split, "--train-split")
    cols = [*own.text_columns, own.label_column]
    missing = [c for c in cols if c not in train.column_names]
    if missing:
        raise UserError(f"{spec} lacks column(s) {', '.join(missing)} (has "
                        f"{', '.join(train.column_names)}); choose them with --text-column and "
                        "--label-column")
    labels = list(train[own.label_column])
    if not labels:
        raise UserError(f"{spec}: split {own.train_split!r} has no rows")
    if _missing_labels(labels):
        raise UserError(f"{spec}: split {own.train_split!r} is not labelled "
                        f"({_missing_labels(labels)} rows without a label); train on another "
                        "--train-split")
    names = _class_names(train.features[own.label_column])
    if names and own.kind == REGRESSION.name:
        raise UserError(f"{spec}: column {own.label_column!r} holds classes ({', '.join(names[:5])}"
                        "...); it cannot be a regression target")
    validation = own.validation_split
    if validation is not None:
        _split(ds, spec, validation, "--validation-split")
    elif "validation" in ds and _labelled(ds["validation"], own.label_column):
        validation = "validation"
    kind = own.kind or (CLASSIFICATION.name if names else _infer_kind(labels))
    where = f"{path}:{config}" if config else path
    base = Task(name=spec, text_columns=tuple(own.text_columns), num_labels=1,
                metric="pearson_spearman", summary=f"dataset {where}", kind=kind,
                label_column=own.label_column, hub=(path, config),
                hub_splits={"train": own.train_split, **({"validation": validation}
                                                         if validation else {})})
    return _with_classes(base, labels, spec, names)


def _split(ds: Any, spec: str, name: str, flag: str) -> Any:
    if name not in ds:
        raise UserError(f"{spec} has no split {name!r} (has {', '.join(ds)}); choose one with "
                        f"{flag}")
    return ds[name]


def _hub_rows(task: Task, split: str) -> Rows:
    """The task's columns of one split of its dataset, labels checked (class names where
    the label is a ``ClassLabel``: its indices become names, read back as the task's)."""
    assert task.hub is not None
    part = load_hub_dataset(*task.hub)[split]
    cols = [*task.text_columns, task.label_column]
    missing = [c for c in cols if c not in part.column_names]
    if missing:
        raise UserError(f"{task.name}: split {split!r} lacks column(s) {', '.join(missing)} "
                        f"(has {', '.join(part.column_names)})")
    rows: Rows = {c: list(part[c]) for c in cols}
    unlabelled = _missing_labels(rows[task.label_column])
    if unlabelled:
        raise UserError(f"{task.name}: split {split!r} is not labelled ({unlabelled} rows "
                        "without a label); score on another --validation-split or, without "
                        "one, on a held-out --validation-share of train")
    names = _class_names(part.features[task.label_column])
    if names:
        rows[task.label_column] = [names[v] for v in rows[task.label_column]]
    return _labels(rows, task, f"{task.name} split {split!r}")


def hold_out(train: Rows, share: float, seed: int, where: str) -> tuple[Rows, Rows]:
    """(train, validation): a seeded ``share`` of ``train``'s rows (at least one) held out,
    disjoint from what trains; the same rows for the same seed in every process."""
    n = len(next(iter(train.values())))
    if n < 2:
        raise UserError(f"{where} needs at least 2 rows to hold out validation")
    held = set(random.Random(seed).sample(range(n), min(n - 1, max(1, int(n * share + 1e-9)))))
    val = {c: [v[i] for i in sorted(held)] for c, v in train.items()}
    rest = {c: [v[i] for i in range(n) if i not in held] for c, v in train.items()}
    return rest, val


# --- loading -------------------------------------------------------------------------------

def load_task(name: str, data_dir: str | None = None, train_samples: int | None = None,
              eval_samples: int | None = None, seed: int = 0,
              own: OwnData | None = None) -> TaskData:
    """Load a task's train and validation rows (optionally a seeded subset of each)."""
    task = get_task(name, own)
    if task.name.startswith(TRAINER_PREFIX):
        raise UserError(f"this study ({task.name}) was trained by your own transformers Trainer: "
                        "autopeft holds none of its data; rebuild a trial's candidate with "
                        "autopeft.hf_trainer.build_trial(model, study, trial) and train it with "
                        "your Trainer")
    own = own or OwnData()
    cols = [*task.text_columns, task.label_column]
    data_dir = data_dir or os.environ.get("AUTOPEFT_DATA_DIR")
    splits = [task.validation, *task.extra_validation]
    note = ""
    if task.name.startswith(HUB_PREFIX):
        train = _hub_rows(task, task.hub_splits["train"])
        if "validation" in task.hub_splits:
            val = _hub_rows(task, task.hub_splits["validation"])
        else:
            train, val = hold_out(train, own.validation_share, seed, task.name)
            note = (f"{task.name} has no labelled validation split: scoring on a seeded "
                    f"{own.validation_share:.0%} of split {task.hub_splits['train']!r} "
                    f"({len(val[task.label_column])} rows) held out from training")
        loaded, source = {"train": train, task.validation: val}, task.name
    elif task.files:
        train = _labels(_read(task.files["train"], cols, task.header), task, task.files["train"])
        if "validation" in task.files:
            val = _labels(_read(task.files["validation"], cols, task.header), task,
                          task.files["validation"])
        else:  # hold out a seeded share (at least one row): never score on what we train on
            train, val = hold_out(train, own.validation_share, seed, task.files["train"])
            note = (f"no --validation file: scoring on a seeded {own.validation_share:.0%} of "
                    f"{task.files['train']} ({len(val[task.label_column])} rows) held out from "
                    "training")
        loaded, source = {"train": train, task.validation: val}, task.files["train"]
    elif data_dir:
        folder = os.path.join(data_dir, task.local)
        if not os.path.isdir(folder):
            raise UserError(f"data directory {folder!r} does not exist; --data-dir must hold "
                            f"{task.local}/train.tsv and {task.local}/{task.validation}.tsv")
        loaded = {}
        for split in ("train", *splits):
            path = _split_file(folder, split)
            loaded[split] = _labels(_read(path, cols), task, path)
        source = folder
    else:
        loaded, source = _from_hub(task, ["train", *splits]), f"hub:{task.hub[0]}/{task.hub[1]}"
    extra = {s: _subsample(loaded[s], eval_samples, seed) for s in task.extra_validation}
    return TaskData(task, _subsample(loaded["train"], train_samples, seed),
                    _subsample(loaded[task.validation], eval_samples, seed), source, extra, note)


def _from_hub(task: Task, splits: list[str]) -> dict[str, Rows]:
    assert task.hub is not None
    try:
        import datasets

        ds = datasets.load_dataset(*task.hub)
    except Exception as exc:  # network, auth, missing dataset: all a user-fixable problem
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot load {task.name} from the hub ({first}); offline, pass "
                        f"--data-dir DIR with {task.local}/train.tsv and "
                        f"{task.validation}.tsv") from None
    cols = [*task.text_columns, task.label_column]
    out = {}
    for split in splits:
        part = ds[task.hub_splits.get(split, split)]
        rows = kind_of(task).hub_rows(part, cols)
        out[split] = _labels(rows, task, f"hub {split}")
    return out
