"""Every method documents its parameters: the registry refuses an undocumented spec field,
and ``autopeft methods [NAME] [--json]`` / ``api.methods`` show the help texts."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from autopeft import api
from autopeft.cli import main
from autopeft.errors import UserError
from autopeft.methods import lora
from autopeft.methods.registry import METHODS, Method, register


def test_every_field_of_every_method_has_a_short_one_line_help() -> None:
    for m in METHODS.values():
        fields = m.fields()
        assert [f["name"] for f in fields] == list(m.params()), m.name
        assert {f["name"]: f["default"] for f in fields} == m.params(), m.name
        for f in fields:
            where = f"{m.name}.{f['name']}"
            assert f["help"].strip(), where
            assert "\n" not in f["help"] and len(f["help"]) <= 160, where


def _method(spec: type) -> Method:
    return Method(name="documented", category="additive", spec=spec, apply=lambda *a: None,
                  summary="test")


def test_register_refuses_a_spec_field_without_help() -> None:
    @dataclass
    class Spec:
        size: int = field(default=4, metadata={"help": "how big"})
        depth: int = 2
        width: int = field(default=3, metadata={"help": "  "})

    with pytest.raises(ValueError, match=r"'documented'.*depth, width have no help"):
        register(_method(Spec), {})


def test_register_refuses_an_inherited_field_redeclared_without_help() -> None:
    @dataclass
    class Spec(lora.Spec):
        r: int = 4  # redeclaring a field drops the parent's metadata

    with pytest.raises(ValueError, match=r"field\(s\) r have no help"):
        register(_method(Spec), {})


def test_register_accepts_a_documented_spec() -> None:
    @dataclass
    class Spec:
        size: int = field(default=4, metadata={"help": "how big"})

    found: dict[str, Method] = {}
    register(_method(Spec), found)
    assert found["documented"].fields() == [{"name": "size", "default": 4, "help": "how big"}]


def test_api_methods_rows() -> None:
    rows = api.methods()
    assert [r["name"] for r in rows] == list(METHODS)
    for r in rows:
        assert r["params"] == {f["name"]: f["default"] for f in r["fields"]}
    (row,) = api.methods("lora")
    assert row["category"] == "reparameterized" and row["engine"] == "peft"
    assert row["peft_export"] is True and row["params"]["r"] == 8
    assert row["fields"][0] == {"name": "r", "default": 8, "help": METHODS["lora"].fields()[0]["help"]}
    assert api.methods("full")[0]["fields"] == []


def test_api_methods_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match=r"unknown method 'lorax'; known methods: .*\blora\b"):
        api.methods("lorax")


def test_cli_methods_name_shows_each_field_with_its_help(
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["methods", "adalora"]) == 0
    out = capsys.readouterr().out
    assert "category reparameterized, engine peft, peft export yes" in out
    for f in METHODS["adalora"].fields():
        line = next(ln for ln in out.splitlines() if f" {f['name']} " in ln)
        assert f["help"] in line and str(f["default"]) in line
    assert "child_tuning" not in out
    assert main(["methods", "full"]) == 0
    assert "no parameters" in capsys.readouterr().out


def test_cli_methods_table_still_lists_every_method(
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS:
        assert f" {name} " in out
    assert "r=8, alpha=16.0" in out and "autopeft methods NAME" in out


def test_cli_methods_unknown_name_is_a_one_line_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["methods", "lorax"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("autopeft: error: unknown method 'lorax'")
    assert "lora" in lines[0].split("known methods: ")[1].split(", ")


def test_cli_methods_json_keeps_params_and_adds_fields(capsys: pytest.CaptureFixture) -> None:
    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(METHODS)
    by_name = {r["name"]: r for r in rows}
    assert by_name["lora"]["params"]["targets"] == ["query", "value"]
    assert set(by_name["lora"]) == {"name", "category", "engine", "peft_export", "summary",
                                    "params", "fields"}
    assert by_name["vera"]["fields"] == json.loads(json.dumps(METHODS["vera"].fields()))
    assert main(["methods", "vera", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [by_name["vera"]]


def test_cli_tasks_json_is_api_tasks(capsys: pytest.CaptureFixture) -> None:
    assert main(["tasks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == api.tasks()
    sst2 = next(r for r in rows if r["name"] == "sst2")
    assert sst2["labels"] == 2 and sst2["metric"] == "accuracy" and sst2["inputs"] == ["sentence"]


@pytest.mark.parametrize("argv", [["methods", "lora"], ["methods", "lora", "--json"],
                                  ["tasks", "--json"]])
def test_method_help_does_not_import_torch(argv: list[str]) -> None:
    code = ("import sys\nfrom autopeft import cli\ncli.main(%r)\n"
            "print('torch' in sys.modules, 'optuna' in sys.modules)") % (argv,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "False False", f"{argv} imported torch or optuna"
