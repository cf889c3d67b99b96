"""Candidate -> files a user takes elsewhere.

Every export holds ``candidate.yaml`` (what to build and how it trained): an ``ExportInfo``
written by ``ExportInfo.to_dict`` and read back, every part checked, by ``ExportInfo.read``.
Peft-native candidates (one peft method) also get peft's ``adapter_config.json``; with
``--train`` the candidate is re-trained (``retrain``) and saved twice: peft's
``adapter_model.safetensors`` (for ``peft.PeftModel.from_pretrained``) where possible, and
``autopeft_weights.safetensors`` (every trained tensor) that ``autopeft.load`` puts back on
the base model for any candidate, with what it measured (``Measurements``) in
``metrics.json``. A ``README.md`` model card says what it is and how to load it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from autopeft.build import build, trainable_parameters
from autopeft.candidate import Candidate
from autopeft.checks import NumberLoader, check_types, known_keys, load_yaml
from autopeft.errors import UserError
from autopeft.methods import get_method
from autopeft.results import OBJECTIVES
from autopeft.settings import DataSettings, TrainSettings

if TYPE_CHECKING:  # runner imports the training stack: loaded when a file is read
    from autopeft.runner import Fidelity, Outcome

CANDIDATE_FILE = "candidate.yaml"
WEIGHTS_FILE = "autopeft_weights.safetensors"


def peft_native(candidate: Candidate) -> bool:
    return len(candidate.methods) == 1 and get_method(candidate.methods[0].name).peft_native


# What an export (or `train --out`) writes: all that `--force` may replace.
EXPORT_FILES = frozenset({CANDIDATE_FILE, WEIGHTS_FILE, "README.md", "metrics.json",
                          "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"})
# candidate.yaml's keys, in the order they are written; model .. candidate are required.
INFO_KEYS = ("study", "trial", "model", "task", "data", "train", "candidate", "objectives",
             "fidelity")


def _written(record: Any, always: Iterable[str]) -> dict[str, Any]:
    """``record``'s fields: those in ``always`` as they are, the others only where set, so a
    file lists what its writer knew (and an older file reads back as it was)."""
    return {k: v for k, v in asdict(record).items() if k in always or v is not None}


@dataclass
class Objectives:
    """How the trial did in the study: the model card's "in the search" row. The three
    objectives are always written (None: not measured); the rest where the trial had them.
    Counts are floats in exports older than the results' read model, hence ``float``."""

    score: float | None = None
    trainable_params: float | None = None
    peak_memory_bytes: float | None = None
    fidelity: str | None = None  # what the score stands for: refit | search | provisional
    steps: float | None = None  # steps behind the score
    trainable_fraction: float | None = None
    wall_seconds: float | None = None
    confirm_mean: float | None = None  # the refit's seeds: their mean score, ...
    confirm_std: float | None = None  # ... its sample standard deviation ...
    confirm_seeds: list[int] | int | None = None  # ... and the seeds (or how many)
    search_score: float | None = None  # a refit trial: the search trial's score

    def __post_init__(self) -> None:
        check_types(self)

    @classmethod
    def from_dict(cls, data: Any) -> Objectives:
        return cls(**known_keys(data, cls, "objectives"))

    def to_dict(self) -> dict[str, Any]:
        return _written(self, OBJECTIVES)


