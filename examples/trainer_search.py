"""Search PEFT configurations with your own ``transformers.Trainer``.

autopeft builds each candidate (LoRA, IA3, BitFit, ...) on a fresh copy of your model and
hands it to ``make_trainer``; your Trainer trains it; autopeft sets the candidate's learning
rate, seed and length, scores it at rungs with your evaluation, prunes, measures peak
memory and keeps the Pareto front (score vs trainable parameters vs memory).

Runs offline on a CPU in a minute or two: a tiny Llama built from a config, a toy language.
With your model: ``--model meta-llama/Llama-3.2-1B`` and your own datasets below.

    python examples/trainer_search.py --n-trials 4 --report-to tensorboard
    autopeft show trainer-example
"""
from __future__ import annotations

from datasets import Dataset
from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments

import autopeft
from tiny import example_options, toy_sentences


def main() -> None:
    opts, model = example_options(__doc__)

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenize = lambda rows: tokenizer(rows["text"], truncation=True, max_length=32)  # noqa: E731
    train = Dataset.from_dict({"text": toy_sentences(64, seed=0)}).map(tokenize, batched=True,
                                                                       remove_columns=["text"])
    dev = Dataset.from_dict({"text": toy_sentences(32, seed=1)}).map(tokenize, batched=True,
                                                                     remove_columns=["text"])
    args = TrainingArguments(output_dir=str(opts.out / "trainer"), per_device_train_batch_size=8,
                             per_device_eval_batch_size=16, num_train_epochs=1,
                             save_strategy="no", use_cpu=True, report_to=opts.report_to)

    def make_trainer(model, candidate):
        """Your Trainer, for the model autopeft built (the candidate is on it already)."""
        return Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                       data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))

    # The score is the evaluation's loss (lower is better: the study maximises -loss); give
    # metric="accuracy" with a compute_metrics that returns it to score by that instead.
    study = autopeft.search_with_trainer(make_trainer, model, model_class="AutoModelForCausalLM",
                                         study="trainer-example", n_trials=opts.n_trials,
                                         progress=True)
    for row in autopeft.front(study):
        print(f"trial {row.number}: {row.label}  eval loss {-row.score:.3f}  "
              f"{row.trainable_params} trainable parameters")


if __name__ == "__main__":
    main()
