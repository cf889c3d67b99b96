"""Task metrics computed locally (scikit-learn / scipy), so the tool works offline.

``evaluate.load`` fetches metric scripts from the hub: not used.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def accuracy(preds: Sequence, labels: Sequence) -> float:
    return float(np.mean(np.asarray(preds) == np.asarray(labels))) if len(labels) else 0.0


def f1(preds: Sequence, labels: Sequence) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds))


def matthews(preds: Sequence, labels: Sequence) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


def pearson(preds: Sequence, labels: Sequence) -> float:
    from scipy.stats import pearsonr

    return float(pearsonr(preds, labels)[0])


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson,
}
