"""Task kinds: one strategy object per kind, saying everything that differs between them.

A ``Task`` names its kind as a plain string (``Task.kind``: stored with studies, printed by
``autopeft tasks``); ``kind_of(task)`` turns it into the kind's strategy. The strategy holds
only the choices: which transformers auto class loads the model, peft's task type, how
labels are read and checked, how rows are encoded (the switches ``data`` reads), how
predictions are scored (the key ``evaluation`` reads) and the shortest usable max length.
The mechanics (tokenising, batching, generation, the metrics) stay in ``data``,
``evaluation`` and ``models``, which import this module, never the other way round. No
project imports but ``errors`` and no heavy imports: ``autopeft tasks`` reads it.
"""
from __future__ import annotations

from typing import Any, ClassVar

from autopeft.errors import UserError

Rows = dict[str, list]
LETTERS = "ABCDEFGHIJ"  # multiple choice: the answer letters, in choice order


def mc_prompt(question: str, choices: list[str]) -> str:
    """A multiple-choice prompt: the question, the lettered choices, then "Answer:"."""
    lines = [question] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:"


def answer_letter(choice: int) -> str:
    """Choice ``choice``'s answer as the model reads it after "Answer:" (" A", " B"...)."""
    return f" {LETTERS[choice]}"


class TaskKind:
    """A kind's choices; the defaults are a sequence classifier's (one label per row)."""

    name: ClassVar[str]
    is_lm: ClassVar[bool] = False  # trained as a language model (no new head, token labels)
    auto_class: ClassVar[str] = "AutoModelForSequenceClassification"  # transformers' loader
    peft_task_type: ClassVar[str] = "SEQ_CLS"  # peft's TaskType for this kind's model
    scoring: ClassVar[str] = "logits"  # evaluation: logits | generation | loss | choice
    classes: ClassVar[bool] = False  # labels are class indices (own data: class names)
    # encode_lm's switches (language-model kinds only):
    seq2seq: ClassVar[bool] = False  # source and target encoded apart (encoder-decoder)
    answer_eos: ClassVar[bool] = False  # the answer ends with eos (the model learns to stop)
    scores_choices: ClassVar[bool] = False  # evaluation keeps the prompt, scores the letters

    def read_labels(self, rows: Rows, task: Any, where: str) -> Rows:
        """Convert and check the label column in place (``rows`` is returned)."""
        raise NotImplementedError

    def min_max_length(self, tokenizer: Any, task: Any) -> int:
        """The shortest ``max_length`` keeping one token of every input besides the
        tokenizer's special tokens."""
        pair = len(task.text_columns) > 1
        return tokenizer.num_special_tokens_to_add(pair=pair) + len(task.text_columns)

    def hub_rows(self, part: Any, columns: list[str]) -> Rows:
        """The task's columns of one split of a hub dataset."""
        return {c: list(part[c]) for c in columns}

    def prompts_answers(self, task: Any, rows: Rows) -> tuple[list[str], list[str]]:
        """A prompt-and-answer kind's texts: the prompt, and the answer after it (scored)."""
        raise NotImplementedError(f"{self.name} is not a prompt-and-answer kind")

    def __repr__(self) -> str:
        return f"<task kind {self.name}>"


class Classification(TaskKind):
    name = "classification"
    classes = True

    def read_labels(self, rows: Rows, task: Any, where: str) -> Rows:
        raw = rows[task.label_column]
        if task.label_names:
            index = {n: i for i, n in enumerate(task.label_names)}
            unknown = sorted({str(v) for v in raw} - set(index))
            if unknown:
                raise UserError(f"{where}: labels {unknown[:5]} do not occur in the training data")
            rows[task.label_column] = [index[str(v)] for v in raw]
            return rows
        try:
            labels = [int(v) for v in raw]
        except (TypeError, ValueError):
            raise UserError(f"{where}: labels in column {task.label_column!r} must be "
                            "integers") from None
        bad = sorted({v for v in labels if not 0 <= v < task.num_labels})
        if bad:
            raise UserError(f"{where}: labels {bad[:5]} are outside {task.name}'s label set "
                            f"0..{task.num_labels - 1}")
        rows[task.label_column] = labels
        return rows