@dataclass(kw_only=True)
class ExportInfo:
    """What ``candidate.yaml`` holds: a trial's candidate and everything the study trained it
    with, so ``autopeft train`` re-trains it to the same score. Fields in file order."""

    study: str | None = None
    trial: int | None = None
    model: str  # the base model's id or directory
    task: str
    data: DataSettings
    train: TrainSettings
    candidate: Candidate
    objectives: Objectives | None = None
    fidelity: Fidelity | None = None  # how long the study trained it (None: the data's epochs)

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> ExportInfo:
        """``raw`` (a candidate.yaml's mapping) with every part built once, so it gets the
        checks the CLI's flags get; errors name ``source`` and the part."""
        from autopeft.runner import Fidelity

        if not isinstance(raw, Mapping):
            raise UserError(f"{source}: not a candidate.yaml written by `autopeft export` (a "
                            f"mapping with {', '.join(INFO_KEYS[2:7])})")
        unknown = sorted(str(k) for k in raw if k not in INFO_KEYS)
        missing = [k for k in INFO_KEYS[2:7] if k not in raw]
        if unknown or missing:
            raise UserError(f"{source}: " + "; ".join(
                ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"lacks {', '.join(missing)}"] if missing else []))
                + "; give a candidate.yaml written by `autopeft export`")
        for key in ("model", "task"):
            if not isinstance(raw[key], str) or not raw[key]:
                raise UserError(f"{source}: {key} must be a non-empty string, got {raw[key]!r}")
        for key, kind, what in (("study", str, "a string"), ("trial", int, "a whole number")):
            value = raw.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise UserError(f"{source}: {key} must be {what}, got {value!r}")

        def part(key: str, make: Any) -> Any:
            try:
                return make(raw.get(key))
            except UserError as exc:
                raise UserError(f"{source}: {key}: {exc}") from None

        data = part("data", lambda d: DataSettings(**known_keys(d, DataSettings, "data")))
        if data.task != raw["task"]:
            raise UserError(f"{source}: data.task {data.task!r} differs from task {raw['task']!r}")
        return cls(
            study=raw.get("study"), trial=raw.get("trial"), model=raw["model"], task=raw["task"],
            data=data,
            train=part("train", lambda d: TrainSettings(**known_keys(d, TrainSettings, "train"))),
            candidate=part("candidate", Candidate.from_dict),
            fidelity=part("fidelity", lambda d: Fidelity(**known_keys(d, Fidelity, "fidelity"))
                          if d else None),
            objectives=part("objectives", lambda d: Objectives.from_dict(d) if d else None))

    def to_dict(self) -> dict[str, Any]:
        """The candidate.yaml form: keys in ``INFO_KEYS`` order, the optional ones where set."""
        raw = {"study": self.study, "trial": self.trial, "model": self.model, "task": self.task,
               "data": asdict(self.data), "train": asdict(self.train),
               "candidate": self.candidate.to_dict(),
               "objectives": None if self.objectives is None else self.objectives.to_dict(),
               # how long it trained, only: the search's rungs and checkpoint rules
               # (rung_rows, keep_end, checkpoint_space) are never exported
               "fidelity": None if self.fidelity is None
               else {k: getattr(self.fidelity, k) for k in ("schedule_steps", "stop_at")}}
        return {k: v for k, v in raw.items() if v is not None}

    @classmethod
    def read(cls, path: str | os.PathLike) -> ExportInfo:
        """An export's ``candidate.yaml`` (or the file itself), every part checked."""
        file = Path(path) / CANDIDATE_FILE if Path(path).is_dir() else Path(path)
        if not file.is_file():
            raise UserError(f"no {CANDIDATE_FILE} in {path}; give a directory written by "
                            "`autopeft export`")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {file}: {exc}") from None
        return cls.from_dict(load_yaml(text, str(file), NumberLoader), str(file))

    def write(self, folder: Path) -> None:
        with open(folder / CANDIDATE_FILE, "w", encoding="utf-8") as fh:
            yaml.safe_dump(self.to_dict(), fh, sort_keys=False)

    def overridden(self, source: str, model: str | None = None, seed: int | None = None,
                   device: str | None = None) -> ExportInfo:
        """This info with ``autopeft train``'s overrides, checked as the file is."""
        raw = self.to_dict()
        if model:
            raw["model"] = os.fspath(model)
        if seed is not None:
            raw["candidate"]["seed"] = seed
        if device:
            raw["train"]["device"] = device
        return ExportInfo.from_dict(raw, source)


