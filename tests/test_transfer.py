"""A start-up learned across studies (autopeft/search/transfer.py, bench/portfolio.py): the
greedy portfolio on hand-made scores, the held-out task's curves never read, and searches
that remember themselves and start from what earlier ones learned."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from autopeft.search.transfer import (StudyRecord, TrialRecord, build_portfolio, greedy,
                                      load_store, portfolio_size, write_study)

ROOT = Path(__file__).resolve().parents[1]


def cand(name: str, lr: float, **params) -> dict:
    return {"methods": [{"name": name, "params": params}], "learning_rate": lr}


def study(task: str, rows: list[tuple[dict, float, int]], metric: str = "accuracy",
          eval_rows: int = 10_000, family: str = "bert") -> StudyRecord:
    return StudyRecord(study=f"earlier-{task}", task={"name": task, "metric": metric,
                                                      "eval_rows": eval_rows},
                       model={"family": family, "params": 10**8}, schedule_steps=100,
                       trials=[TrialRecord(c, s, 1.0, trainable_params=p) for c, s, p in rows])


def test_the_greedy_adds_what_covers_the_tasks_the_set_does_not_yet_cover() -> None:
    """Each value is (normalised score, normalised log-parameters); equal sizes, so a set's
    value on a task is its best score there. B is good on both tasks, A the best on t1
    alone, C middling everywhere: B first (1.2), then A (t1 from 0.2 to 1), never C."""
    matrix = {"t1": {"A": (1.0, 1.0), "B": (0.2, 1.0), "C": (0.5, 1.0)},
              "t2": {"B": (1.0, 1.0), "C": (0.5, 1.0)}}  # A did not run on t2: it covers nothing there
    assert [k for k, _ in greedy(matrix, 2)] == ["B", "A"]
    picked = greedy(matrix, 5)
    assert [k for k, _ in picked] == ["B", "A"]  # C adds nothing to {A, B}: it stops
    assert [round(g, 6) for _, g in picked] == [1.2, 0.8]
    assert [k for k, _ in greedy(matrix, 2, usable=lambda key: key != "B")] == ["A", "C"]


def test_a_small_candidate_nearly_as_good_joins_a_dominated_one_does_not() -> None:
    """The hypervolume counts the front: the best (big) and a smaller one just below it."""
    big, small, worse = cand("full", 2e-5), cand("ia3", 1e-2), cand("adapter", 1e-3)
    rows = [(big, 0.90, 10**8), (small, 0.88, 10**4), (worse, 0.80, 10**6),
            (cand("prompt", 0.1), 0.50, 10**4), (cand("prefix", 0.1), 0.50, 10**5)]
    found = build_portfolio([study("t1", rows)], 8)
    assert found.candidates == [small, big] and found.tasks == ["t1"]


def test_a_task_whose_scores_are_all_noise_teaches_nothing() -> None:
    """RTE-like: every score within two sampling errors of the median (277 rows)."""
    noisy = study("rte", [(cand("lora", 1e-3), 0.51, 10**5), (cand("bitfit", 1e-3), 0.53, 10**4),
                          (cand("ia3", 1e-2), 0.50, 10**4)], eval_rows=277)
    found = build_portfolio([noisy], 8)
    assert found.candidates == [] and found.skipped == ["rte"]
    assert "rte left out: scores within the noise" in build_portfolio(
        [noisy, study("sst2", [(cand("lora", 1e-3), 0.9, 10**5),
                               (cand("ia3", 1e-2), 0.5, 10**4)])], 8).describe()


@pytest.mark.parametrize("expected, k", [(1, 1), (3, 2), (10, 5), (40, 8), (None, 8)])
def test_the_portfolio_is_half_the_plans_candidates_at_most_eight(expected, k) -> None:
    assert portfolio_size(expected) == k


def test_the_store_is_written_whole_and_read_back(tmp_path: Path) -> None:
    record = study("sst2", [(cand("lora", 1e-3), 0.9, 10**5)])
    assert write_study(tmp_path / "meta", record) is None
    (tmp_path / "meta" / "broken.json").write_text("{not json")  # a file that is not a study
    (back,) = load_store(tmp_path / "meta")
    assert back == record and [p.name for p in (tmp_path / "meta").iterdir()
                               if p.suffix == ".tmp"] == []


def test_an_unwritable_store_is_one_note(tmp_path: Path) -> None:
    blocked = tmp_path / "meta"
    blocked.write_text("a file where the store's folder should be")
    note = write_study(blocked, study("sst2", [(cand("lora", 1e-3), 0.9, 10**5)]))
    assert note.startswith("meta-store: could not remember this study in") and "\n" not in note


# -- bench/portfolio.py: recorded curves as studies, the held-out task never read -------------

def fake_recording(task: str, good_on_val: dict, good_on_test: dict) -> object:
    """Two recorded runs on 4 validation and 4 test rows: one right on validation and wrong
    on test, the other the reverse; a portfolio that read the test split picks the wrong
    one."""
    sys.path.insert(0, str(ROOT / "bench"))
    from simulate import Curve, Recording

    settings = {"candidate_list": [{"id": 0, "candidate": {**good_on_val, "seed": 0}},
                                   {"id": 1, "candidate": {**good_on_test, "seed": 0}}],
                "train_rows": {task: 100}, "model": "tiny"}
    common = dict(seed=0, status="complete", steps=10, points=[5, 10], losses=[0.5] * 10,
                  peak_memory_bytes=1, memory_method="x", step_seconds=0.1)
    curves = {(0, 0): Curve(id=0, preds=["10101010"] * 2, trainable_params=1000, **common),
              (1, 0): Curve(id=1, preds=["01010101"] * 2, trainable_params=1000, **common)}
    y = np.array([1, 0, 1, 0])
    return Recording(task, settings, curves, y, 1 - y, "accuracy")


def test_the_held_out_task_is_never_read_and_only_validation_scores_enter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import portfolio

    lora, bitfit = cand("lora", 2e-3), cand("bitfit", 4e-3)
    read: list[str] = []

    def load(task, *args, **kwargs):
        read.append(task)
        return fake_recording(task, lora, bitfit)

    monkeypatch.setattr(portfolio.Recording, "load", staticmethod(load))
    assert portfolio.main(["--tasks", "sst2,cola,rte", "--leave-out", "rte",
                           "--store", str(tmp_path / "meta")]) == 0
    assert sorted(read) == ["cola", "sst2"]  # rte's curves never opened
    stored = load_store(tmp_path / "meta")
    assert sorted(st.task["name"] for st in stored) == ["cola", "sst2"]
    for st in stored:
        assert {json.dumps(t.candidate, sort_keys=True): t.score for t in st.trials} == {
            json.dumps(lora, sort_keys=True): 1.0, json.dumps(bitfit, sort_keys=True): 0.0}
    assert build_portfolio(stored, 8).candidates == [lora]  # validation's best, not test's
    read.clear()
    portfolio.leave_one_out("stsb", tmp_path / "replay-stsb")  # what a replay of stsb reads
    assert sorted(read) == ["cola", "rte", "sst2"]


# -- searches that remember and start from a portfolio ------------------------------------------

def options(model: Path, data: Path, store: Path, **extra) -> dict:
    return dict(model=str(model), data_dir=str(data), batch_size=16, max_length=48,
                train_samples=32, pruner="none", meta_store=str(store), transfer=True, **extra)


class Notes:
    def __init__(self) -> None:
        from autopeft.report.progress import NullReporter

        self.lines: list[str] = []
        self.reporter = type("R", (NullReporter,), {"note": lambda _, t: self.lines.append(t)})()


@pytest.fixture
def two_tasks(tmp_path: Path, tiny_data: Path) -> Path:
    """The tiny task under SST-2's and CoLA's names (CoLA's layout is the same)."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    shutil.copytree(data / "glue" / "sst2", data / "glue" / "cola")
    return data


def earlier_sst2(store: Path) -> Path:
    """A store holding one earlier SST-2 study: LoRA and BitFit good, prompt and prefix not."""
    write_study(store, study("sst2", [(cand("lora", 2e-3, r=8), 0.90, 10**5),
                                      (cand("bitfit", 4e-3, layers="all"), 0.88, 10**4),
                                      (cand("prompt", 0.1), 0.5, 10**4),
                                      (cand("prefix", 0.1), 0.5, 10**5)]))
    return store


def test_a_study_remembers_itself_and_the_next_starts_from_a_portfolio_and_says_so(
        workdir: Path, tiny_model: Path, two_tasks: Path) -> None:
    from autopeft import api

    store = earlier_sst2(workdir / "meta")
    notes = Notes()
    found = api.search("cola", n_trials=2, study="second", progress=notes.reporter,
                       **options(tiny_model, two_tasks, store))
    assert "start-up: portfolio of 2 from 1 earlier study (sst2)" in notes.lines
    first = sorted(found.get_trials(), key=lambda t: t.number)[:2]
    assert [t.user_attrs["warm_start"] for t in first] == [
        "portfolio 1: bitfit at lr 4e-03", "portfolio 2: lora at lr 2e-03"]
    assert [t.params["candidate"] for t in first] == ["bitfit", "lora"]
    assert first[1].params["lora.r"] == 8
    assert found.user_attrs["lr_prior"] == {  # what the sampler's learning-rate prior reads
        "best_lr": {"sst2": {"lora": 2e-3, "bitfit": 4e-3}},
        "members": {"portfolio 1: bitfit at lr 4e-03": {"sst2": 0.88},
                    "portfolio 2: lora at lr 2e-03": {"sst2": 0.90}}}
    remembered = {st.study: st for st in load_store(store)}
    assert set(remembered) == {"earlier-sst2", "second"}
    mine = remembered["second"]
    assert mine.task["name"] == "cola" and mine.model["family"] == "bert"
    assert {t.candidate["methods"][0]["name"] for t in mine.trials} == {"bitfit", "lora"}
    assert all(t.fraction > 0 and t.trainable_params for t in mine.trials)


def test_a_portfolio_smaller_than_the_start_up_is_completed_with_the_recipes(
        workdir: Path, tiny_model: Path, two_tasks: Path) -> None:
    """Four start-up places, a portfolio of two: the cold start-up's first recipes take the
    other two, in their order, none a repeat of a member; the learning-rate prior still
    reads the portfolio's members alone."""
    from autopeft import api

    store = earlier_sst2(workdir / "meta")
    notes = Notes()
    found = api.search("cola", n_trials=4, study="topped", progress=notes.reporter,
                       **options(tiny_model, two_tasks, store))
    first = [t.user_attrs["warm_start"] for t in sorted(found.get_trials(),
                                                        key=lambda t: t.number)]
    assert [name.split(":")[0] for name in first[:2]] == ["portfolio 1", "portfolio 2"]
    cold = api.search("cola", n_trials=2, study="cold", progress=Notes().reporter,
                      **{**options(tiny_model, two_tasks, store), "transfer": False})
    recipes = [t.user_attrs["warm_start"] for t in sorted(cold.get_trials(),
                                                          key=lambda t: t.number)][:2]
    assert first[2:] == recipes  # the cold start-up's first two, in its order
    assert (f"start-up: portfolio of 2 from 1 earlier study (sst2); the recipes fill its 2 "
            f"other places: {recipes[0]}, {recipes[1]}") in notes.lines
    assert found.user_attrs["startup"]["recipes"] == 2
    assert set(found.user_attrs["lr_prior"]["members"]) == set(first[:2])


def test_no_transfer_starts_with_the_recipes_and_remembers_nothing(
        workdir: Path, tiny_model: Path, two_tasks: Path) -> None:
    from autopeft import api

    store = workdir / "meta"
    write_study(store, study("sst2", [(cand("bitfit", 4e-3), 0.9, 10**4),
                                      (cand("prompt", 0.1), 0.5, 10**4)]))
    notes = Notes()
    found = api.search("cola", n_trials=1, study="cold", progress=notes.reporter,
                       **{**options(tiny_model, two_tasks, store), "transfer": False})
    assert not any(line.startswith("start-up:") for line in notes.lines)
    assert any(line.startswith("warm start: LoRA r=8") for line in notes.lines)
    assert found.trials[0].user_attrs["warm_start"].startswith("LoRA r=8")
    assert [st.study for st in load_store(store)] == ["earlier-sst2"]


def test_a_store_that_cannot_be_written_is_one_note_and_the_search_ends_well(
        workdir: Path, tiny_model: Path, two_tasks: Path) -> None:
    from autopeft import api

    blocked = workdir / "meta"
    blocked.write_text("not a folder")
    notes = Notes()
    found = api.search("cola", n_trials=1, study="blocked", progress=notes.reporter,
                       **options(tiny_model, two_tasks, blocked))
    assert found.trials and all(t.state.name == "COMPLETE" for t in found.trials)
    assert sum(line.startswith("meta-store: could not remember") for line in notes.lines) == 1
    # nothing in the store: the shipped BERT-family portfolio started it
    assert any(line.startswith("start-up: the default BERT-family portfolio")
               for line in notes.lines)


# -- the learning-rate prior ------------------------------------------------------------------

def test_a_task_that_ranks_the_portfolio_alike_weighs_one_that_ranks_it_reversed_nothing() -> None:
    from autopeft.search.transfer import task_weights

    prior = {"best_lr": {"alike": {}, "reversed": {}},
             "members": {"p1": {"alike": 0.9, "reversed": 0.5}, "p2": {"alike": 0.8, "reversed": 0.6},
                         "p3": {"alike": 0.7, "reversed": 0.7}}}
    assert task_weights(prior, {"p1": 0.6, "p2": 0.55}) == {"alike": 1.0, "reversed": 1.0}
    assert task_weights(prior, {"p1": 0.6, "p2": 0.55, "p3": 0.5}) == pytest.approx(
        {"alike": 1.0, "reversed": 0.0})


def test_the_prior_fades_as_the_study_trains_the_entry_and_knows_only_what_learned() -> None:
    from autopeft.search.transfer import PRIOR_N0, rate_prior

    prior = {"best_lr": {"sst2": {"lora": 2e-3}, "cola": {"lora": 1e-3, "ia3": 1e-2}},
             "members": {}}
    share, centres = rate_prior(prior, {}, "lora", 0)
    assert share == 1.0 and sorted(centres) == sorted([(np.log(2e-3), 1.0), (np.log(1e-3), 1.0)])
    assert rate_prior(prior, {}, "lora", 12)[0] == PRIOR_N0 / (PRIOR_N0 + 12)
    assert rate_prior(prior, {}, "prefix", 0) == (0.0, [])


def test_the_best_rate_of_an_entry_counts_only_where_it_beat_the_median() -> None:
    from autopeft.search.transfer import best_rates

    rows = [(cand("lora", 2e-3), 0.9, 10**5), (cand("lora", 5e-4), 0.6, 10**5),
            (cand("prefix", 5e-3), 0.5, 10**5), (cand("ia3", 1e-2), 0.7, 10**4),
            (cand("prompt", 0.1), 0.5, 10**4)]
    assert best_rates([study("sst2", rows)], ["sst2"]) == {"sst2": {"lora": 2e-3, "ia3": 1e-2}}


def test_design_proposals_draw_their_rate_from_the_prior_and_without_one_spread() -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from autopeft.search.proposals import RungSampler
    from autopeft.search.transfer import LR_PRIOR

    def rates(prior: dict | None) -> list[float]:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.create_study(sampler=RungSampler(seed=0), directions=["maximize"] * 3)
        if prior:
            study.set_user_attr(LR_PRIOR, prior)
        dists = {"candidate": CategoricalDistribution(["lora"]),
                 "lora.learning_rate": FloatDistribution(1e-4, 3e-3, log=True)}
        out = []
        for _ in range(8):
            trial = study.ask(dists)
            out.append(trial.params["lora.learning_rate"])
            study.tell(trial, [0.5, 1.0, 1.0])
        return out

    prior = rates({"best_lr": {"sst2": {"lora": 2e-3}}, "members": {}})
    assert all(2e-3 / 8 <= r <= 3e-3 for r in prior)  # a factor of 2 is one sigma
    assert sum(r < 2e-3 / 8 for r in rates(None)) >= 2  # the design spreads over the range
