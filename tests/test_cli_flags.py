"""Flags reach exactly one setting, and a flag left out leaves the dataclass's default in
charge (declared once, there). The three seeds have three names."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import pytest

from autopeft import api
from autopeft.checks import known_keys
from autopeft.cli import main, parser
from autopeft.report.show import CSV_COLUMNS, Row, csv_rows
from autopeft.settings import DataSettings, TrainSettings

SEARCH = ["search", "--task", "sst2", "--model", "m"]


def names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_no_option_name_belongs_to_two_settings() -> None:
    """``search(**options)`` routes each option by its name: a shared name would set two
    settings at once (as ``--seed`` once set the sampler's seed and the data subset's)."""
    from autopeft.search.config import SearchConfig

    groups = [names(SearchConfig), names(TrainSettings), names(DataSettings)]
    nested = {"task", "model", "data", "train"}  # given apart, never as options
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            assert (a & b) - nested == set()


def test_a_flag_left_out_is_left_to_the_dataclass() -> None:
    from autopeft.search.config import SearchConfig

    args = vars(parser().parse_args(SEARCH))
    fields = names(SearchConfig) | names(TrainSettings) | names(DataSettings)
    for field in fields - {"task", "model", "data", "train"}:
        assert field not in args, field  # absent: the dataclass's default applies
    assert set(args) & fields == {"task", "model"}


def search_help() -> dict[str, str]:
    """Each ``search`` flag's help text, as ``search --help`` prints it."""
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {flag: a.help % {"default": a.default} for a in sub.choices["search"]._actions
            for flag in a.option_strings if a.help}


def test_the_help_states_the_dataclass_defaults() -> None:
    from autopeft.search.config import SearchConfig

    helps = search_help()
    t, d = TrainSettings(), DataSettings(task="sst2")
    c = SearchConfig(task="sst2", model="m", n_trials=1)
    for flag, value in (("--batch-size", t.batch_size), ("--max-length", t.max_length),
                        ("--epochs", t.epochs), ("--device", t.device),
                        ("--precision", t.precision), ("--subset-seed", d.subset_seed),
                        ("--sampler", c.sampler), ("--pruner", c.pruner), ("--eta", c.eta),
                        ("--seed", c.seed), ("--heartbeat", c.heartbeat),
                        ("--isolation", c.isolation), ("--space", c.space),
                        ("--workers", c.workers), ("--confirm-seeds", c.confirm_seeds)):
        assert helps[flag].endswith(f"(default: {value})") or helps[flag] == f"default: {value}", flag
    assert "%" in helps["--validation"]  # printed as one percent sign, not a format error
    with pytest.raises(SystemExit):
        main(["search", "--help"])


def captured_config(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Any:
    """The SearchConfig that ``argv`` hands to the search (which is not run)."""
    import autopeft.search.study as study

    seen = {}
    monkeypatch.setattr(study, "run_search", lambda cfg, reporter: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(api, "front", lambda study: [])
    assert main(argv) == 0
    return seen["cfg"]


def test_the_sampler_seed_and_the_subset_seed_are_two_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = captured_config(monkeypatch, [*SEARCH, "--n-trials", "1", "--seed", "5", "--quiet"])
    assert (cfg.seed, cfg.data.subset_seed) == (5, 0)
    cfg = captured_config(monkeypatch, [*SEARCH, "--n-trials", "1", "--subset-seed", "7", "--quiet"])
    assert (cfg.seed, cfg.data.subset_seed) == (0, 7)
    cfg = captured_config(monkeypatch, [*SEARCH, "--n-trials", "1", "--batch-size", "8", "--quiet"])
    assert cfg.train == dataclasses.replace(TrainSettings(), batch_size=8)


def test_the_old_name_of_the_subset_seed_is_still_read() -> None:
    """Studies and candidate.yaml files written before the rename store ``data.seed``."""
    old = {"task": "sst2", "train_samples": 100, "seed": 3}
    data = DataSettings(**known_keys(old, DataSettings, "data"))
    assert data.subset_seed == 3
    assert "seed" not in dataclasses.asdict(data)  # written under its new name only
    with pytest.raises(api.UserError, match="unknown key"):
        known_keys({**old, "sede": 1}, DataSettings, "data")


def test_show_csv_has_a_header_and_the_placement_last() -> None:
    row = Row(number=3, state="COMPLETE", label="lora", score=0.81, trainable_params=1000,
              trainable_fraction=0.001, peak_memory_bytes=2048, wall_seconds=12.0,
              on_front=True, candidate={"methods": [{"name": "lora", "params": {"r": 8}}],
                                        "learning_rate": 5e-4})
    header, line = csv_rows([row])
    assert header == [*CSV_COLUMNS, "placement"]
    assert dict(zip(header, line))["score"] == 0.81
    assert line[-1] == "lora r=8; lr=5.0e-04"
