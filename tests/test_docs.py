"""The documentation: the site builds with every page and link intact, the README stays a
five-minute read whose test command is the one CI runs, and a plain install is the users'."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strict_with_the_api_from_docstrings(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                          str(ROOT / "mkdocs.yml"), "-d", str(site)], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]  # a broken link or a page left out fails
    api = (site / "api" / "index.html").read_text()
    for name in ("search", "search_with_trainer", "front", "export", "worker"):
        assert f'id="autopeft.api.{name}"' in api, name  # rendered from the docstrings
    # Pages included from the repository's own files, not copies.
    assert "Search quality" in (site / "benchmarks" / "index.html").read_text()
    assert "Unreleased" in (site / "changelog" / "index.html").read_text()


def test_the_readme_is_short_and_its_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    install, tests = blocks[0].strip(), blocks[1].strip()
    assert install.startswith('pip install -e . ') and "autopeft search" in install
    assert "[test]" not in install  # users do not install the test extra
    assert tests == 'pip install -e ".[test]" && python3 -m pytest'
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]"' in ci
    assert ci.strip().splitlines()[-1] == "python3 -m pytest"


def test_a_plain_install_leaves_out_bitsandbytes_the_test_install_keeps_it() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert not any(d.startswith("bitsandbytes") for d in project["dependencies"])
    assert any(d.startswith("bitsandbytes") for d in extras["qlora"])
    assert any(d.startswith("bitsandbytes") for d in extras["test"])
    assert "autopeft[docs]" in extras["test"]
    assert {d.split(">")[0].split("[")[0] for d in extras["docs"]} == {
        "mkdocs", "mkdocs-material", "mkdocstrings"}
