"""User mistakes: one line on stderr naming the problem and the fix, exit code 2, no traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

from autopeft.cli import main

SPACES = {
    "yaml": ("candidates: [lora\nmethods: {}\n", "line"),
    "method": ("candidates: [lorax]\n", "unknown method 'lorax'"),
    "param": ("candidates: [lora]\nmethods:\n  lora: {rank: 8}\n", "unknown parameter(s) rank"),
    "range": ("candidates: [lora]\nlearning_rate: {low: 1.0e-3, high: 1.0e-4}\n", "empty range"),
    "hybrid": ("candidates: [full+lora]\n", "'full' cannot be combined with 'lora'"),
    "role": ("candidates: [lora]\nmethods:\n  lora: {targets: [querry]}\n", "unknown target role"),
    "empty": ("candidates: []\n", "at least one"),
    "rank": ("candidates: [lora]\nmethods:\n  lora: {r: 64}\n", "rank 64 is larger than module"),
}


def run(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autopeft: error: "), err
    return err[0]


def base_args(model: Path, data: Path) -> list[str]:
    return ["search", "--task", "sst2", "--model", str(model), "--data-dir", str(data),
            "--n-trials", "1", "--quiet"]


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_bad_space_file(kind: str, workdir: Path, tiny_model: Path, tiny_data: Path,
                        capsys: pytest.CaptureFixture) -> None:
    text, expected = SPACES[kind]
    (workdir / "s.yaml").write_text(text)
    msg = run(capsys, base_args(tiny_model, tiny_data) + ["--space", str(workdir / "s.yaml")])
    assert expected in msg and "s.yaml" in msg


def test_yaml_error_names_the_line(workdir: Path, tiny_model: Path, tiny_data: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    (workdir / "s.yaml").write_text("name: x\ncandidates: [lora\nmethods: {}\n")
    msg = run(capsys, base_args(tiny_model, tiny_data) + ["--space", str(workdir / "s.yaml")])
    assert "line 3" in msg or "line 2" in msg


@pytest.mark.parametrize("argv,expected", [
    (["--task", "mnli2"], "unknown task 'mnli2'"),
    (["--budget", "soon"], "cannot read the budget 'soon'"),
    (["--space", "nosuchspace"], "search space 'nosuchspace'"),
    (["--max-memory", "lots"], "lots"),
    (["--max-params", "most"], "most"),
])
def test_bad_search_flags(argv: list[str], expected: str, workdir: Path, tiny_model: Path,
                          tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    assert expected in run(capsys, ["search", *_merge(base_args(tiny_model, tiny_data)[1:], argv)])


def _merge(args: list[str], override: list[str]) -> list[str]:
    """``args`` with ``override``'s flag set to its value (added if absent)."""
    out = list(args)
    flag, value = override
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


def test_missing_data_dir(workdir: Path, tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    msg = run(capsys, base_args(tiny_model, workdir / "nowhere"))
    assert "does not exist" in msg and "--data-dir" in msg


def test_missing_model_dir(workdir: Path, tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    msg = run(capsys, base_args(workdir / "no-model", tiny_data))
    assert "does not exist" in msg


def test_data_with_missing_column_and_bad_labels(workdir: Path, tiny_model: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    folder = workdir / "d" / "glue" / "sst2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("text\tlabel\nfine\t1\n")
    (folder / "validation.tsv").write_text("sentence\tlabel\nfine\t1\n")
    assert "lacks column(s) sentence" in run(capsys, base_args(tiny_model, workdir / "d"))
    (folder / "train.tsv").write_text("sentence\tlabel\nfine\t7\n")
    assert "outside sst2's label set" in run(capsys, base_args(tiny_model, workdir / "d"))
    (folder / "train.tsv").write_text("sentence\tlabel\n")
    assert "has no rows" in run(capsys, base_args(tiny_model, workdir / "d"))


def test_show_and_export_of_unknown_things(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert "no study database" in run(capsys, ["show", "ghost"])
    assert "no study database" in run(capsys, ["export", "ghost", "--trial", "0", "--out", "x"])


def test_no_budget_and_no_trial_count(workdir: Path, tiny_model: Path, tiny_data: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    args = [a for a in base_args(tiny_model, tiny_data) if a not in ("--n-trials", "1")]
    assert "give --budget, --n-trials or --max-trials" in run(capsys, args)


def test_resuming_with_other_settings_needs_force(workdir: Path, tiny_model: Path, tiny_data: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    (workdir / "a.yaml").write_text("candidates: [bitfit]\nlearning_rate: 1.0e-3\n")
    (workdir / "b.yaml").write_text("candidates: [lora]\nlearning_rate: 1.0e-3\n")
    args = base_args(tiny_model, tiny_data) + ["--study", "s", "--train-samples", "32"]
    assert main(args + ["--space", str(workdir / "a.yaml")]) == 0
    # Other training settings: refused, then allowed with --force.
    assert "different train" in run(capsys, args + ["--space", str(workdir / "a.yaml"),
                                                    "--epochs", "2"])
    assert main(args + ["--space", str(workdir / "a.yaml"), "--epochs", "2", "--force"]) == 0
    # A different space never: Optuna cannot change a study's choices.
    msg = run(capsys, args + ["--space", str(workdir / "b.yaml"), "--force"])
    assert "different space" in msg and "another --study" in msg
