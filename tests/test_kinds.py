"""One strategy per task kind (autopeft/kinds.py): every kind has one, an unknown kind is a
clear error, and each strategy's choices hold on a tiny model of its kind."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from autopeft import evaluation
from autopeft.build import context_for
from autopeft.checks import min_max_length
from autopeft.data import encode
from autopeft.kinds import TASK_KINDS, get_kind, kind_of, mc_prompt, peft_task_type
from autopeft.models import load_base, model_class
from autopeft.tasks import KINDS, LM_KINDS, TASKS, Task, get_task
from lm_fixtures import tiny_lm

CLS = TASKS["sst2"]
# one task per kind: its strategy's choices are checked on a tiny model of its family
BY_KIND = {"classification": CLS, "regression": TASKS["stsb"], "translation": TASKS["wmt16-en-ro"],
           "causal-lm": replace(CLS, name="instruct:x", text_columns=("prompt",), num_labels=0,
                                kind="causal-lm", label_column="response", family="decoder"),
           "multiple-choice": TASKS["mmlu"]}


def test_every_kind_has_a_strategy() -> None:
    assert set(KINDS) | set(LM_KINDS) == set(TASK_KINDS) == set(BY_KIND)
    assert set(LM_KINDS) == {n for n, k in TASK_KINDS.items() if k.is_lm}
    assert {t.kind for t in TASKS.values()} <= set(TASK_KINDS)
    for name, kind in TASK_KINDS.items():
        assert kind.name == name and get_kind(name) is kind
        assert kind_of(BY_KIND[name]) is kind and BY_KIND[name].is_lm == kind.is_lm


def test_an_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown task kind 'summary'; the kinds are classification"):
        get_kind("summary")
    with pytest.raises(ValueError, match="unknown task kind 'summary'"):
        replace(CLS, kind="summary")  # a Task refuses it when made, not deep in a trial


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kinds")
    return {"encoder": tiny_model, "encoder-decoder": tiny_lm(root / "t5", "t5"),
            "decoder": tiny_lm(root / "gpt2", "gpt2")}


@pytest.mark.parametrize("name", sorted(TASK_KINDS))
def test_a_kinds_model_and_peft_task_type(name: str, models: dict[str, Path]) -> None:
    """The kind's auto class loads the model; ``build`` reads the kind's peft task type back
    off that model (it gets no task)."""
    task, kind = BY_KIND[name], TASK_KINDS[name]
    base = load_base(str(models[task.family]), task)
    assert model_class(task).__name__ == kind.auto_class
    has_head = bool(context_for(base.model).arch.head_names(base.model))
    assert has_head == (not kind.is_lm)
    assert context_for(base.model).peft_task_type == kind.peft_task_type
    if not kind.is_lm:
        assert base.model.config.num_labels == task.num_labels


def test_peft_task_type_by_model_shape() -> None:
    assert peft_task_type(True, "encoder") == "SEQ_CLS"
    assert peft_task_type(True, "decoder") == "SEQ_CLS"  # a decoder with a classifier head
    assert peft_task_type(False, "encoder-decoder") == "SEQ_2_SEQ_LM"
    assert peft_task_type(False, "decoder") == "CAUSAL_LM"


def test_min_max_length_per_kind() -> None:
    tok = SimpleNamespace(num_special_tokens_to_add=lambda pair: 3 if pair else 2)
    assert min_max_length(tok, CLS) == 2 + 1  # one sentence
    assert min_max_length(tok, TASKS["stsb"]) == 3 + 2  # a pair: a token of each
    assert min_max_length(tok, BY_KIND["translation"]) == 2 + 1  # the source only
    assert min_max_length(tok, BY_KIND["causal-lm"]) == 2 + 2  # a prompt and an answer token
    assert min_max_length(tok, BY_KIND["multiple-choice"]) == 2 + 2


def test_each_kind_is_scored_its_way(monkeypatch: pytest.MonkeyPatch) -> None:
    for fn in ("classify", "translate", "lm_loss", "multiple_choice"):
        monkeypatch.setattr(evaluation, fn, lambda *a, _fn=fn, **k: {"score": 0.0, "by": _fn})
    want = {"classification": "classify", "regression": "classify", "translation": "translate",
            "causal-lm": "lm_loss", "multiple-choice": "multiple_choice"}
    tok = SimpleNamespace(pad_token_id=0)
    for name, task in BY_KIND.items():
        assert evaluation.make_evaluator(task, None, None, tok, None)(None)["by"] == want[name]


def test_hub_rows_and_labels_per_kind() -> None:
    wmt = TASK_KINDS["translation"].hub_rows({"translation": [{"en": "a", "ro": "b"}]}, ["en", "ro"])
    assert wmt == {"en": ["a"], "ro": ["b"]}
    assert TASK_KINDS["classification"].hub_rows({"sentence": ("x",), "label": (1,)},
                                                 ["sentence", "label"]) == {"sentence": ["x"], "label": [1]}
    assert TASK_KINDS["regression"].read_labels({"label": ["1.5"]}, TASKS["stsb"], "f") == {"label": [1.5]}
    own = replace(CLS, label_names=("neg", "pos"))
    assert TASK_KINDS["classification"].read_labels({"label": ["pos"]}, own, "f") == {"label": [1]}
    assert [k for k, s in TASK_KINDS.items() if s.classes] == ["classification"]


def test_prompt_and_answer_encodings(models: dict[str, Path]) -> None:
    mmlu, instruct = BY_KIND["multiple-choice"], BY_KIND["causal-lm"]
    rows = {"question": ["a cat"], "choices": [["yes", "no", "a", "b"]], "answer": [1]}
    assert TASK_KINDS["multiple-choice"].prompts_answers(mmlu, rows) == (
        [mc_prompt("a cat", ["yes", "no", "a", "b"])], [" B"])
    assert TASK_KINDS["causal-lm"].prompts_answers(instruct, {"prompt": ["p"], "response": ["r"]}) == (
        ["p"], ["r"])
    with pytest.raises(NotImplementedError):
        TASK_KINDS["translation"].prompts_answers(TASKS["wmt16-en-ro"], rows)
    tok = load_base(str(models["decoder"]), instruct).tokenizer
    trained = encode(tok, instruct, {"prompt": ["the cat"], "response": ["big dog"]}, 32)
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    assert list(trained.input_ids[0][-1:]) == [eos]  # causal-lm: the answer ends with eos
    assert (trained.labels[0] != -100).sum() == 3  # "big dog" + eos: only the answer scored
    scored = encode(tok, mmlu, rows, 32, for_training=False)
    assert scored.choice_ids is not None and len(scored.choice_ids) == 4
    assert list(scored.labels) == [1]


def test_task_kind_stays_a_plain_string() -> None:
    assert get_task("sst2").kind == "classification" and isinstance(TASKS["mmlu"].kind, str)
    assert isinstance(Task("t", ("x",), 2, "accuracy", "s").kind, str)


def test_kinds_is_a_leaf() -> None:
    """The mechanics (models, data, evaluation...) ask kinds.py, never the other way round."""
    from test_structure import import_graph

    assert import_graph()["autopeft.kinds"] <= {"autopeft.errors"}
