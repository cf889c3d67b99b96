"""bench/gpu_check.py, so the GPU check cannot rot between GPU runs: its plan fits one device
command, its thresholds FAIL when their conditions break (stand-in numbers), its install
prepends to the path, and its ``loop`` and ``sharing`` sections run on the CPU (the others'
code is tested where it lives: tests/test_gpu.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402
from gpu_check import Check  # noqa: E402


def test_the_plan_fits_one_device_command(capsys: pytest.CaptureFixture) -> None:
    assert gpu_check.main(["--plan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [*gpu_check.SECTIONS, "total"]
    assert lines[-1].split()[2] == str(sum(gpu_check.SECTIONS.values()))
    assert sum(gpu_check.SECTIONS.values()) <= 480  # + install and starts < 600 s


def test_every_threshold_fails_when_its_condition_breaks() -> None:
    g = gpu_check
    assert g.precision_check(0.86, 0.855, True).ok
    assert g.precision_check(0.86, 0.84, True).ok is False  # 2 points apart
    assert g.precision_check(0.51, 0.51, True).ok is False  # equal, but at chance: no signal
    assert g.overhead_check(11.4, 10.0, True).ok and g.overhead_check(11.6, 10.0, True).ok is False
    assert g.trainer_check(10.0, 14.0, True).ok and g.trainer_check(15.0, 14.0, True).ok is False
    assert g.peak_check("lora", 100, 125, True).ok
    assert g.peak_check("lora", 100, 140, True).ok is False  # above 1.3x the prediction
    assert g.peak_check("lora", 100, 90, True).ok is False  # below a lower bound
    rows = [{"trials_per_gpu": k, "trials": 8, "complete": 8, "out_of_memory": 0, "failed": 0,
             "peaks": [1000] * 8, "trials_per_minute": tpm} for k, tpm in ((1, 10.0), (4, 16.0))]
    assert [c.ok for c in g.sharing_checks(rows, True)] == [True, True, True]
    slow = [rows[0], {**rows[1], "trials_per_minute": 14.0}]  # 1.4x < 1.5x
    assert [c.ok for c in g.sharing_checks(slow, True)] == [True, True, False]
    grown = [rows[0], {**rows[1], "peaks": [1000] * 7 + [1150]}]  # one peak 15% higher
    assert [c.ok for c in g.sharing_checks(grown, True)] == [True, False, True]
    oomed = [rows[0], {**rows[1], "complete": 7, "out_of_memory": 1}]
    assert g.sharing_checks(oomed, True)[0].ok is False
    oom = {"error": "CUDA out of memory", "failed_as_oom": True, "next_trial_steps": 40}
    assert g.oom_check(oom, {"trials": 3, "complete": 3}).ok
    assert g.oom_check(oom, {"trials": 3, "complete": 2}).ok is False  # a neighbour failed
    assert g.oom_check({**oom, "failed_as_oom": False}, {"trials": 3, "complete": 3}).ok is False
    assert g.cuda_error_check({"failing_trial": "RuntimeError: CUDA error: device-side assert "
                               "triggered", "new_child": True, "next_trial_steps": 40}, 40).ok
    assert g.cuda_error_check({"failing_trial": "the trial process died (exit code 1)",
                               "new_child": True, "next_trial_steps": 40}, 40).ok is False
    assert g.qlora_check(72, 72, True, "torch.bfloat16", 50, 100).ok
    assert g.qlora_check(72, 72, True, "torch.float32", 50, 100).ok is False  # fp32 compute
    assert g.qlora_check(72, 72, False, "torch.bfloat16", 50, 100).ok is False  # off CUDA
    assert g.qlora_check(70, 72, True, "torch.bfloat16", 50, 100).ok is False  # 2 left fp32
    assert g.qlora_check(72, 72, True, "torch.bfloat16", 65, 100).ok is False  # 0.65x
    assert g.master_weights_check({"a": "torch.float32"}, "bf16").ok
    assert g.master_weights_check({"a": "torch.float32", "b": "torch.bfloat16"}, "bf16").ok is False
    assert g.context_check(500 * 2**20, 768 * 2**20).ok
    assert g.context_check(900 * 2**20, 768 * 2**20).ok is False
    assert g.bnb_check(None).ok and g.bnb_check("RuntimeError: no kernel").ok is False


def test_speed_memory_and_precision_are_reported_not_judged_on_a_cpu() -> None:
    g = gpu_check
    assert g.overhead_check(30.0, 10.0, False).ok is None
    assert g.precision_check(0.5, 0.7, False).ok is None
    assert g.peak_check("full", 100, 500, False).ok is None
    assert g.cuda_error_check({"failing_trial": "died"}, 3).ok is False  # judged everywhere


def test_a_section_with_a_failing_check_fails_the_command(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path, tiny_data: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    bodies = {"loop": {"checks": [Check("a", True, "1 ms"), Check("b", False, "2 ms")]},
              "qlora": {"skip": "needs CUDA"}}
    monkeypatch.setattr(gpu_check, "run_section",
                        lambda name, ctx, cap: {**bodies[name], "seconds": 1.0,
                                                "checks": [vars(c) for c in bodies[name].get("checks", [])]})
    out = tmp_path / "r.json"
    code = gpu_check.main(["--device", "cpu", "--quick", "--only", "loop", "qlora",
                           "--data-dir", str(tiny_data), "--work", str(tmp_path / "w"),
                           "--out", str(out), "--bundle", str(tmp_path / "none")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    assert lines[1] == "[1/2] loop         FAIL    1.0 s  [ok] a: 1 ms; [FAIL] b: 2 ms"
    assert lines[2] == "[2/2] qlora        SKIP    1.0 s  needs CUDA"
    assert lines[3].startswith("gpu_check: FAIL: loop;")
    assert list(json.loads(out.read_text())["sections"]) == ["loop", "qlora"]


def test_settings_take_a_device_of_their_own() -> None:
    """The memory section's CPU estimate asks for device="cpu" (once a TypeError)."""
    ctx = gpu_check.Ctx("m", "d", "w", "auto", False, vars(gpu_check.GPU_SIZES))
    assert ctx.settings(device="cpu").device == "cpu" and ctx.settings().device == "auto"
    assert ctx.data_settings(eval_samples=32).eval_samples == 32


