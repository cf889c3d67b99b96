"""Hostile own data, a failing disk, secrets in URLs and the smaller fault cases of issue 14:
every user-facing failure is one line on stderr and exit code 2, never a traceback, and a
trial is never left RUNNING by an error we could see."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest

from autopeft.cli import main
from autopeft.search.storage import mask
from conftest import ROOT, sst2_rows
from test_bad_input import run as one_line_error

optuna.logging.set_verbosity(optuna.logging.WARNING)


def own(model: Path, task: str, *extra: str) -> list[str]:
    return ["search", "--task", task, "--model", str(model), "--n-trials", "1", "--quiet",
            "--no-warm-start", "--pruner", "none", "--study", "s", "--batch-size", "16",
            "--max-length", "32", *extra]


def bitfit(folder: Path) -> str:
    path = folder / "bitfit.yaml"
    path.write_text("candidates: [bitfit]\nlearning_rate: 1.0e-3\n")
    return str(path)


def sst2(model: Path, data: Path, folder: Path, *extra: str) -> list[str]:
    return ["search", "--task", "sst2", "--model", str(model), "--data-dir", str(data),
            "--space", bitfit(folder), "--study", "s", "--batch-size", "16",
            "--train-samples", "48", "--eval-samples", "32", "--max-length", "32",
            "--pruner", "none", *extra]


def trials(workdir: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{workdir}/studies/s.db").trials


def write_rows(path: Path, rows: list[tuple[str, str]], header: str | None) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        if header is not None:
            fh.write(header + "\n")
        for text, label in rows:
            fh.write(f"{text}\t{label}\n")
    return path


# --- item 8: own data that is not what it should be -----------------------------------------

def test_non_utf8_bytes_name_the_line(workdir, tiny_model, capsys) -> None:
    path = workdir / "d.tsv"
    path.write_bytes(b"text\tlabel\ngood\t1\nna\xefve caf\xe9\t0\n")
    msg = one_line_error(capsys, own(tiny_model, f"tsv:{path}"))
    assert f"{path}:3: not UTF-8" in msg and "0xef" in msg


def test_jsonl_lines_that_are_not_objects(workdir, tiny_model, capsys) -> None:
    path = workdir / "d.jsonl"
    for bad, kind in (('["a", 1]', "list"), ('"text label"', "str"), ("7", "int")):
        path.write_text('{"text": "fine", "label": 1}\n' + bad + "\n")
        msg = one_line_error(capsys, own(tiny_model, f"jsonl:{path}"))
        assert f"{path}:2: expected a JSON object per line" in msg and kind in msg


def test_a_field_over_128_kib_is_read(workdir) -> None:
    from autopeft.tasks import OwnData, load_task

    big = "word " * 40_000  # 200 KB in one field: more than the csv module's default limit
    for name, sep in (("d.csv", ","), ("d.tsv", "\t")):
        path = workdir / name
        path.write_text(f"text{sep}label\n{big}{sep}1\nshort{sep}0\nother{sep}1\n")
        data = load_task(f"{name[2:]}:{path}", own=OwnData(validation=str(path)))
        assert len(data.train["text"][0]) == len(big) and data.train["label"] == [1, 0, 1]


def test_a_field_over_the_limit_is_one_line(workdir, tiny_model, monkeypatch, capsys) -> None:
    import autopeft.tasks as tasks

    monkeypatch.setattr(tasks, "FIELD_LIMIT", 1000)
    path = workdir / "d.csv"
    path.write_text("text,label\nfine,1\n" + "x" * 2000 + ",0\n")
    msg = one_line_error(capsys, own(tiny_model, f"csv:{path}"))
    assert f"{path}:3:" in msg and "field larger than field limit" in msg


# --- item 15: files without a header line ---------------------------------------------------

def test_headerless_file_is_detected_and_explained(workdir, tiny_model, capsys) -> None:
    path = write_rows(workdir / "d.tsv", sst2_rows("train", 20), header=None)
    msg = one_line_error(capsys, own(tiny_model, f"tsv:{path}"))
    assert "looks like data, not a header" in msg and "--no-header" in msg
    msg = one_line_error(capsys, own(tiny_model, f"tsv:{path}", "--text-column", "0",
                                     "--label-column", "1"))
    assert "need --no-header" in msg


@pytest.mark.parametrize("task,extra,expected", [
    ("tsv", ["--text-column", "sentence"], "columns are given by index"),
    ("tsv", ["--text-column", "0", "--label-column", "4"], "no column 4"),
    ("jsonl", ["--text-column", "0", "--label-column", "1"], "--no-header is for CSV and TSV"),
    ("sst2", [], "--no-header is for your own data"),
])
def test_no_header_mistakes(task, extra, expected, workdir, tiny_model, capsys) -> None:
    path = write_rows(workdir / "d.tsv", sst2_rows("train", 20), header=None)
    (workdir / "d.jsonl").write_text('{"0": "fine", "1": 1}\n')
    name = {"tsv": f"tsv:{path}", "jsonl": f"jsonl:{workdir / 'd.jsonl'}"}.get(task, task)
    assert expected in one_line_error(capsys, own(tiny_model, name, "--no-header", *extra))


def test_no_header_trains_on_columns_by_index(workdir, tiny_model) -> None:
    train = write_rows(workdir / "train.tsv", sst2_rows("train", 60), header=None)
    val = write_rows(workdir / "val.tsv", sst2_rows("validation", 20), header=None)
    argv = own(tiny_model, f"tsv:{train}", "--no-header", "--text-column", "0",
               "--label-column", "1", "--validation", str(val), "--space", bitfit(workdir))
    assert main(argv) == 0
    (t,) = trials(workdir)
    assert t.state.name == "COMPLETE"
    # every row is data: 60 trained (4 steps of 16, one epoch), 20 scored (k / 20)
    assert (t.user_attrs["samples"], t.user_attrs["steps"]) == (60, 4)
    assert t.values[0] * 20 == pytest.approx(round(t.values[0] * 20), abs=1e-9)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{workdir}/studies/s.db")
    assert study.user_attrs["data"]["no_header"] is True  # export and train read it the same way
    assert study.user_attrs["data"]["text_columns"] == ["0"]


# --- item 12: the disk ----------------------------------------------------------------------

def json_notes(out: str) -> list[str]:
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [e["text"] for e in events if e.get("event") == "note"]


def test_unwritable_cache_means_no_disk_cache(workdir, tiny_model, tiny_data, capsys) -> None:
    from autopeft import data as data_mod

    data_mod._MEMORY.clear()  # tokens kept from an earlier test would never reach the disk
    (workdir / "studies").mkdir()
    (workdir / "studies" / ".cache").write_text("a file where the cache folder should be")
    capsys.readouterr()
    assert main(sst2(tiny_model, tiny_data, workdir, "--n-trials", "1", "--json-log")) == 0
    notes = json_notes(capsys.readouterr().out)
    assert sum("going on without a disk cache" in n for n in notes) == 1, notes
    assert [t.state.name for t in trials(workdir)] == ["COMPLETE"]


def test_cache_write_refused_as_root_would_not_be(workdir, tiny_model, tiny_data, monkeypatch,
                                                  capsys) -> None:
    from autopeft import data as data_mod

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "studies/.cache")

    data_mod._MEMORY.clear()
    monkeypatch.setattr(np, "savez", refuse)  # chmod means nothing to root: refuse the write
    capsys.readouterr()
    assert main(sst2(tiny_model, tiny_data, workdir, "--n-trials", "1", "--json-log")) == 0
    notes = json_notes(capsys.readouterr().out)
    assert any("Permission denied" in n and "without a disk cache" in n for n in notes), notes
    assert not list((workdir / "studies" / ".cache").glob("*"))  # no temporary file left


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong-sizes"])
def test_damaged_cache_files_are_rebuilt(damage, workdir, tiny_model, tiny_data) -> None:
    from autopeft import data as data_mod

    argv = sst2(tiny_model, tiny_data, workdir, "--n-trials", "1", "--quiet")
    data_mod._MEMORY.clear()
    assert main(argv) == 0
    files = sorted((workdir / "studies" / ".cache").glob("tokens-*.npz"))
    assert len(files) == 2  # train and validation
    good = {f: f.read_bytes() for f in files}
    for f in files:
        if damage == "truncate":
            f.write_bytes(good[f][: len(good[f]) // 2])
        elif damage == "garbage":
            f.write_bytes(b"not a zip file at all")
        else:  # a valid .npz that does not fit the data
            np.savez(f, ids=np.arange(3), lens=np.array([3]), labels=np.array([1]))
    data_mod._MEMORY.clear()
    assert main(argv) == 0  # resumed, not stopped by the cache
    states = [t.state.name for t in trials(workdir)]  # the second: the same candidate again
    assert len(states) == 2 and states[0] == "COMPLETE" and not {"FAIL", "RUNNING"} & set(states)
    for f in files:  # rebuilt with the same content
        with np.load(f) as z, np.load(_bytes_file(workdir, good[f])) as ref:
            assert all(np.array_equal(z[k], ref[k]) for k in ref.files)


def _bytes_file(folder: Path, content: bytes) -> Path:
    path = folder / "ref.npz"
    path.write_bytes(content)
    return path


def test_read_only_study_database_on_resume(workdir, tiny_model, tiny_data, monkeypatch,
                                            capsys) -> None:
    argv = sst2(tiny_model, tiny_data, workdir, "--n-trials", "1", "--quiet")
    assert main(argv) == 0
    db = workdir / "studies" / "s.db"
    before = db.read_bytes()
    # SQLite itself refusing to write (works as root, where chmod does not):
    ro = ["--storage", f"sqlite:///file:{db}?mode=ro&uri=true"]
    msg = one_line_error(capsys, argv + ro)
    assert "cannot write the study database" in msg and "readonly" in msg
    # A read-only file or folder as a non-root user sees it (os.access), checked up front:
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK and
                        str(p).startswith(str(workdir / "studies")) else real_access(p, mode))
    msg = one_line_error(capsys, argv)
    assert "read-only" in msg and str(db) in msg
    assert db.read_bytes() == before and len(trials(workdir)) == 1


def test_disk_full_mid_trial_fails_it_and_stops_cleanly(workdir, tiny_model, tiny_data,
                                                        monkeypatch, capsys) -> None:
    real = optuna.trial.Trial.set_user_attr

    def full(self: optuna.trial.Trial, key: str, value: object) -> None:
        if key == "rung_scores":  # the first write once training has begun
            raise OSError(errno.ENOSPC, "No space left on device", "studies/s.db")
        real(self, key, value)

    monkeypatch.setattr(optuna.trial.Trial, "set_user_attr", full)
    msg = one_line_error(capsys, sst2(tiny_model, tiny_data, workdir, "--n-trials", "3",
                                      "--quiet", "--no-warm-start"))
    assert "No space left on device" in msg
    (t,) = trials(workdir)  # stopped at the first trial, which is FAIL, not RUNNING
    assert t.state.name == "FAIL" and "No space left" in t.user_attrs["fail_reason"]


def test_disk_full_between_trials_is_one_line(workdir, tiny_model, tiny_data, monkeypatch,
                                              capsys) -> None:
    import autopeft.search.loop as loop_mod

    def full(study: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop_mod, "record_hypervolume", full)
    msg = one_line_error(capsys, sst2(tiny_model, tiny_data, workdir, "--n-trials", "2",
                                      "--quiet", "--no-warm-start"))
    assert "No space left on device" in msg
    assert [t.state.name for t in trials(workdir)] == ["COMPLETE"]


# --- item 13: secrets -----------------------------------------------------------------------

@pytest.mark.parametrize("url,secret", [
    ("postgresql://:secret@127.0.0.1:9/db", "secret"),
    ("postgresql://user@127.0.0.1:9/db?password=secret", "secret"),
    ("postgresql://user:my secret@127.0.0.1:9/db", "my secret"),
    ("postgresql://user:a@b/c@127.0.0.1:9/db?sslmode=disable&PassWord=s3", "s3"),
])
def test_passwords_never_printed(url, secret, workdir, tiny_model, tiny_data, capsys) -> None:
    assert secret not in mask(url) and "***" in mask(url)
    assert secret not in mask(f"cannot open storage '{url}': refused")
    msg = one_line_error(capsys, sst2(tiny_model, tiny_data, workdir, "--n-trials", "1",
                                      "--quiet", "--storage", url))
    assert "cannot open storage" in msg and secret not in msg and "***" in msg


def test_mask_leaves_urls_without_secrets_alone() -> None:
    for url in ("sqlite:////tmp/a b/s.db", "sqlite:///studies/s.db", "journal:/x/s.log",
                "postgresql://host:5432/db"):
        assert mask(url) == url


# --- item 14: the smaller cases -------------------------------------------------------------

def test_an_interrupted_recipe_is_retried_on_resume(workdir, tiny_model, tiny_data, monkeypatch,
                                                    capsys) -> None:
    from autopeft.runner import Bench

    real_run = Bench.run

    def interrupted(self: Bench, *args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    argv = sst2(tiny_model, tiny_data, workdir, "--n-trials", "1", "--quiet")
    monkeypatch.setattr(Bench, "run", interrupted)
    assert main(argv) == 130
    (first,) = trials(workdir)
    assert first.state.name == "FAIL" and first.user_attrs["warm_start"] == "BitFit at lr 4e-03"
    monkeypatch.setattr(Bench, "run", real_run)
    assert main(argv) == 0
    second = trials(workdir)[1]
    assert second.state.name == "COMPLETE" and second.user_attrs.get("warm_start") == "BitFit at lr 4e-03"
    assert second.system_attrs["fixed_params"] == first.system_attrs["fixed_params"]


def test_show_explains_heartbeat_failures_and_lists_waiting(workdir, capsys) -> None:
    from autopeft.search.storage import fail_stale_trials, open_storage
    from faults import go_silent

    (workdir / "studies").mkdir()
    url = f"sqlite:///{workdir}/studies/s.db"
    study = optuna.create_study(study_name="s", storage=open_storage(url, True, heartbeat=1),
                                directions=["maximize", "minimize", "minimize"])
    study.enqueue_trial({}, user_attrs={"warm_start": "BitFit"})
    with warnings.catch_warnings():  # we beat by hand, as the search does
        warnings.simplefilter("ignore")
        trial = study.ask()
    trial.set_user_attr("label", "bitfit")
    study._storage.record_heartbeat(trial._trial_id)
    go_silent(url)  # three beats of one second missed long ago: no waiting
    fail_stale_trials(study)
    capsys.readouterr()
    assert main(["show", "s", "--all", "--json"]) == 0
    found = {r["number"]: r for r in json.loads(capsys.readouterr().out)}
    assert found[0]["state"] == "FAIL" and "stopped sending heartbeats" in found[0]["note"]
    assert "retried as trial 1" in found[0]["note"]
    assert found[1]["state"] == "WAITING" and found[1]["note"] == "queued: retry of trial 0"
    assert found[1]["label"] == "bitfit"
    assert main(["show", "s", "--json"]) == 0  # the front has neither
    assert json.loads(capsys.readouterr().out) == []


def test_show_all_lists_queued_recipes(workdir, capsys) -> None:
    from autopeft.search.warmstart import enqueue_recipes
    from autopeft.space import load_space

    (workdir / "studies").mkdir()
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{workdir}/studies/s.db",
                                directions=["maximize", "minimize", "minimize"])
    names = enqueue_recipes(study, load_space("default"))
    capsys.readouterr()
    assert main(["show", "s", "--all", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in found] == names
    assert {r["state"] for r in found} == {"WAITING"}
    assert {r["note"] for r in found} == {"queued: warm-start recipe"}


def test_train_ctrl_c_does_not_speak_of_resuming(monkeypatch, capsys) -> None:
    from autopeft import api

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "train", interrupted)
    capsys.readouterr()
    assert main(["train", "--config", "candidate.yaml"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" not in err and "trial" not in err


@pytest.mark.slow
def test_kill_9_leaves_no_traceback_from_the_trial_process(workdir, tiny_model,
                                                           tiny_data) -> None:
    argv = sst2(tiny_model, tiny_data, workdir, "--n-trials", "1", "--quiet", "--epochs", "5000",
                "--no-warm-start", "--isolation", "process")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "autopeft", *argv], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 90
    # the trial process starts with the first trial; then the trial runs in it
    while not (_children(proc.pid) and _running(workdir)):
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.2)
    children = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the search only: its trial process sees the pipe die
    proc.wait()
    # A trial process still starting (importing torch) notices only when it says it is
    # ready: on a loaded machine, with another pytest-xdist worker beside it, that took over
    # 30 s. The wait ends as soon as it is gone; one that never ends still fails.
    end = time.monotonic() + 90
    while any(_alive(p) for p in children) and time.monotonic() < end:
        time.sleep(0.2)
    assert not any(_alive(p) for p in children), "the trial process outlived the search"
    err = proc.stderr.read()  # the search's and its trial process's, on one pipe
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def _running(workdir: Path) -> bool:
    """Whether the search's study has a RUNNING trial (read only: never creates the file)."""
    import sqlite3

    db = workdir / "studies" / "s.db"
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return bool(conn.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'")
                        .fetchone()[0])
    except sqlite3.Error:  # not created yet, or locked by the search
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
