"""PNG figures logged as run artifacts. matplotlib is imported here only, with no display."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def learning_curves(history: Mapping[str, Sequence[float]], title: str = "") -> Any:
    """Accuracy and loss per epoch, training vs validation (the seed-001 plots)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            if key in history:
                values = list(history[key])
                ax.plot(range(1, len(values) + 1), values, style, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(("Training and validation " + metric).capitalize())
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def group_curves(curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]], key: str) -> Any:
    """One panel per metric, one line per group: the mean over its runs at each epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    shown = [m for m, groups in curves.items() if groups]
    fig, axes = plt.subplots(
        1, max(len(shown), 1), figsize=(4.5 * max(len(shown), 1), 3.8), squeeze=False
    )
    for ax, metric in zip(axes[0], shown, strict=False):
        for group, runs in curves[metric].items():
            length = min(len(r) for r in runs)
            mean = np.mean([r[:length] for r in runs], axis=0)
            ax.plot(range(1, length + 1), mean, "-o", label=f"{group} (n={len(runs)})")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(title=key, fontsize="small")
    fig.tight_layout()
    return fig


def time_vs_accuracy(points: Mapping[str, Sequence[tuple[float, float]]], key: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for group, values in points.items():
        if values:
            ax.scatter([v[0] for v in values], [v[1] for v in values], label=group)
    ax.set_xlabel("total wall time (s)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(title=key, fontsize="small")
    fig.tight_layout()
    return fig