@pytest.mark.slow  # five trials of a tiny model: about 20 s
def test_an_oom_worker_fails_as_oom_and_trains_on_beside_its_neighbour(
        tiny_model: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oom section's two workers, in this process, with the CPU's stand-in fault."""
    monkeypatch.setenv("AUTOPEFT_PLUGINS", "gpu_check_fault")
    ctx = gpu_check.Ctx(str(tiny_model), str(tiny_data), str(tmp_path), "cpu", True,
                        vars(gpu_check.QUICK_SIZES))
    oom, neighbour = gpu_check.worker("oom", ctx), gpu_check.worker("neighbour", ctx)
    assert oom["failed_as_oom"] is True and "out of memory" in oom["error"]
    assert oom["next_trial_steps"] == gpu_check.QUICK_SIZES.steps
    assert neighbour == {"trials": 3, "complete": 3}
    assert gpu_check.oom_check(oom, neighbour).ok


def fake_wheel(folder: Path, name: str) -> Path:
    """A pure-Python wheel of one module ``name`` that says where it was imported from."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.py", "WHERE = __file__\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                    "Tag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", f"{name}.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n"
                                     f"{info}/RECORD,,\n")
    return path


def test_the_bundle_installs_offline_and_is_prepended_to_the_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_wheel(tmp_path / "bundle" / "wheels", "gpucheckdummy")
    monkeypatch.setenv("PYTHONPATH", "/carried/site")
    monkeypatch.setattr(sys, "path", list(sys.path))
    target = tmp_path / "bundle" / "site"
    assert gpu_check.install(tmp_path / "bundle", target) == ["gpucheckdummy-1.0-py3-none-any.whl"]
    assert os.environ["PYTHONPATH"] == os.pathsep.join([str(target), "/carried/site"])
    child = subprocess.run([sys.executable, "-c", "import gpucheckdummy; print(gpucheckdummy.WHERE)"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip().startswith(str(target))  # a child process sees it too
    assert gpu_check.install(tmp_path / "bundle", target) == []  # once
    assert os.environ["PYTHONPATH"] == os.pathsep.join([str(target), "/carried/site"])


@pytest.mark.slow  # two sections, each in its own process, three searches: about 2 minutes
def test_the_loop_and_sharing_sections_run_on_the_cpu(tiny_data: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report.json"
    bench_md = tmp_path / "BENCHMARKS.md"
    assert gpu_check.main(["--device", "cpu", "--quick", "--only", "loop", "sharing",
                           "--data-dir", str(tiny_data), "--work", str(tmp_path / "work"),
                           "--out", str(out), "--benchmarks", str(bench_md)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:3] for line in printed[1:3]] == [["[1/2]", "loop", "PASS"],
                                                         ["[2/2]", "sharing", "PASS"]]
    sections = json.loads(out.read_text())["sections"]
    assert list(sections) == ["loop", "sharing"]
    loop = sections["loop"]
    assert loop["steps"] == gpu_check.QUICK_SIZES.steps
    assert [(c["name"], c["ok"]) for c in loop["checks"]] == [("trial vs autocast loop", None),
                                                             ("trial vs HF Trainer", None)]
    rows = sections["sharing"]["rows"]
    assert [(r["trials_per_gpu"], r["trials"], r["complete"], r["out_of_memory"], r["failed"])
            for r in rows] == [(1, 2, 2, 0, 0), (2, 2, 2, 0, 0)]
    assert len({p for r in rows for p in r["peaks"]}) == 1  # one candidate, one peak
    assert [c["ok"] for c in sections["sharing"]["checks"]] == [True, None, None]
    assert "| sharing | PASS |" in bench_md.read_text()


@pytest.mark.slow  # pip download reaches the registry, pip wheel builds autopeft: ~20 s
@pytest.mark.xdist_group("wheel")  # as test_packaging's, in the checkout's build/
def test_the_bundle_holds_what_the_gpu_machine_lacks_in_under_60_mib(tmp_path: Path) -> None:
    folder = tmp_path / "gpu"
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_bundle.sh"), str(folder)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 60 * 2**20 and f"({size} bytes; limit 60 MiB)" in done.stdout
    wheels = sorted(w.name.split("-")[0].lower() for w in (folder / "wheels").glob("*.whl"))
    assert wheels == ["alembic", "autopeft", "bitsandbytes", "colorlog", "mako", "optuna",
                      "sqlalchemy"]
    (bnb,) = (folder / "wheels").glob("bitsandbytes-*.whl")
    with zipfile.ZipFile(bnb) as z:
        libs = sorted(Path(n).name for n in z.namelist() if Path(n).name.startswith("libbitsandbytes"))
        record = z.read(next(n for n in z.namelist() if n.endswith("RECORD"))).decode()
    assert libs == ["libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"]
    assert "cuda128" not in record  # what pip installs is what the wheel holds
    rows = (folder / "data" / "glue" / "sst2" / "train.tsv").read_text().splitlines()
    assert len(rows) == 4001 and rows[0] == "sentence\tlabel"
    from autopeft.models import load_base
    from autopeft.tasks import get_task

    config = json.loads((folder / "minilm" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    base = load_base(str(folder / "minilm"), get_task("sst2"))
    assert {str(p.dtype) for p in base.model.parameters()} == {"torch.float32"}
