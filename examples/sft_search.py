"""Search PEFT configurations with TRL's ``SFTTrainer`` (supervised fine-tuning).

As with any ``transformers.Trainer`` subclass: autopeft builds each candidate on a fresh
copy of your model, your ``make_trainer`` returns the SFTTrainer for it, autopeft sets the
candidate's learning rate, seed and length, scores it at rungs with the SFTTrainer's
evaluation (here its ``mean_token_accuracy`` on the completions), prunes, and keeps the
Pareto front (score vs trainable parameters vs peak memory).

Runs offline on a CPU in a minute or two: a tiny Llama built from a config, a toy task (say
the sentence back with its words reversed). With your model: ``--model Qwen/Qwen2.5-0.5B``
and a prompt-completion (or conversational) dataset of your own.

    python examples/sft_search.py --n-trials 4 --report-to mlflow
    autopeft show sft-example
"""
from __future__ import annotations

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

import autopeft
from tiny import example_options, toy_sentences


def pairs(n: int, seed: int) -> Dataset:
    """Prompt-completion rows: SFTTrainer trains on the completion only."""
    sentences = toy_sentences(n, seed)
    return Dataset.from_dict({"prompt": sentences,
                              "completion": [" " + " ".join(s.split()[::-1]) for s in sentences]})


def main() -> None:
    opts, model = example_options(__doc__)

    train, dev = pairs(64, seed=0), pairs(32, seed=1)
    # use_cpu and bf16=False for a CPU: on a GPU, drop both (TRL's default is bf16); a model
    # this small needs no activation checkpointing (TRL's default is on)
    args = SFTConfig(output_dir=str(opts.out / "sft"), max_length=32, num_train_epochs=1,
                     per_device_train_batch_size=8, per_device_eval_batch_size=16,
                     activation_checkpointing=False, save_strategy="no", use_cpu=True,
                     bf16=False, report_to=opts.report_to)

    def make_trainer(model, candidate):
        """Your SFTTrainer, for the model autopeft built (the candidate is on it already)."""
        return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=dev)

    study = autopeft.search_with_trainer(make_trainer, model, model_class="AutoModelForCausalLM",
                                         metric="mean_token_accuracy", study="sft-example",
                                         n_trials=opts.n_trials, progress=True)
    for row in autopeft.front(study):
        print(f"trial {row.number}: {row.label}  token accuracy {row.score:.3f}  "
              f"{row.trainable_params} trainable parameters")


if __name__ == "__main__":
    main()
