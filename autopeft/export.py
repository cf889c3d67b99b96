"""Candidate -> files a user takes elsewhere.

Every export holds ``candidate.yaml`` (what to build and how it trained). Peft-native
candidates (one peft method) also get peft's ``adapter_config.json``; with ``--train`` the
candidate is re-trained and saved twice: peft's ``adapter_model.safetensors`` (for
``peft.PeftModel.from_pretrained``) where possible, and ``autopeft_weights.safetensors``
(every trained tensor) that ``autopeft.load`` puts back on the base model for any
candidate. A ``README.md`` model card says what it is and how to load it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from autopeft.build import build, trainable_parameters
from autopeft.candidate import Candidate
from autopeft.checks import NumberLoader, known_keys, load_yaml
from autopeft.errors import UserError
from autopeft.methods import get_method

CANDIDATE_FILE = "candidate.yaml"
WEIGHTS_FILE = "autopeft_weights.safetensors"


def peft_native(candidate: Candidate) -> bool:
    return len(candidate.methods) == 1 and get_method(candidate.methods[0].name).peft_native


# What an export (or `train --out`) writes: all that `--force` may replace.
EXPORT_FILES = frozenset({CANDIDATE_FILE, WEIGHTS_FILE, "README.md", "metrics.json",
                          "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"})
INFO_KEYS = ("study", "trial", "model", "task", "data", "train", "candidate", "objectives",
             "fidelity")


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


def write_candidate(path: Path, info: dict[str, Any]) -> None:
    with open(path / CANDIDATE_FILE, "w", encoding="utf-8") as fh:
        yaml.safe_dump(info, fh, sort_keys=False)


def read_candidate(path: str | os.PathLike) -> dict[str, Any]:
    """An export's ``candidate.yaml``, every part checked as the CLI checks its flags."""
    file = Path(path) / CANDIDATE_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise UserError(f"no {CANDIDATE_FILE} in {path}; give a directory written by `autopeft export`")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {file}: {exc}") from None
    info = load_yaml(text, str(file), NumberLoader)
    if not isinstance(info, dict):
        raise UserError(f"{file}: not a candidate.yaml written by `autopeft export` (a mapping "
                        f"with {', '.join(INFO_KEYS[2:7])})")
    check_info(info, str(file))
    return info


def check_info(info: dict[str, Any], source: str) -> None:
    """Build every part of ``info`` once (the same checks as flags); errors name the part."""
    from autopeft.runner import DataSettings, Fidelity
    from autopeft.train import TrainSettings

    unknown = sorted(str(k) for k in info if k not in INFO_KEYS)
    missing = [k for k in INFO_KEYS[2:7] if k not in info]
    if unknown or missing:
        raise UserError(f"{source}: " + "; ".join(
            ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
            + ([f"lacks {', '.join(missing)}"] if missing else []))
            + "; give a candidate.yaml written by `autopeft export`")
    for key in ("model", "task"):
        if not isinstance(info[key], str) or not info[key]:
            raise UserError(f"{source}: {key} must be a non-empty string, got {info[key]!r}")
    parts = {"data": lambda d: DataSettings(**known_keys(d, DataSettings, "data")),
             "train": lambda d: TrainSettings(**known_keys(d, TrainSettings, "train")),
             "candidate": Candidate.from_dict,
             "fidelity": lambda d: Fidelity(**known_keys(d or {}, Fidelity, "fidelity"))}
    for key, make in parts.items():
        if key not in info and key == "fidelity":
            continue
        try:
            made = make(info[key])
        except UserError as exc:
            raise UserError(f"{source}: {key}: {exc}") from None
        if key == "data" and made.task != info["task"]:
            raise UserError(f"{source}: data.task {made.task!r} differs from task {info['task']!r}")
    objectives = info.get("objectives") or {}
    if not isinstance(objectives, dict) or not all(
            v is None or isinstance(v, (int, float, list)) or (k == "fidelity" and isinstance(v, str))
            for k, v in objectives.items()):
        raise UserError(f"{source}: objectives must map names to numbers, got {objectives!r}")


def save_trained(path: Path, model: Any, candidate: Candidate) -> None:
    """Save the trained tensors in autopeft's form and, where possible, in peft's."""
    from safetensors.torch import save_file

    save_file(trained_state(model), str(path / WEIGHTS_FILE))
    if peft_native(candidate):
        model.save_pretrained(str(path))


