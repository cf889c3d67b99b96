"""The early check on the training loss: what is not learning stops early as PRUNED with its
reason; a slowly learning good recipe goes on (losses measured on MiniLM/SST-2)."""
from __future__ import annotations

import math
from pathlib import Path

from autopeft import api
from autopeft.search.losscheck import LOSS_PATIENCE, LossCheck, chance_loss

# Training losses of the first 60 steps of a 270-step schedule (warm-up 16 steps), MiniLM,
# SST-2, batch 32, max length 64, seed 0 (the same batches for all three): the LoRA recipe
# at 5e-4 (slow: it still scored chance, 0.522, at step 60, and 0.795 at step 270), prompt
# tuning at 1e-3 and BitFit at 1e-4 (both 0.509 at step 60: the majority class).
LORA_5E4 = [0.692, 0.697, 0.69, 0.691, 0.694, 0.691, 0.691, 0.696, 0.693, 0.692, 0.691, 0.688,
            0.69, 0.683, 0.691, 0.687, 0.687, 0.694, 0.688, 0.674, 0.688, 0.679, 0.706, 0.693,
            0.659, 0.697, 0.667, 0.699, 0.664, 0.693, 0.693, 0.668, 0.663, 0.636, 0.633, 0.738,
            0.671, 0.665, 0.687, 0.687, 0.707, 0.713, 0.717, 0.711, 0.743, 0.662, 0.686, 0.676,
            0.624, 0.654, 0.633, 0.662, 0.635, 0.689, 0.651, 0.675, 0.717, 0.627, 0.629, 0.679]
PROMPT_1E3 = [0.694, 0.695, 0.697, 0.695, 0.692, 0.696, 0.69, 0.692, 0.696, 0.698, 0.686, 0.693,
              0.692, 0.686, 0.696, 0.687, 0.688, 0.697, 0.684, 0.674, 0.687, 0.686, 0.691, 0.692,
              0.669, 0.691, 0.663, 0.703, 0.675, 0.692, 0.708, 0.688, 0.662, 0.66, 0.655, 0.737,
              0.701, 0.689, 0.688, 0.701, 0.72, 0.727, 0.714, 0.714, 0.741, 0.684, 0.694, 0.689,
              0.656, 0.677, 0.663, 0.687, 0.665, 0.703, 0.675, 0.695, 0.724, 0.677, 0.66, 0.701]
BITFIT_1E4 = [0.692, 0.697, 0.69, 0.691, 0.695, 0.691, 0.692, 0.696, 0.693, 0.692, 0.694, 0.689,
              0.691, 0.691, 0.689, 0.691, 0.694, 0.691, 0.693, 0.688, 0.692, 0.686, 0.698, 0.691,
              0.682, 0.693, 0.685, 0.695, 0.682, 0.693, 0.692, 0.685, 0.685, 0.676, 0.674, 0.706,
              0.685, 0.683, 0.69, 0.69, 0.697, 0.697, 0.703, 0.698, 0.71, 0.685, 0.692, 0.687,
              0.673, 0.684, 0.671, 0.686, 0.676, 0.695, 0.689, 0.692, 0.709, 0.679, 0.671, 0.698]

# The same two on another subset (8,640 rows, seed 0), 120 steps: here prompt tuning's loss
# dipped below the threshold at the first check (step 56) with every candidate's, and was
# back at chance by the second (step 112); it scored 0.509 at step 120, the LoRA recipe 0.783.
LORA_5E4_B = [0.697, 0.694, 0.688, 0.692, 0.694, 0.694, 0.693, 0.686, 0.696, 0.69, 0.692, 0.69,
              0.687, 0.697, 0.679, 0.692, 0.687, 0.699, 0.665, 0.674, 0.679, 0.672, 0.701,
              0.691, 0.7, 0.68, 0.66, 0.69, 0.686, 0.658, 0.706, 0.703, 0.714, 0.67, 0.668,
              0.673, 0.653, 0.695, 0.661, 0.715, 0.655, 0.68, 0.706, 0.675, 0.646, 0.631,
              0.652, 0.62, 0.668, 0.674, 0.624, 0.746, 0.617, 0.601, 0.601, 0.679, 0.647,
              0.602, 0.698, 0.578, 0.657, 0.646, 0.666, 0.46, 0.607, 0.683, 0.518, 0.593,
              0.543, 0.606, 0.632, 0.52, 0.475, 0.529, 0.556, 0.572, 0.409, 0.481, 0.513,
              0.523, 0.49, 0.641, 0.423, 0.472, 0.362, 0.352, 0.426, 0.499, 0.375, 0.5, 0.507,
              0.387, 0.376, 0.438, 0.397, 0.321, 0.631, 0.395, 0.597, 0.485, 0.618, 0.479,
              0.346, 0.383, 0.42, 0.367, 0.346, 0.556, 0.577, 0.648, 0.64, 0.436, 0.464, 0.562,
              0.427, 0.516, 0.334, 0.398, 0.543, 0.437]
