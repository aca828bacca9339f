"""The seed-000 fraud models (``experiments.fraud_bf16``): the notebook's Conv1D network over
the features as a sequence, and mltrack's MLP."""

from __future__ import annotations

from typing import Any

MODELS = ("conv1d", "mlp")


def fraud_model(model: str, features: int, output_dtype: str) -> Any:
    """A Keras model from (batch, ``features``) floats to one score per row.

    ``conv1d``, the seed's: Reshape to (features, 1), Conv1D 32 k2 relu + BatchNorm + Dropout
    0.2, Conv1D 64 k2 relu + BatchNorm + Dropout 0.2, Flatten, Dense 64 relu, Dropout 0.5,
    Dense 1 with **relu** (as the notebook had; binary cross-entropy clips it to [ε, 1-ε]).
    ``mlp``: Dense 64 relu, Dropout 0.2, Dense 32 relu, Dense 1 sigmoid. The output layer
    computes in ``output_dtype`` (float32 under mixed policies); the rest takes the policy's.
    """
    import keras
    from keras import layers

    if model == "mlp":
        body = [
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(32, activation="relu"),
            layers.Dense(1, activation="sigmoid", dtype=output_dtype),
        ]
    else:
        body = [layers.Reshape((features, 1))]  # the notebook's X.reshape(n, 7, 1)
        for filters in (32, 64):
            body += [
                layers.Conv1D(filters, 2, activation="relu"),
                layers.BatchNormalization(),
                layers.Dropout(0.2),
            ]
        body += [
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(1, activation="relu", dtype=output_dtype),
        ]
    return keras.Sequential([keras.Input((features,)), *body])