class Regression(TaskKind):
    """One output, float labels (the classifier's single logit is the prediction)."""

    name = "regression"

    def read_labels(self, rows: Rows, task: Any, where: str) -> Rows:
        try:
            rows[task.label_column] = [float(v) for v in rows[task.label_column]]
        except (TypeError, ValueError):
            raise UserError(f"{where}: regression labels must be numbers") from None
        return rows


class LanguageModelKind(TaskKind):
    """Trained as a causal language model: no new head; labels are the answer text."""

    is_lm = True
    auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"

    def read_labels(self, rows: Rows, task: Any, where: str) -> Rows:
        if not all(isinstance(v, str) for v in rows[task.label_column]):
            raise UserError(f"{where}: column {task.label_column!r} must hold text")
        return rows

    def min_max_length(self, tokenizer: Any, task: Any) -> int:
        """One token of the prompt and one of the answer."""
        return tokenizer.num_special_tokens_to_add(pair=False) + 2


class Translation(LanguageModelKind):
    """Encoder-decoder: prefixed source -> target, scored by BLEU on generated text."""

    name = "translation"
    auto_class = "AutoModelForSeq2SeqLM"
    peft_task_type = "SEQ_2_SEQ_LM"
    scoring = "generation"
    seq2seq = True

    def min_max_length(self, tokenizer: Any, task: Any) -> int:
        """One token of the source (the target is encoded apart)."""
        return tokenizer.num_special_tokens_to_add(pair=False) + 1

    def hub_rows(self, part: Any, columns: list[str]) -> Rows:
        pairs = part["translation"]  # rows are {"translation": {"en": ..., "ro": ...}}
        return {c: [p[c] for p in pairs] for c in columns}


class CausalLM(LanguageModelKind):
    """Prompt + response + eos; only the response is scored, by its held-out loss."""

    name = "causal-lm"
    scoring = "loss"
    answer_eos = True

    def prompts_answers(self, task: Any, rows: Rows) -> tuple[list[str], list[str]]:
        return rows[task.text_columns[0]], rows[task.label_column]


class MultipleChoice(LanguageModelKind):
    """The prompt lists the choices; the answer is the right letter. Scored by the letter
    with the highest next-token log-likelihood after the prompt."""

    name = "multiple-choice"
    scoring = "choice"
    scores_choices = True

    def read_labels(self, rows: Rows, task: Any, where: str) -> Rows:
        if not all(isinstance(c, list) and len(c) == task.num_labels for c in rows["choices"]):
            raise UserError(f"{where}: 'choices' must be a list of {task.num_labels} answers per row")
        try:
            answers = [int(v) for v in rows[task.label_column]]
        except (TypeError, ValueError):
            raise UserError(f"{where}: 'answer' must be the index of the right choice") from None
        if any(not 0 <= a < task.num_labels for a in answers):
            raise UserError(f"{where}: 'answer' must be in 0..{task.num_labels - 1}")
        rows[task.label_column] = answers
        return rows

    def prompts_answers(self, task: Any, rows: Rows) -> tuple[list[str], list[str]]:
        prompts = [mc_prompt(q, c) for q, c in zip(rows["question"], rows["choices"])]
        return prompts, [answer_letter(a) for a in rows[task.label_column]]


CLASSIFICATION, REGRESSION = Classification(), Regression()
TRANSLATION, CAUSAL_LM, MULTIPLE_CHOICE = Translation(), CausalLM(), MultipleChoice()
TASK_KINDS: dict[str, TaskKind] = {k.name: k for k in (
    CLASSIFICATION, REGRESSION, TRANSLATION, CAUSAL_LM, MULTIPLE_CHOICE)}


def get_kind(name: str) -> TaskKind:
    """The strategy of the kind called ``name``."""
    try:
        return TASK_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown task kind {name!r}; the kinds are "
                         f"{', '.join(TASK_KINDS)}") from None


def kind_of(task: Any) -> TaskKind:
    """The strategy of ``task``'s kind (``task.kind``)."""
    return get_kind(task.kind)


def peft_task_type(has_head: bool, family: str) -> str:
    """peft's task type for a model, read off the model (``build`` gets no task): a model
    with a classifier head was loaded by a classifier kind, an encoder-decoder language model
    by translation, any other by the causal kinds."""
    kind = CLASSIFICATION if has_head else TRANSLATION if family == "encoder-decoder" else CAUSAL_LM
    return kind.peft_task_type
