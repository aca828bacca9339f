"""Task metrics from scikit-learn, shared by the Keras and PyTorch experiments.

For a rare positive class accuracy says little (always "not fraud" scores 99.9%), so binary
tasks also get precision, recall, F1, PR-AUC (average precision) and ROC-AUC.
"""

from __future__ import annotations

from typing import Any

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


def classification_scores(labels: Any, logits: Any, batch_size: int) -> dict[str, float]:
    """Seed 004's metrics from a whole evaluation's logits (N × classes) and labels.

    ``accuracy``; ``precision_macro``, ``recall_macro`` and ``f1_macro`` (the EfficientNet
    notebooks' ignite Precision/Recall/F1, averaged over classes); ``top5_accuracy`` (theirs
    too; with more than five classes); and ``f1_micro_batch_mean``, the ResNet50 files' F1:
    the micro-F1 of each evaluation batch of ``batch_size`` averaged over the batches, which
    equals their batch-averaged accuracy (a short last batch weighs as much as a full one).
    """
    from sklearn import metrics

    y = np.asarray(labels).reshape(-1)
    scores_ = np.asarray(logits, dtype=np.float32)
    predicted = scores_.argmax(1)
    out = multiclass_scores(y, predicted)
    for name, score in (("precision", metrics.precision_score), ("recall", metrics.recall_score)):
        out[f"{name}_macro"] = float(score(y, predicted, average="macro", zero_division=0))
    if scores_.shape[1] > 5:
        top5 = np.argpartition(-scores_, 5, axis=1)[:, :5]
        out["top5_accuracy"] = float((top5 == y[:, None]).any(1).mean())
    hits = predicted == y
    out["f1_micro_batch_mean"] = float(
        np.mean([hits[i : i + batch_size].mean() for i in range(0, len(y), batch_size)])
    )
    return out
