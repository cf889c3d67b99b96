"""Task metrics computed locally (scikit-learn / scipy), so the tool works offline.

``evaluate.load`` fetches metric scripts from the hub: not used. Each metric returns its
components and ``score``, the single number the study maximises: GLUE's own convention,
the mean of the two numbers where GLUE reports two (F1/accuracy, Pearson/Spearman).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _accuracy(preds: Sequence, labels: Sequence) -> float:
    return float(np.mean(np.asarray(preds) == np.asarray(labels))) if len(labels) else 0.0


def accuracy(preds: Sequence, labels: Sequence) -> dict[str, float]:
    acc = _accuracy(preds, labels)
    return {"accuracy": acc, "score": acc}


def matthews(preds: Sequence, labels: Sequence) -> dict[str, float]:
    from sklearn.metrics import matthews_corrcoef

    mcc = float(matthews_corrcoef(labels, preds))
    return {"matthews": mcc, "score": mcc}


def f1_accuracy(preds: Sequence, labels: Sequence) -> dict[str, float]:
    from sklearn.metrics import f1_score

    f1, acc = float(f1_score(labels, preds, zero_division=0.0)), _accuracy(preds, labels)
    return {"f1": f1, "accuracy": acc, "score": (f1 + acc) / 2}


def pearson_spearman(preds: Sequence, labels: Sequence) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    p, l = np.asarray(preds, dtype=float), np.asarray(labels, dtype=float)
    # constant predictions: correlation undefined. Not ``np.std == 0``: the std of 400
    # copies of 2.37 is 4e-16 in floats, and scipy then answered NaN
    if np.ptp(p) == 0 or np.ptp(l) == 0:
        return {"pearson": 0.0, "spearman": 0.0, "score": 0.0}
    pr, sr = float(pearsonr(p, l)[0]), float(spearmanr(p, l)[0])
    return {"pearson": pr, "spearman": sr, "score": (pr + sr) / 2}


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu's default 13a tokenisation), 0-100, one reference each."""
    import sacrebleu

    b = float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
    return {"bleu": b, "score": b}


METRICS: dict[str, Callable[[Sequence, Sequence], dict[str, float]]] = {
    "accuracy": accuracy, "matthews": matthews, "f1_accuracy": f1_accuracy,
    "pearson_spearman": pearson_spearman,
}


def constant_score(metric: str, labels: Sequence, regression: bool = False) -> float | None:
    """The best score one constant answer gets on ``labels`` (every class tried; the mean for
    ``regression``): what a model that learned nothing scores, e.g. the majority class's
    accuracy, MCC 0, a correlation of 0. Why: a study whose best trial scores no more has
    learned nothing, whatever its front ranks (MiniLM on CoLA: all 28 recorded runs at MCC
    0, ``bench/curves``). None: a metric not computed from labels here (BLEU, a loss), or
    no labels."""
    fn = METRICS.get(metric)
    if fn is None or isinstance(labels, list) and labels and np.ndim(labels[0]) > 0:
        return None  # per-token labels: a language model's task
    values = np.asarray(labels)
    if not len(values):
        return None
    answers = [float(values.mean())] if regression else list(np.unique(values))
    best = max(fn([a] * len(values), values)["score"] for a in answers)
    return best if np.isfinite(best) else None
