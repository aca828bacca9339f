"""Task metrics from scikit-learn, shared by the Keras and PyTorch experiments.

For a rare positive class accuracy says little (always "not fraud" scores 99.9%), so binary
tasks also get precision, recall, F1, PR-AUC (average precision) and ROC-AUC.
"""

from __future__ import annotations

import numpy as np


def binary_scores(
    y_true: np.ndarray, probability: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    from sklearn import metrics

    y = np.asarray(y_true).reshape(-1).astype(int)
    p = np.asarray(probability, dtype=np.float64).reshape(-1)
    finite = np.isfinite(p).all()
    predicted = (np.nan_to_num(p, nan=0.0) >= threshold).astype(int)
    both_classes = len(np.unique(y)) == 2
    scores = {
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "precision": float(metrics.precision_score(y, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(y, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(y, predicted, zero_division=0)),
        "pr_auc": float("nan"),
        "roc_auc": float("nan"),
    }
    if finite and both_classes:
        scores["pr_auc"] = float(metrics.average_precision_score(y, p))
        scores["roc_auc"] = float(metrics.roc_auc_score(y, p))
    return scores


def multiclass_scores(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy and macro F1 (the seed-004 table's two columns)."""
    from sklearn import metrics

    return {
        "accuracy": float(metrics.accuracy_score(y_true, predicted)),
        "f1_macro": float(metrics.f1_score(y_true, predicted, average="macro", zero_division=0)),
    }
