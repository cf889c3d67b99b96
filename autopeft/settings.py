"""The study-level settings as plain dataclasses: how every candidate trains
(``TrainSettings``) and on which data (``DataSettings``). A leaf without torch, so the CLI
reads its flags' defaults from here (one place) and ``--help`` stays fast; ``train.py`` and
``runner.py`` use them and re-export them.

Three seeds, three names: ``DataSettings.subset_seed`` picks the ``--train-samples`` /
``--eval-samples`` subsets, ``SearchConfig.seed`` seeds the sampler, and a candidate's own
``seed`` (the space's ``seed``) draws its new tensors, dropout and data order.
"""
from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import TYPE_CHECKING

from autopeft.checks import at_least, check_device, check_types, one_of, positive
from autopeft.errors import UserError

if TYPE_CHECKING:
    from autopeft.tasks import OwnData, Task

PRECISIONS = ("auto", "fp32", "bf16", "tf32")
MAX_EPOCHS = 1e6  # far beyond any use; keeps the step count a finite whole number


@dataclass
class TrainSettings:
    """How every candidate of a study trains (study-level, stored with the study)."""

    epochs: float = 1.0
    batch_size: int = 32
    eval_batch_size: int = 128
    max_length: int = 128
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    grad_accum: int = 1  # micro-batches of batch_size per optimiser step (fit memory)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    num_beams: int = 1  # decoding for generation tasks (translation)
    max_new_tokens: int = 64
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto (bf16 on a GPU with native bf16, else fp32) | fp32 (exact) | bf16 | tf32 (fp32,
    # TF32 matmuls on CUDA)
    precision: str = "auto"

    def __post_init__(self) -> None:
        """The same checks for flags, the API, a stored study and a candidate.yaml."""
        check_types(self)
        positive(self, ["epochs"], maximum=MAX_EPOCHS)
        positive(self, ["max_grad_norm"])
        at_least(self, 1, ["batch_size", "eval_batch_size", "max_length", "grad_accum",
                           "num_beams", "max_new_tokens"])
        at_least(self, 0, ["warmup_ratio"], maximum=1)
        at_least(self, 0, ["weight_decay"])
        one_of(self, "precision", PRECISIONS)
        check_device(self.device)


@dataclass
class DataSettings:
    """Which data a study trains and scores on (stored with the study)."""

    task: str
    data_dir: str | None = None
    train_samples: int | None = None
    eval_samples: int | None = None
    subset_seed: int = 0  # which seeded subsets --train-samples / --eval-samples take
    # Own data (task csv:PATH, tsv:PATH or jsonl:PATH):
    text_columns: list[str] | None = None
    label_column: str | None = None
    validation: str | None = None
    task_type: str | None = None
    no_header: bool = False  # own CSV/TSV without a header line: columns given by index
    validation_share: float = 0.1  # held out of train (seeded by subset_seed) without validation data
    # Any dataset (task hf:NAME[:CONFIG]): the split that trains, the one scored (None: its
    # labelled "validation" split, else the held-out share of train)
    train_split: str = "train"
    validation_split: str | None = None
    # The name ``subset_seed`` had in studies and candidate.yaml files written before it was
    # renamed (it shared ``seed`` with the sampler's): still read, never written.
    seed: InitVar[int | None] = None

    def __post_init__(self, seed: int | None) -> None:
        if seed is not None:
            self.subset_seed = seed
        check_types(self)
        at_least(self, 1, ["train_samples", "eval_samples"])
        at_least(self, 0, ["subset_seed"])
        if not 0 < self.validation_share < 1:
            raise UserError(f"validation_share must be between 0 and 1 (a share of train), got "
                            f"{self.validation_share}")

    def own(self) -> OwnData:
        from autopeft.tasks import OwnData

        defaults = OwnData()
        return OwnData(text_columns=tuple(self.text_columns or defaults.text_columns),
                       label_column=self.label_column or defaults.label_column,
                       validation=self.validation, kind=self.task_type,
                       header=not self.no_header, validation_share=self.validation_share,
                       train_split=self.train_split, validation_split=self.validation_split)

    def get_task(self) -> Task:
        from autopeft.tasks import get_task

        return get_task(self.task, self.own())
