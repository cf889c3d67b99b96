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
import shutil
from pathlib import Path
from typing import Any

import yaml

from autopeft.build import build, trainable_parameters
from autopeft.candidate import Candidate
from autopeft.errors import UserError
from autopeft.methods import get_method

CANDIDATE_FILE = "candidate.yaml"
WEIGHTS_FILE = "autopeft_weights.safetensors"


def peft_native(candidate: Candidate) -> bool:
    return len(candidate.methods) == 1 and get_method(candidate.methods[0].name).peft_native


def prepare_dir(out: str | os.PathLike, force: bool) -> Path:
    path = Path(out)
    if path.exists() and any(path.iterdir()):
        if not force:
            raise UserError(f"{path} exists and is not empty; choose another --out or pass --force")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_candidate(path: Path, info: dict[str, Any]) -> None:
    with open(path / CANDIDATE_FILE, "w", encoding="utf-8") as fh:
        yaml.safe_dump(info, fh, sort_keys=False)


def read_candidate(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path) / CANDIDATE_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise UserError(f"no {CANDIDATE_FILE} in {path}; give a directory written by `autopeft export`")
    with open(file, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


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
