"""Bring your own Trainer (``autopeft.hf_trainer``): a user's ``transformers.Trainer`` trains
each candidate of a search on a tiny model; the rung callback prunes, the methods' step hooks
run inside the Trainer, and the study is a normal autopeft study."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from autopeft import api
from autopeft.candidate import Candidate, MethodSpec
from autopeft.cli import main
from autopeft.errors import UserError
from autopeft.build import count_stored
from autopeft.hf_trainer import Metric, TrainerBench, build_trial, candidate_of, load_model
from autopeft.runner import Fidelity

from conftest import task_rows

SPACE = """
candidates: [lora, bitfit, full]
learning_rate: 1.0e-3
methods:
  lora: {r: 8, targets: [query, value]}
"""


class Rows:
    """A map-style dataset of tokenised rows of the tiny task (what a Trainer takes)."""

    def __init__(self, tokenizer, split: str, n: int):
        rows = task_rows(split, n)
        enc = tokenizer([s for s, _ in rows], truncation=True, max_length=32)
        self.items = [{"input_ids": ids, "attention_mask": mask, "labels": int(label)}
                      for ids, mask, (_, label) in zip(enc["input_ids"], enc["attention_mask"], rows)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def fixed_accuracy(pred, candidate: Candidate | None = None) -> dict[str, float]:
    """A fixed score per candidate, not a tiny model's luck: 0.5, and 0.4 for full
    fine-tuning, which the pruner (promotion by score) then cuts at its first rung."""
    full = candidate is not None and candidate.label == "full"
    return {"accuracy": 0.4 if full else 0.5}


def real_accuracy(pred) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def factory(model_dir: Path, out: Path, compute_metrics=fixed_accuracy, **arguments):
    from transformers import (AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    tok = AutoTokenizer.from_pretrained(model_dir)
    train, dev = Rows(tok, "train", 64), Rows(tok, "validation", 32)
    arguments = {"report_to": "none", "disable_tqdm": True, **arguments}
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=16,
                             per_device_eval_batch_size=32, num_train_epochs=1,
                             metric_for_best_model="accuracy", save_strategy="no",
                             use_cpu=True, **arguments)
    made: list = []

    def make_trainer(model, candidate):
        made.append(candidate)
        metric = compute_metrics
        if compute_metrics is fixed_accuracy:
            metric = lambda pred: fixed_accuracy(pred, candidate)  # noqa: E731
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                          data_collator=DataCollatorWithPadding(tok), compute_metrics=metric)
        make_trainer.trainers.append(trainer)  # what autopeft then set on it, to assert
        return trainer

    make_trainer.trainers = []
    return make_trainer, made


def test_a_trainer_search_prunes_at_rungs_and_stores_a_normal_study(
        workdir: Path, tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    space = workdir / "space.yaml"
    space.write_text(SPACE)
    # as users write it: a Path, their Trainer's own bars and logs on, reporting to TensorBoard
    make_trainer, made = factory(tiny_model, workdir / "out", report_to="tensorboard",
                                 disable_tqdm=False)
    capsys.readouterr()
    study = api.search_with_trainer(make_trainer, tiny_model, model_kwargs={"num_labels": 2},
                                    space=space, n_trials=3, study="own", rungs="2,4", seed=0)
    printed = capsys.readouterr()
    assert "'loss'" not in printed.out + printed.err and "it/s" not in printed.err, printed
    trials = {t.user_attrs["label"]: t for t in study.trials}
    assert set(trials) == {"lora", "bitfit", "full"}  # the warm-start recipes, cheapest first
    full = trials["full"]
    # the first at the rung takes its one place; the two after it pause there (all score 0.5)
    for name in ("bitfit", "full"):
        t = trials[name]
        assert t.state.name == "PRUNED", t.user_attrs
        assert t.user_attrs["pruned_at_step"] == 2 and t.user_attrs["paused"]
        assert "mo-asha at step 2" in t.user_attrs["prune_reason"]
        assert "1 went on already" in t.user_attrs["prune_reason"]
    t = trials["lora"]
    assert t.state.name == "COMPLETE", t.user_attrs.get("fail_reason")
    assert t.values[0] == 0.5 and t.user_attrs["steps"] == 4
    assert t.user_attrs["rung_scores"] == {"2": 0.5, "4": 0.5}
    assert t.user_attrs["peak_memory_bytes"] > 0 and t.user_attrs["memory_method"]
    assert trials["lora"].user_attrs["trainable_params"] < full.user_attrs["trainable_params"]
    # each Trainer trained at the candidate's learning rate and seed, set by autopeft (the
    # factory's TrainingArguments say 5e-5 and 42)
    assert [c.label for c in made[1:]] == ["lora", "bitfit", "full"]
    used = [(t.args.learning_rate, t.args.seed, t.optimizer.param_groups[0]["initial_lr"])
            for t in make_trainer.trainers[1:]]
    assert used == [(c.learning_rate, c.seed, c.learning_rate) for c in made[1:]]
    assert study.user_attrs["task"] == "trainer:accuracy"
    # the Trainer's logs went to autopeft's run of each trial instead (HF's names), one run each
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(p.name for p in (workdir / "studies" / "own" / "tensorboard").iterdir())
    assert runs == [f"trial-{t.number:04d}" for t in study.trials]
    acc = EventAccumulator(str(workdir / "studies" / "own" / "tensorboard" / runs[0]))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [(e.step, e.value) for e in acc.Scalars("eval/accuracy")] == [(2, 0.5), (4, 0.5)]
    assert "train/learning_rate" in acc.Tags()["scalars"]
    assert not (workdir / "out" / "runs").exists()  # the Trainer's own TensorBoard run: none
    assert main(["worker", "--study", "own", "--quiet"]) == 2
    assert "trained by your own Trainer" in capsys.readouterr().err
    # a normal study: show, export of the configuration
    capsys.readouterr()
    assert main(["show", "own", "--json"]) == 0
    assert {r["label"] for r in json.loads(capsys.readouterr().out)} <= {"lora", "bitfit"}
    number = trials["lora"].number
    api.export(study, number, str(workdir / "exp"))
    exported = yaml.safe_load((workdir / "exp" / "candidate.yaml").read_text())
    assert exported["candidate"]["methods"][0]["name"] == "lora"
    with pytest.raises(UserError, match="trained by your own transformers Trainer"):
        api.export(study, number, str(workdir / "exp2"), train=True)
    rebuilt = build_trial(str(tiny_model), study, number, model_kwargs={"num_labels": 2})
    assert count_stored(rebuilt) == trials["lora"].user_attrs["trainable_params"]
    assert candidate_of(study, number).learning_rate == 1e-3


def test_adalora_reallocates_ranks_inside_the_trainer(workdir: Path, tiny_model: Path) -> None:
    """AdaLoRA's update_and_allocate runs from the callback after each optimiser step."""
    from autopeft.methods.adalora import rank_budget

    make_trainer, _ = factory(tiny_model, workdir / "out", compute_metrics=real_accuracy)
    bench = TrainerBench(load_model(str(tiny_model), model_kwargs={"num_labels": 2}), make_trainer)
    ada = Candidate([MethodSpec("adalora", {"init_r": 6, "target_r": 2})], 1e-2)
    outcome = bench.run(ada, fidelity=Fidelity(schedule_steps=12))  # 3 epochs of 4 steps
    # E starts at zero; the final allocation keeps target_r singular values per module
    # (2 layers x query, value): only if update_and_allocate ran after the optimiser steps
    assert outcome.result.steps == 12 and rank_budget(outcome.model) == 2 * 2 * 2