PROMPT_1E3_B = [0.695, 0.695, 0.693, 0.694, 0.695, 0.694, 0.691, 0.692, 0.693, 0.69, 0.692,
                0.688, 0.69, 0.695, 0.687, 0.696, 0.69, 0.696, 0.674, 0.68, 0.691, 0.676,
                0.703, 0.692, 0.697, 0.686, 0.675, 0.691, 0.692, 0.677, 0.708, 0.708, 0.707,
                0.677, 0.667, 0.679, 0.676, 0.701, 0.67, 0.715, 0.676, 0.682, 0.703, 0.688,
                0.669, 0.661, 0.677, 0.658, 0.69, 0.682, 0.655, 0.732, 0.653, 0.662, 0.676,
                0.702, 0.7, 0.652, 0.721, 0.672, 0.712, 0.715, 0.705, 0.591, 0.688, 0.719,
                0.637, 0.674, 0.654, 0.709, 0.722, 0.661, 0.66, 0.673, 0.69, 0.729, 0.712,
                0.691, 0.686, 0.728, 0.707, 0.722, 0.707, 0.694, 0.664, 0.658, 0.681, 0.7,
                0.666, 0.682, 0.72, 0.684, 0.704, 0.69, 0.711, 0.663, 0.693, 0.697, 0.714,
                0.712, 0.682, 0.722, 0.698, 0.714, 0.685, 0.7, 0.685, 0.666, 0.714, 0.696,
                0.68, 0.667, 0.697, 0.706, 0.697, 0.707, 0.695, 0.688, 0.699, 0.667]


def replay(losses: list[float], warmup: int = 16) -> tuple[LossCheck, tuple[int, str] | None]:
    check = LossCheck(warmup, chance_loss(2))
    for step, loss in enumerate(losses, 1):
        reason = check.add(step, loss)
        if reason:
            return check, (step, reason)
    return check, None


def test_a_slow_good_recipe_passes_and_hopeless_learning_rates_stop() -> None:
    lora, stopped = replay(LORA_5E4)
    assert stopped is None and lora.passed_at == 16 + LOSS_PATIENCE
    for losses in (PROMPT_1E3, BITFIT_1E4):
        _, stopped = replay(losses)
        assert stopped is not None
        step, reason = stopped
        assert step == 16 + LOSS_PATIENCE < 60  # before the 90-step rung
        assert reason.startswith("not learning: loss 0.69") and "chance 0.693" in reason
        assert f"steps {step - 19}-{step}" in reason
    lora, stopped = replay(LORA_5E4_B)
    assert stopped is None and lora.passed_at == 2 * (16 + LOSS_PATIENCE)
    prompt, stopped = replay(PROMPT_1E3_B)
    assert prompt.passed_at == 16 + LOSS_PATIENCE  # a chance dip at the first check ...
    assert stopped and stopped[0] == 2 * (16 + LOSS_PATIENCE)  # ... caught at the second


def test_the_loss_has_moved_only_after_the_warm_up_and_a_window() -> None:
    check = LossCheck(warmup_steps=10, chance=chance_loss(2))
    for step in range(1, 30):
        check.add(step, 0.3 if step > 10 else 0.69)  # learned at once after the warm-up
        assert check.moved(step) == (step >= 30)  # not before warm-up + window (30)
    check.add(30, 0.3)
    assert check.moved(30)
    assert chance_loss(1) is None and chance_loss(0) is None  # regression, generation
    assert math.isclose(chance_loss(3), math.log(3))
    none = LossCheck(warmup_steps=0)  # no chance level: the start is the reference
    reasons = [none.add(s, 5.0) for s in range(1, 41)]
    assert reasons[-1] and "chance" not in reasons[-1] and none.add(0, float("nan")) is None