@dataclass
class Measurements:
    """What re-training an export measured: ``metrics.json`` and ``autopeft train --json``."""

    score: float
    trainable_params: int  # the parameter objective: parameters stored
    trained_params: int | None  # parameters that train
    stored_params: int
    total_params: int
    trainable_fraction: float
    peak_memory_bytes: int
    memory_method: str
    wall_seconds: float
    steps: int
    final_loss: float
    metrics: dict[str, float]
    seed: int

    @classmethod
    def of(cls, outcome: Outcome, seed: int) -> Measurements:
        r = outcome.result
        return cls(score=r.score, trainable_params=outcome.trainable,
                   trained_params=outcome.trained, stored_params=outcome.trainable,
                   total_params=outcome.total,
                   trainable_fraction=outcome.trainable / max(1, outcome.total),
                   peak_memory_bytes=r.peak_memory, memory_method=r.memory_method,
                   wall_seconds=round(r.seconds, 3), steps=r.steps, final_loss=r.final_loss,
                   metrics=r.metrics, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare_dir(out: str | os.PathLike, force: bool) -> Path:
    """An empty folder at ``out``. ``force`` replaces a previous export there, and nothing
    else: never the working folder, one above it, the studies folder, or foreign files."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} exists and is not a folder; choose another --out")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise UserError(f"{path} exists and is not empty; choose another --out or pass --force")
        for entry in replaceable(path):
            entry.unlink()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {path}: {exc.strerror or exc}") from None
    return path


def replaceable(path: Path) -> list[Path]:
    """The files of the previous export in ``path``; refuses any other folder."""
    from autopeft.paths import studies_dir

    here, cwd = path.resolve(), Path.cwd().resolve()
    if here == cwd or here in cwd.parents:
        raise UserError(f"--force will not replace {path}: it is the working folder or one "
                        "above it; give a folder of its own, e.g. --out exports/NAME")
    studies = Path(studies_dir()).resolve()
    if here == studies or here in studies.parents:
        raise UserError(f"--force will not replace {path}: it holds the study databases "
                        f"({studies_dir()}); give a folder of its own, e.g. --out exports/NAME")
    entries = list(path.iterdir())
    foreign = sorted(e.name for e in entries
                     if e.name not in EXPORT_FILES or e.is_symlink() or not e.is_file())
    if foreign or not (path / CANDIDATE_FILE).is_file():
        what = f"it also holds {', '.join(foreign[:3])}" + (" ..." if len(foreign) > 3 else "") \
            if foreign else f"it has no {CANDIDATE_FILE}"
        raise UserError(f"--force only replaces a previous export, and {path} is not one ({what}); "
                        "choose another --out or empty it yourself")
    return entries


def read_candidate(path: str | os.PathLike) -> dict[str, Any]:
    """An export's ``candidate.yaml``, checked, as plain data (``ExportInfo.read`` typed)."""
    return ExportInfo.read(path).to_dict()


def retrain(info: ExportInfo, data_dir: str | None = None) -> tuple[Any, Measurements]:
    """Train ``info``'s candidate exactly as the study did (same data, settings, seed and
    length); ``data_dir``: where the data is now. Returns the trained model and what it
    measured."""
    from autopeft.paths import cache_dir
    from autopeft.runner import Bench, Fidelity

    data = replace(info.data, data_dir=data_dir) if data_dir else info.data
    bench = Bench.load(info.model, data, info.train, cache_dir())
    outcome = bench.run(info.candidate, fidelity=info.fidelity or Fidelity())
    return outcome.model, Measurements.of(outcome, info.candidate.seed)


def write_trained(path: Path, info: ExportInfo, model: Any, measured: Measurements) -> None:
    """The trained weights, ``metrics.json`` and the model card (``candidate.yaml`` aside)."""
    save_trained(path, model, info.candidate)
    (path / "metrics.json").write_text(json.dumps(measured.to_dict(), indent=2))
    (path / "README.md").write_text(model_card(info, measured))


def write_config_only(path: Path, info: ExportInfo) -> None:
    """peft's adapter_config.json (a peft-native candidate) and the model card, untrained."""
    from autopeft.models import load_base

    base = load_base(info.model, info.data.get_task())
    if peft_native(info.candidate):
        model = build(base.model, info.candidate)
        model.peft_config["default"].save_pretrained(str(path))
    (path / "README.md").write_text(model_card(info))


def save_trained(path: Path, model: Any, candidate: Candidate) -> None:
    """Save the trained tensors in autopeft's form and, where possible, in peft's."""
    from safetensors.torch import save_file

    save_file(trained_state(model), str(path / WEIGHTS_FILE))
    if peft_native(candidate):
        model.save_pretrained(str(path))


def load(path: str | os.PathLike, model: str | None = None) -> Any:
    """Rebuild an exported, trained candidate on its base model (``model`` overrides the
    base model's id or directory). Returns the model with the trained weights."""
    from safetensors.torch import load_file

    from autopeft.models import load_base

    info = ExportInfo.read(path)
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{path} has no trained weights ({WEIGHTS_FILE}); export with --train")
    base = load_base(model or info.model, info.data.get_task())
    built = build(base.model, info.candidate)
    put_weights(built, load_file(str(weights)), str(path))
    built.eval()
    return built


def trained_state(model: Any) -> dict[str, Any]:
    """Every trained tensor, by parameter name: what autopeft's saved form holds."""
    return {name: p.detach().cpu().contiguous().clone() for name, p in trainable_parameters(model)}


def put_weights(model: Any, state: dict[str, Any], where: str = "weights") -> None:
    """Copy saved tensors into a freshly built model of the same candidate."""
    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise UserError(f"{where}: weights do not fit the rebuilt model (e.g. {missing[0]})")
    for name, tensor in state.items():
        params[name].data.copy_(tensor)


def model_card(info: ExportInfo, trained: Measurements | None = None) -> str:
    """The export's README.md: what it is, how well it did, how to load and re-train it."""
    from autopeft.report.show import human_bytes, percent, placement

    c, obj, train, data = info.candidate, info.objectives, info.train, info.data

    def fmt(m: Objectives | Measurements) -> list[str]:
        return ["-" if m.score is None else f"{m.score:.4f}",
                "-" if m.trainable_params is None else f"{int(m.trainable_params):,}"
                + (f" ({percent(m.trainable_fraction)})" if m.trainable_fraction else ""),
                "-" if m.peak_memory_bytes is None else human_bytes(int(m.peak_memory_bytes))]

    lines = [f"# {c.label} on {info.task} (autopeft export)", "",
             f"- base model: `{info.model}`", f"- task: {info.task}",
             f"- method(s): {c.label}: `{placement(c.to_dict())}`",
             f"- learning rate {c.learning_rate:.2e}, seed {c.seed}",
             f"- from study `{'?' if info.study is None else info.study}`, trial "
             f"{'?' if info.trial is None else info.trial}", "",
             "| | score | trainable parameters | peak training memory |", "| --- | --- | --- | --- |"]
    if obj is not None:
        lines.append("| in the search | " + " | ".join(fmt(obj)) + " |")
    if trained is not None:
        lines.append("| this export (re-trained) | " + " | ".join(fmt(trained)) + " |")
    if obj is not None and obj.confirm_mean is not None:
        seeds = obj.confirm_seeds
        lines += ["", f"Confirmed over {len(seeds) if isinstance(seeds, list) else seeds} seeds: "
                      f"score {obj.confirm_mean:.4f} ± {obj.confirm_std or 0:.4f} "
                      "(mean ± sample std); the re-training uses the first seed."]
    lines += ["", f"Trained {train.epochs} epoch(s), batch {train.batch_size}, "
              f"max length {train.max_length}"
              + (f", on {data.train_samples} training samples" if data.train_samples else "")
              + (f", scored on {data.eval_samples} validation samples" if data.eval_samples else "")
              + ".", "", "## Load it", ""]
    if trained is not None:
        lines += ["```python", "import autopeft",
                  "model = autopeft.load(\"<this folder>\")  # base model + trained tensors", "```"]
        if peft_native(c):
            lines += ["", "or with peft alone:", "", "```python",
                      "from peft import PeftModel",
                      "from transformers import AutoModelForSequenceClassification",
                      f"base = AutoModelForSequenceClassification.from_pretrained(\"{info.model}\", "
                      f"num_labels=...)",
                      "model = PeftModel.from_pretrained(base, \"<this folder>\")", "```"]
    else:
        lines += ["This export holds the configuration only (no weights): train it first (below)."]
    lines += ["", "## Re-train it", "",
              "`candidate.yaml` holds everything the study used (base model, data subset, training "
              "settings, seed). On CPU this reproduces the score and parameter count:", "",
              "```bash", "autopeft train --config candidate.yaml --out trained/", "```"]
    return "\n".join(lines) + "\n"
