"""The search's seams in isolation: samplers and pruners by name, the one way to open an
existing study, and the one budget every process reads its deadlines from."""
from __future__ import annotations

import pytest


def test_make_sampler_builds_each_named_sampler_with_its_settings() -> None:
    import optuna

    from autopeft.search.samplers import DEFAULT_SAMPLER, SAMPLERS, make_sampler

    assert SAMPLERS == ("tpe", "nsga2", "gp", "random") and DEFAULT_SAMPLER in SAMPLERS
    from autopeft.search.proposals import RungSampler

    kinds = {"tpe": RungSampler, "nsga2": optuna.samplers.NSGAIISampler,
             "gp": optuna.samplers.GPSampler, "random": optuna.samplers.RandomSampler}
    for name in SAMPLERS:
        assert type(make_sampler(name, 0)) is kinds[name]
    tpe = make_sampler("tpe", 0, {"lora": "reparameterized"})
    assert type(tpe._model) is optuna.samplers.TPESampler and tpe._random_share == 1 / 3
    assert tpe._families == {"lora": "reparameterized"}
    assert make_sampler("nsga2", None)._population_size == 10
    with pytest.raises(ValueError, match="unknown sampler 'cmaes'"):
        make_sampler("cmaes", 0)


def test_open_existing_study_says_in_one_line_what_is_missing(tmp_path, monkeypatch) -> None:
    import optuna

    from autopeft.errors import UserError
    from autopeft.search.open import open_existing_study

    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(tmp_path))
    with pytest.raises(UserError, match="no study database .*ghost.db; run `autopeft search`"):
        open_existing_study("ghost")
    with pytest.raises(UserError, match="study name"):
        open_existing_study("../ghost")  # names a file under studies/: a plain name only
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="other", storage=url)
    with pytest.raises(UserError) as err:
        open_existing_study("ghost", url)
    assert str(err.value) == f"no study named 'ghost' in {url}; start it with `autopeft search`"
    assert open_existing_study("other", url).study_name == "other"


def test_the_budget_s_search_phase_ends_before_the_whole_and_workers_read_the_same() -> None:
    import optuna

    from autopeft.search.budget import Budget
    from autopeft.search.workers import seconds_left

    budget = Budget(100.0, started=1000.0).with_refit_share(0.25)
    assert (budget.search.end, budget.end) == (1075.0, 1100.0)
    assert budget.search.started == budget.started == 1000.0
    t = [5000.0]  # the clock: moved by hand, never waited for
    now = Budget(600.0, 5000.0, clock=lambda: t[0]).with_refit_share(0.5)
    assert (now.search.left(), now.left()) == (300.0, 600.0)
    assert now.search.fits(200) and not now.search.fits(400) and now.fits(400)
    t[0] = 5250.0
    assert (now.search.left(), now.left(), now.search.elapsed()) == (50.0, 350.0, 250.0)
    assert now.search.fits(50) and not now.search.fits(51)

    study = optuna.create_study()
    now.store(study)
    worker = Budget.of_study(study.user_attrs, lambda: t[0])  # what a worker reads: the same
    assert worker == now and worker.search.end == study.user_attrs["deadline"] == 5300.0
    assert seconds_left(study, lambda: t[0]) == 50.0
    t[0] = 5400.0  # the search phase is over, the refit's share is not
    assert seconds_left(study, lambda: t[0]) == 0.0 and not worker.search.fits(None)
    assert worker.left() == 200.0 and worker.fits(None)
    assert Budget.of_study({}).search.left() is None  # no time limit
    old = Budget.of_study({"deadline": 5300.0}, lambda: 5100.0)  # a study with only its deadline
    assert (old.search.end, old.end, old.search.left()) == (5300.0, 5300.0, 200.0)


def test_no_budget_means_no_deadline_in_any_phase() -> None:
    from autopeft.search.budget import Budget

    budget = Budget(None).with_refit_share(0.3)
    assert budget.left() is None and budget.search.left() is None and budget.search.fits(1e9)
    assert budget.end is None and budget.search.end is None


def test_api_worker_checks_the_study_name_and_that_the_study_exists(tmp_path, monkeypatch) -> None:
    import optuna

    from autopeft import api
    from autopeft.errors import UserError

    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(tmp_path))
    with pytest.raises(UserError, match="not a plain name"):
        api.worker("a/b")  # it would name a file outside studies/
    with pytest.raises(UserError, match="no study database"):
        api.worker("ghost")
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    optuna.create_study(study_name="bare", storage=url)
    with pytest.raises(UserError, match="not made by this autopeft version's search"):
        api.worker("bare", url, isolation="none")


def test_a_study_stored_before_the_subset_seed_rename_resumes_as_the_same_study(tmp_path) -> None:
    """Studies written before ``data.seed`` became ``data.subset_seed`` resume; a study
    with another subset seed is another study."""
    from autopeft.errors import UserError
    from autopeft.search.config import SearchConfig
    from autopeft.search.open import open_study
    from autopeft.space import space_from_text

    space = space_from_text("candidates: [bitfit]\nlearning_rate: 1.0e-3\n", "inline")
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = SearchConfig(task="sst2", model="m", study="s", storage=url, n_trials=1)
    study = open_study(cfg, space)
    data = dict(study.user_attrs["data"])
    data["seed"] = data.pop("subset_seed")  # as an older autopeft stored it
    study.set_user_attr("data", data)
    assert open_study(cfg, space).user_attrs["data"]["subset_seed"] == 0  # resumed, rewritten
    cfg.data.subset_seed = 1
    with pytest.raises(UserError, match="exists with a different data"):
        open_study(cfg, space)
