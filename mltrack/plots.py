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
