"""The wheel carries what a user needs: the shipped search spaces, the CLI entry point; and
the commands that only read (``--help``, ``methods``, ``tasks``) do not import torch."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.xdist_group("wheel")  # pip wheel builds in the checkout's build/
def test_a_wheel_installed_in_a_fresh_venv_has_the_spaces_and_the_cli(tmp_path: Path) -> None:
    # No PYTHONPATH anywhere here: a folder another test put there (the GPU check's bundle
    # site holds an autopeft) made pip find autopeft installed and skip the wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-w", str(wheels)], check=True, capture_output=True,
                   env=env)
    venv = tmp_path / "venv"
    # The venv sees the test machine's torch, transformers... but not this checkout.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True,
                   env=env)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True, env=env)
    code = ("import autopeft, autopeft.space as s; from autopeft.space import load_space; "
            "print(autopeft.__file__); print(s.SPACES_DIR); "
            "print(sorted(p.stem for p in s.SPACES_DIR.glob('*.yaml'))); "
            "print(load_space('default').source); "
            "from autopeft.search.transfer import default_portfolio; "
            "print(len(default_portfolio('bert').candidates))")
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert str(venv) in out[0], "the wheel's package, not the checkout, was imported"
    assert str(venv) in out[1] and "autopeft/search_spaces" in out[1]
    assert out[2] == "['autopeft', 'default', 'lora', 'paper']"
    assert out[3].endswith("default.yaml")
    assert int(out[4]) > 0  # the shipped BERT-family start-up portfolio (package data)
    cli = subprocess.run([str(venv / "bin" / "autopeft"), "methods", "--json"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and '"lora"' in cli.stdout


@pytest.mark.parametrize("argv", [["--help"], ["search", "--help"], ["methods"], ["tasks"]])
def test_reading_commands_do_not_import_torch(argv: list[str]) -> None:
    code = ("import sys\nfrom autopeft import cli\ntry:\n    cli.main(%r)\nexcept SystemExit:\n"
            "    pass\nprint('torch' in sys.modules, 'optuna' in sys.modules)") % (argv,)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "False False", f"{argv} imported torch or optuna"
    assert time.perf_counter() - start < 30  # sanity only; BENCHMARKS.md has the timing