def test_child_tuning_d_gets_its_fisher_pass_from_the_trainer(workdir: Path,
                                                               tiny_model: Path) -> None:
    make_trainer, _ = factory(tiny_model, workdir / "out", compute_metrics=real_accuracy)
    bench = TrainerBench(load_model(str(tiny_model), model_kwargs={"num_labels": 2}), make_trainer)
    """Child-Tuning D's Fisher pass (on the Trainer's dataloader, before the first step) and
    its gradient masks run from the callback: without the pass it raises at the first step."""
    child = Candidate([MethodSpec("child_tuning", {"mode": "D", "reserve_p": 0.2})], 1e-3)
    outcome = bench.run(child, fidelity=Fidelity(schedule_steps=4))
    assert outcome.result.steps == 4 and 0.0 <= outcome.result.score <= 1.0
    assert outcome.result.metrics["accuracy"] == outcome.result.score


def test_the_score_metric() -> None:
    args = SimpleNamespace(metric_for_best_model=None, greater_is_better=None)
    loss = Metric.of(args, None, None)
    assert (loss.key, loss.greater_is_better, loss.task_metric) == ("eval_loss", False, "neg_loss")
    assert loss.score({"eval_loss": 0.25}) == -0.25
    f1 = Metric.of(SimpleNamespace(metric_for_best_model="f1", greater_is_better=True), None, None)
    assert (f1.key, f1.task_metric) == ("eval_f1", "f1") and f1.score({"eval_f1": 0.7}) == 0.7
    with pytest.raises(UserError, match="returns no 'eval_f1' .*eval_loss"):
        f1.score({"eval_loss": 1.0})
    wer = Metric.of(args, "eval_wer", False)
    assert wer.task_metric == "neg_wer" and wer.score({"eval_wer": 0.3}) == -0.3


