"""Hostile input (issue 14): every case ends with exit code 2 and one line, no traceback,
and nothing created or lost on the way. No test here trains: each refusal comes first."""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
import torch
import yaml

from autopeft.candidate import Candidate, MethodSpec
from autopeft.cli import main
from autopeft.errors import UserError
from autopeft.runner import DataSettings
from autopeft.train import TrainSettings


def refused(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autopeft: error: "), err
    return err[0]


def search_args(model: Path, data: Path, *extra: str) -> list[str]:
    return ["search", "--task", "sst2", "--model", str(model), "--data-dir", str(data),
            "--n-trials", "1", "--quiet", *extra]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: to show nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def fake_study(name: str, model: Path, data: Path, storage: str | None = None) -> str:
    """A study with one complete LoRA trial, written straight through Optuna (no training)."""
    import optuna

    from autopeft.results import DIRECTIONS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path("studies").mkdir(exist_ok=True)
    url = storage or f"sqlite:///{Path('studies', name + '.db').resolve()}"
    study = optuna.create_study(study_name=name, storage=url, directions=list(DIRECTIONS))
    attrs = {"task": "sst2", "model": str(model),
             "data": dataclasses.asdict(DataSettings("sst2", str(data), 32, 16)),
             "train": dataclasses.asdict(TrainSettings(batch_size=8, max_length=32, device="cpu"))}
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    candidate = Candidate([MethodSpec("lora", {"r": 2})], learning_rate=1e-3)
    study.add_trial(optuna.trial.create_trial(
        values=[0.5, 1000, 10_000], user_attrs={"candidate": candidate.to_dict(), "label": "lora"}))
    return url


@pytest.fixture
def exported(workdir: Path, tiny_model: Path, tiny_data: Path) -> Path:
    """A real export (configuration only) of a fake study's trial 0."""
    fake_study("s", tiny_model, tiny_data)
    assert main(["export", "s", "--trial", "0", "--out", "exp"]) == 0
    return workdir / "exp"


# -- 1. --force replaces a previous export and nothing else ------------------------------

@pytest.mark.parametrize("out", [".", "studies", "mine", ".."])
def test_force_never_replaces_foreign_folders(out: str, exported: Path, workdir: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    (workdir / "notes.txt").write_text("mine")
    (workdir / "mine").mkdir()
    (workdir / "mine" / "thesis.tex").write_text("years of work")
    (workdir / "sub").mkdir()
    if out == "..":  # the parent of the working folder (here: the test's folder)
        monkeypatch.chdir(workdir / "sub")
        monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(workdir / "studies"))
    before = tree(workdir)
    msg = refused(capsys, ["export", "s", "--trial", "0", "--out", out, "--force"])
    assert "--force" in msg and tree(workdir) == before


def test_force_replaces_a_previous_export(exported: Path, workdir: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    (exported / "README.md").write_text("stale")
    assert main(["export", "s", "--trial", "0", "--out", str(exported), "--force"]) == 0
    assert "stale" not in (exported / "README.md").read_text()
    assert (exported / "candidate.yaml").is_file()
    (exported / "extra.txt").write_text("not ours")  # now it is no longer only an export
    msg = refused(capsys, ["export", "s", "--trial", "0", "--out", str(exported), "--force"])
    assert "extra.txt" in msg and (exported / "extra.txt").read_text() == "not ours"


def test_train_force_is_refused_before_training(exported: Path, workdir: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    (workdir / "keep.txt").write_text("keep")
    before = tree(workdir)
    msg = refused(capsys, ["train", "--config", str(exported), "--out", ".", "--force"])
    assert "working folder" in msg and tree(workdir) == before


def test_out_onto_a_file(exported: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    (workdir / "file.txt").write_text("x")
    for force in ([], ["--force"]):
        msg = refused(capsys, ["export", "s", "--trial", "0", "--out", "file.txt", *force])
        assert "not a folder" in msg and (workdir / "file.txt").read_text() == "x"
    assert "not a folder" in refused(capsys, ["plot", "s", "--out", "file.txt"])


# -- 2. study names are plain names --------------------------------------------------------

@pytest.mark.parametrize("name", ["../esc", "/tmp/autopeft-abs", "a/b", ".hidden", "bad[/]name"])
def test_study_names_must_be_plain(name: str, workdir: Path, tiny_model: Path, tiny_data: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    before = tree(workdir.parent / workdir.name)
    msg = refused(capsys, search_args(tiny_model, tiny_data, "--study", name))
    assert "not a plain name" in msg and "--storage" in msg
    for command in (["show", name], ["plot", name], ["export", name, "--trial", "0", "--out", "x"],
                    ["worker", "--study", name]):
        assert "not a plain name" in refused(capsys, command)
    assert tree(workdir) == before and not (workdir / "studies").exists()
    assert not Path(f"{name}.db").exists() and not (workdir.parent / "esc.db").exists()


def test_plot_of_a_stored_odd_name_needs_out(workdir: Path, tiny_model: Path, tiny_data: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """A name with markup, stored through --storage: shown escaped; plot needs an --out."""
    url = fake_study("bad[/]name", tiny_model, tiny_data, f"sqlite:///{workdir / 'x.db'}")
    capsys.readouterr()
    assert main(["show", "bad[/]name", "--storage", url]) == 0
    assert "bad[/]name" in capsys.readouterr().out
    assert "not a plain name" in refused(capsys, ["plot", "bad[/]name", "--storage", url])
    assert not (workdir / "reports").exists()


def test_progress_lines_escape_the_study_name(workdir: Path, tiny_model: Path,
                                              tiny_data: Path) -> None:
    import optuna
    from rich.console import Console

    from autopeft.report.progress import ConsoleReporter

    fake_study("bad[/]name", tiny_model, tiny_data, f"sqlite:///{workdir / 'x.db'}")
    study = optuna.load_study(study_name="bad[/]name", storage=f"sqlite:///{workdir / 'x.db'}")
    reporter = ConsoleReporter()
    reporter.console = Console(file=io.StringIO(), width=200)
    reporter.finished(study)  # rich raised MarkupError here
    assert "autopeft show bad[/]name" in reporter.console.file.getvalue()


def test_default_study_name_of_own_data_is_plain(workdir: Path) -> None:
    from autopeft.search.config import SearchConfig

    (workdir / "d").mkdir()
    (workdir / "d" / "x.csv").write_text("text,label\na,1\nb,0\n")
    cfg = SearchConfig(task=f"csv:{workdir / 'd' / 'x.csv'}", model="org/Model", n_trials=1)
    assert "/" not in cfg.study and cfg.study.endswith("x.csv-Model")


# -- 3, 10. candidate.yaml: every field checked like the flags -----------------------------

TAMPERED = {
    "batch": (lambda i: i["train"].update(batch_size=-4), "train: batch_size must be >= 1"),
    "epochs": (lambda i: i["train"].update(epochs=float("nan")), "epochs must be a finite"),
    "unknown": (lambda i: i.update(extra=1), "unknown key(s) extra"),
    "train-key": (lambda i: i["train"].update(batchsize=4), "unknown key(s) batchsize"),
    "lr": (lambda i: i["candidate"].update(learning_rate="fast"), "learning_rate must be a number"),
    "lr-negative": (lambda i: i["candidate"].update(learning_rate=-1.0), "learning_rate must be > 0"),
    "device": (lambda i: i["train"].update(device="quantum"), "device must be auto, cpu"),
    "seed": (lambda i: i["candidate"].update(seed=-1), "seed must be >= 0"),
    "method": (lambda i: i["candidate"]["methods"][0].update(name="lorax"), "unknown method 'lorax'"),
    "param": (lambda i: i["candidate"]["methods"][0]["params"].update(rank=4), "no parameter(s) rank"),
    "samples": (lambda i: i["data"].update(train_samples=0), "train_samples must be >= 1"),
    "not-a-map": (lambda i: i.update(train=[1, 2]), "train must be a mapping"),
    "fidelity": (lambda i: i.update(fidelity={"stop_at": -1}), "fidelity: stop_at must be >= 1"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_candidate_yaml(case: str, exported: Path, capsys: pytest.CaptureFixture) -> None:
    change, expected = TAMPERED[case]
    info = yaml.safe_load((exported / "candidate.yaml").read_text())
    change(info)
    (exported / "candidate.yaml").write_text(yaml.safe_dump(info))
    msg = refused(capsys, ["train", "--config", str(exported), "--out", "trained"])
    assert expected in msg and "candidate.yaml" in msg
    assert not Path("trained").exists()


@pytest.mark.parametrize("text,expected", [
    ("model: [unclosed\n", "YAML error at line"),
    ("!!python/object/apply:os.system ['touch pwned']\n", "YAML error"),
    ("- just\n- a list\n", "not a candidate.yaml"),
])
def test_unreadable_candidate_yaml(text: str, expected: str, workdir: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    (workdir / "candidate.yaml").write_text(text)
    assert expected in refused(capsys, ["train", "--config", "candidate.yaml"])
    assert not (workdir / "pwned").exists()


def test_hand_written_exponent_is_a_number(exported: Path) -> None:
    from autopeft.export import read_candidate

    text = (exported / "candidate.yaml").read_text()
    info = yaml.safe_load(text)
    old = yaml.safe_dump({"learning_rate": info["candidate"]["learning_rate"]}).strip()
    (exported / "candidate.yaml").write_text(text.replace(old, "learning_rate: 3e-4"))
    assert read_candidate(exported)["candidate"]["learning_rate"] == 3e-4


def test_train_overrides_are_checked(exported: Path, capsys: pytest.CaptureFixture) -> None:
    assert "seed must be >= 0" in refused(capsys, ["train", "--config", str(exported), "--seed", "-1"])
    assert "device must be" in refused(capsys, ["train", "--config", str(exported),
                                                "--device", "quantum"])


def test_the_loop_refuses_to_spin_without_batches() -> None:
    from autopeft.data import Encoded
    from autopeft.train import train

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Linear(2, 2)

    empty = Encoded([], None, [])
    with pytest.raises(ValueError, match="no batches"):
        train(Tiny(), empty, lambda m: {"score": 0.0}, 1e-3, 0, TrainSettings(device="cpu"), 0)


# -- 4. lengths too short for the task -----------------------------------------------------

@pytest.mark.parametrize("length", ["1", "2"])
def test_max_length_too_short(length: str, workdir: Path, tiny_model: Path, tiny_data: Path,
                              capsys: pytest.CaptureFixture) -> None:
    msg = refused(capsys, search_args(tiny_model, tiny_data, "--max-length", length))
    assert "minimum is 3" in msg and "--max-length 3" in msg  # [CLS] word [SEP]
    assert not list(workdir.glob("studies/*.db"))


# -- 5, 6, 7, 9. flags: budget, device, numbers; nothing created on a refusal ---------------

@pytest.mark.parametrize("flag,value,expected", [
    ("--budget", "0", "is zero"),
    ("--budget", "0h0m", "is zero"),
    ("--budget", "9" * 400 + "h", "too large"),
    ("--device", "quantum", "device must be auto"),
    ("--epochs", "nan", "--epochs"),
    ("--epochs", "inf", "--epochs"),
    ("--epochs", "1e300", "epochs must be > 0 and at most"),
    ("--seed", "-1", "seed must be >= 0"),
    ("--batch-size", "many", "--batch-size"),
    ("--eta", "1", "eta must be >= 2"),
])
def test_bad_flags_create_nothing(flag: str, value: str, expected: str, workdir: Path,
                                  tiny_model: Path, tiny_data: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    msg = refused(capsys, search_args(tiny_model, tiny_data, "--study", "s", flag, value))
    assert expected in msg
    assert not (workdir / "studies").exists()  # the corrected command starts afresh


def test_cuda_without_cuda_is_refused_up_front(workdir: Path, tiny_model: Path, tiny_data: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    device = f"cuda:{torch.cuda.device_count()}"  # one past the last (cuda:0 on a CPU machine)
    msg = refused(capsys, search_args(tiny_model, tiny_data, "--study", "s", "--device", device))
    assert "CUDA device" in msg and not (workdir / "studies").exists()


def test_budget_definitions() -> None:
    from autopeft.search.budget import parse_duration
    from autopeft.search.config import SearchConfig

    assert parse_duration("5") == 300  # a bare number is minutes
    assert parse_duration("99999h") == 99999 * 3600
    for budget in (0, -5, float("inf"), float("nan")):
        with pytest.raises(UserError, match="budget"):
            SearchConfig(task="sst2", model="m", budget=budget)