def test_the_reference_is_the_lower_of_the_start_and_chance() -> None:
    """A new head can start far above chance (0.9 on two labels, chance 0.693). Falling to
    below chance is learning; falling only to chance is not, however far it fell: the
    reference is min(start, chance), not the start (nor the higher of the two). A loss that
    starts below chance must improve on its own start."""
    def trace(start: float, end: float) -> list[float]:  # flat start, steps 1-10; then `end`
        return [start] * 10 + [end] * (16 + LOSS_PATIENCE - 10)

    below, stopped = replay(trace(0.9, 0.6))
    assert stopped is None and below.passed_at == 16 + LOSS_PATIENCE
    _, stopped = replay(trace(0.9, 0.69))  # 23% down, but at chance: still guessing
    assert stopped and "loss 0.900 (steps 1-10) -> 0.690" in stopped[1]
    assert "learning needs below 0.686" in stopped[1]  # chance x 0.99
    _, stopped = replay(trace(0.5, 0.499))  # below chance from the start, and stuck there
    assert stopped and "learning needs below 0.495" in stopped[1]  # its start x 0.99


STUCK = """name: stuck
candidates:
  bitfit: {}
learning_rate: {low: 1.0e-9, high: 2.0e-9, log: true}
"""


def test_a_candidate_that_is_not_learning_is_pruned_with_its_reason(
        workdir: Path, tiny_model: Path, tiny_data: Path) -> None:
    """A real search: 7 epochs of 13 steps, warm-up 5 steps (rungs at 31 and 91: the first
    after the warm-up and a loss window); lr 1e-9 cannot move the loss."""
    (workdir / "stuck.yaml").write_text(STUCK)
    opts = dict(model=str(tiny_model), data_dir=str(tiny_data), batch_size=16, max_length=48,
                epochs=7, n_trials=1, space="stuck.yaml", warm_start=False)
    study = api.search("sst2", study="stuck", **opts)  # the plan's rungs (no --rungs)
    (trial,) = study.get_trials()
    a = trial.user_attrs
    first = study.user_attrs["plan"]["rungs"][0]
    assert first < 5 + LOSS_PATIENCE
    # a rung the plan chose before the loss has moved decides nothing (every score is chance)
    assert a["rung_decisions"][str(first)]["reason"].startswith("deferred: the training loss")
    assert trial.state.name == "PRUNED" and a["not_learning"] is True
    assert a["prune_reason"].startswith("not learning: loss ")
    assert a["pruned_at_step"] == 5 + LOSS_PATIENCE < 91 and a["steps"] == a["pruned_at_step"]
    # the user's flag: trained to the end
    off = api.search("sst2", study="stuck-off", loss_check=False, **opts)
    (trial,) = off.get_trials()
    assert trial.state.name == "COMPLETE" and trial.user_attrs["steps"] == 91
    assert off.user_attrs["search"]["loss_check"] is False  # workers of the study obey it too


def test_on_a_long_schedule_the_windows_keep_their_share_of_it() -> None:
    from autopeft.search.losscheck import LOSS_WINDOW, windows
    from autopeft.search.plan import first_rung

    assert windows(125) == windows(270) == windows(None) == (LOSS_WINDOW, LOSS_PATIENCE)
    assert windows(2105) == (156, 312)  # 20/270 and 40/270 of roberta-base's SST-2 epoch
    slow = LossCheck(warmup_steps=126, chance=chance_loss(2), schedule_steps=2105)
    # a slow learner: at chance until step 250, then falling; judged at 126 + 312 = 438
    losses = [0.693] * 250 + [0.693 - 0.001 * k for k in range(1, 300)]
    stopped = [step for step, loss in enumerate(losses, 1) if slow.add(step, loss)]
    assert slow.first_check == 438 and not stopped and slow.passed_at == 438
    assert first_rung(2105, 0.06) == 126 + LOSS_WINDOW  # a rung waits for the loss, not the check