def test_what_a_trainer_cannot_take_is_one_line(workdir: Path, tiny_model: Path) -> None:
    import torch
    from transformers import Trainer, TrainingArguments

    base = load_model(str(tiny_model), model_kwargs={"num_labels": 2})
    args = TrainingArguments(output_dir=str(workdir / "o"), report_to="none", use_cpu=True)

    def own_optimizer(model, candidate):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return Trainer(model=model, args=args, optimizers=(opt, None))

    with pytest.raises(UserError, match="its own optimizer"):
        TrainerBench(base, own_optimizer).inspect()
    with pytest.raises(UserError, match="must train the model it is given"):
        TrainerBench(base, lambda model, c: Trainer(model=load_model(
            str(tiny_model), model_kwargs={"num_labels": 2}).model, args=args)).inspect()
    with pytest.raises(UserError, match="train_dataset and an eval_dataset"):
        TrainerBench(base, lambda model, c: Trainer(model=model, args=args)).inspect()


def test_memory_is_measured_around_the_trainers_steps(workdir: Path, tiny_model: Path) -> None:
    """The memory objective moves with the candidate inside a Trainer too: full fine-tuning
    holds more than LoRA (gradients and AdamW state of every weight)."""
    make_trainer, _ = factory(tiny_model, workdir / "out")
    bench = TrainerBench(load_model(str(tiny_model), model_kwargs={"num_labels": 2}), make_trainer)
    lora = bench.run(Candidate([MethodSpec("lora", {"r": 2})], 1e-3), fidelity=Fidelity(2))
    full = bench.run(Candidate([MethodSpec("full")], 1e-4), fidelity=Fidelity(2))
    assert lora.result.memory_method == full.result.memory_method
    assert full.result.peak_memory > lora.result.peak_memory > 0
    assert lora.result.steps == 2 and lora.result.samples == 32


def test_own_learning_rates_get_their_own_optimizer_group(workdir: Path, tiny_model: Path) -> None:
    """ProPETL's mask scores train at mask_lr in the Trainer's optimizer too."""
    from autopeft.build import build
    from autopeft.hf_trainer import own_learning_rates

    make_trainer, _ = factory(tiny_model, workdir / "out")
    base = load_model(str(tiny_model), model_kwargs={"num_labels": 2})
    candidate = Candidate([MethodSpec("propetl", {"mask_lr": 0.03})], 1e-3)
    model = build(base.model, candidate, 4)
    trainer = make_trainer(model, candidate)
    own_learning_rates(trainer, model)
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert 0.03 in lrs and trainer.args.learning_rate in lrs
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == sum(
        1 for p in model.parameters() if p.requires_grad)
