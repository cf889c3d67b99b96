"""The study's front and its hypervolume, recorded over time.

Hypervolume is measured on normalised objectives, all minimised and in [0, 1]:

* score:  ``1 - score / score_max`` (score_max 1 for GLUE metrics, 100 for BLEU), clipped
  to [0, 1]; for a negative loss (instruction tuning) ``1 - exp(score)``;
* trainable parameters: ``log10(params) / log10(base_params)``: 1 for full fine-tuning, and
  a log scale so that 10x fewer parameters counts the same everywhere;
* memory: ``m / (m + M0)`` with ``M0 = 16 bytes x base_params`` (what full fine-tuning's
  fp32 weights, gradients and AdamW state take): monotone, never clipped.

The reference point is ``(1.1, 1.1, 1.1)``: 10% beyond the worst normalised value, so a
boundary point such as full fine-tuning (params = 1) still adds volume. The points are the
reported front's pool (``autopeft/results.py``): feasible refit records and the complete
search trials they do not supersede, else the provisional ones. The history is the study user attribute
``hypervolume_history``: ``[[seconds since the study started, hypervolume], ...]``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from autopeft.pareto import hypervolume
from autopeft.results import front_pool, records

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from optuna import Study  # only for annotations: optuna stays a lazy import

REFERENCE = (1.1, 1.1, 1.1)
MEMORY_BYTES_PER_PARAM = 16  # fp32 weights + gradients + two AdamW moments


@dataclass(frozen=True)
class Scales:
    base_params: int
    score_max: float = 1.0  # 0: the score is a negative loss

    @classmethod
    def for_metric(cls, metric: str, base_params: int) -> Scales:
        # a negated metric (lower is better: -loss, -wer) is normalised through exp(score)
        return cls(base_params, 0.0 if metric.startswith("neg_") else {"bleu": 100.0}.get(metric, 1.0))

    def normalise(self, values: Any) -> tuple[float, float, float]:
        score, params, memory = (float(v) for v in values)
        good = math.exp(min(0.0, score)) if self.score_max == 0 else score / self.score_max
        s = 1.0 - min(1.0, max(0.0, good))
        p = math.log10(max(1.0, params)) / math.log10(max(10.0, self.base_params))
        m0 = MEMORY_BYTES_PER_PARAM * self.base_params
        return s, min(1.0, p), memory / (memory + m0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reference": list(REFERENCE),
                "memory_scale_bytes": MEMORY_BYTES_PER_PARAM * self.base_params}


def front_hypervolume(trials: list[FrozenTrial], scales: Scales) -> float:
    """Hypervolume of the reported front's pool (``autopeft/results.py``: refit records and
    the search trials they do not supersede, else provisional ones)."""
    pool = front_pool(records(trials))
    return hypervolume([scales.normalise(r.values) for r in pool], REFERENCE) if pool else 0.0


def front_trials(study: Study) -> list[Any]:
    """The study's reported front (records), ties within the score noise resolved."""
    from autopeft.results import front, score_noise

    recs = records(study.get_trials(deepcopy=False))
    return front(recs, score_noise(study.user_attrs, recs))


def store_front(study: Study) -> None:
    """The reported front with the study (user attribute ``front``: one ``{"number",
    "ties"}`` per entry, best score first), so Optuna's own readers (optuna-dashboard, a
    notebook) see autopeft's entries beside Optuna's strict ``best_trials``."""
    study.set_user_attr("front", [{"number": r.number, "ties": list(r.repeats)}
                                  for r in front_trials(study)])


def scales_of(study: Study) -> Scales | None:
    raw = study.user_attrs.get("hv_scales")
    return Scales(int(raw["base_params"]), float(raw.get("score_max", 1.0))) if raw else None


def record_hypervolume(study: Study) -> float | None:
    """Append (seconds since the study started, hypervolume) to the study's history.

    Several workers may append at once; a lost entry only thins the curve. The tie-aware
    front is stored beside it (``store_front``)."""
    store_front(study)
    scales = scales_of(study)
    if scales is None:
        return None
    hv = front_hypervolume(study.get_trials(deepcopy=False), scales)
    started = float(study.user_attrs.get("started_at", time.time()))
    history = list(study.user_attrs.get("hypervolume_history", []))
    history.append([round(time.time() - started, 3), round(hv, 6)])
    study.set_user_attr("hypervolume_history", history)
    study.set_user_attr("hypervolume", round(hv, 6))
    return hv



def searched_candidates(trials: list[FrozenTrial]) -> set[str]:
    """The candidates the search trained, each once (not the refit's, duplicates or skips)."""
    return {repr(t.user_attrs["candidate"]) for t in trials
            if "candidate" in t.user_attrs and "confirm_of" not in t.user_attrs
            and t.user_attrs.get("duplicate_of") is None and not t.user_attrs.get("skipped")}


def promotion_fractions(trials: list[FrozenTrial], rungs: list[int],
                        eta: int) -> list[dict[str, Any]]:
    """For each rung of the plan: the share of the search's candidates that reached it,
    beside successive halving's planned ``eta^-k`` (the plan's costs assume it). A candidate
    counts once: a promoted continuation or a trial that continues a cut-short one stands
    for its first trial (``pruner.rung_table`` keys by candidate)."""
    from autopeft.search.pruner import rung_table

    searched = searched_candidates(trials)
    out = []
    for k, step in enumerate(rungs):
        reached = len(rung_table(trials, step))
        out.append({"step": step, "reached": reached, "of": len(searched),
                    "realised": round(reached / len(searched), 3) if searched else None,
                    "planned": round(float(eta) ** -k, 3)})
    return out