def save_config_only(path: Path, base_model: Any, candidate: Candidate) -> None:
    """peft's adapter_config.json for a peft-native candidate, without training."""
    if peft_native(candidate):
        model = build(base_model, candidate)
        model.peft_config["default"].save_pretrained(str(path))


def load(path: str | os.PathLike, model: str | None = None) -> Any:
    """Rebuild an exported, trained candidate on its base model (``model`` overrides the
    base model's id or directory). Returns the model with the trained weights."""
    from safetensors.torch import load_file

    from autopeft.models import load_base
    from autopeft.runner import DataSettings

    info = read_candidate(path)
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{path} has no trained weights ({WEIGHTS_FILE}); export with --train")
    base = load_base(model or info["model"], DataSettings(**info["data"]).get_task())
    built = build(base.model, Candidate.from_dict(info["candidate"]))
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


def model_card(info: dict[str, Any], trained: dict[str, Any] | None, native: bool) -> str:
    """The export's README.md: what it is, how well it did, how to load and re-train it."""
    from autopeft.report.show import human_bytes, percent, placement

    c = Candidate.from_dict(info["candidate"])
    obj = info.get("objectives") or {}

    def fmt(m: dict[str, Any]) -> list[str]:
        score = m.get("score")
        params = m.get("trainable_params")
        mem = m.get("peak_memory_bytes")
        return ["-" if score is None else f"{score:.4f}",
                "-" if params is None else f"{int(params):,}"
                + (f" ({percent(m['trainable_fraction'])})" if m.get("trainable_fraction") else ""),
                "-" if mem is None else human_bytes(int(mem))]

    lines = [f"# {c.label} on {info['task']} (autopeft export)", "",
             f"- base model: `{info['model']}`", f"- task: {info['task']}",
             f"- method(s): {c.label}: `{placement(c.to_dict())}`",
             f"- learning rate {c.learning_rate:.2e}, seed {c.seed}",
             f"- from study `{info.get('study', '?')}`, trial {info.get('trial', '?')}", "",
             "| | score | trainable parameters | peak training memory |", "| --- | --- | --- | --- |"]
    if obj:
        lines.append("| in the search | " + " | ".join(fmt(obj)) + " |")
    if trained:
        lines.append("| this export (re-trained) | " + " | ".join(fmt(trained)) + " |")
    if obj.get("confirm_mean") is not None:
        seeds = obj.get("confirm_seeds")
        lines += ["", f"Confirmed over {len(seeds) if isinstance(seeds, list) else seeds} seeds: "
                      f"score {obj['confirm_mean']:.4f} ± {obj.get('confirm_std') or 0:.4f} "
                      "(mean ± sample std); the re-training uses the first seed."]
    train = info.get("train") or {}
    data = info.get("data") or {}
    lines += ["", f"Trained {train.get('epochs', '?')} epoch(s), batch {train.get('batch_size', '?')}, "
              f"max length {train.get('max_length', '?')}"
              + (f", on {data['train_samples']} training samples" if data.get("train_samples") else "")
              + (f", scored on {data['eval_samples']} validation samples" if data.get("eval_samples") else "")
              + ".", "", "## Load it", ""]
    if trained:
        lines += ["```python", "import autopeft",
                  "model = autopeft.load(\"<this folder>\")  # base model + trained tensors", "```"]
        if native:
            lines += ["", "or with peft alone:", "", "```python",
                      "from peft import PeftModel",
                      "from transformers import AutoModelForSequenceClassification",
                      f"base = AutoModelForSequenceClassification.from_pretrained(\"{info['model']}\", "
                      f"num_labels=...)",
                      "model = PeftModel.from_pretrained(base, \"<this folder>\")", "```"]
    else:
        lines += ["This export holds the configuration only (no weights): train it first (below)."]
    lines += ["", "## Re-train it", "",
              "`candidate.yaml` holds everything the study used (base model, data subset, training "
              "settings, seed). On CPU this reproduces the score and parameter count:", "",
              "```bash", "autopeft train --config candidate.yaml --out trained/", "```"]
    return "\n".join(lines) + "\n"
