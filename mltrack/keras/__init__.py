"""mltrack for Keras: a callback that feeds an mltrack run from ``model.fit``.

Track your own compiled model and your own ``fit``:

    import mltrack
    from mltrack import keras as mk

    with mltrack.start_run("my-experiment") as run:
        model.fit(x, y, epochs=5, validation_data=(x_val, y_val),
                  callbacks=[mk.callback(run, samples_per_epoch=len(x))])
        mk.export(run, model, x_val[:32], precision="fp32")   # optional: a verified model

Per epoch (step = epoch) the run gets Keras' logs (loss, accuracy, val_*) and the ledger's
timings, CPU, memory, noise and MFU (``mltrack/measure/ledger.py``); at the start the dtype tags of
what really computes (``keras.compute_dtypes``, ``precision``); at the end the summary. A NaN
loss stops training and ends the run ``diverged``. ``fit``/``evaluate`` wrap the same for the
bundled experiments; ``precision_policy`` builds a model under a precision of the vocabulary.

Under ``MultiWorkerMirroredStrategy`` (a ``TF_CONFIG`` naming several workers) every worker
runs the same script: the chief's run gets the job's records, the others' write nothing
(``mltrack.keras.multi_worker``).
"""

from mltrack.keras.callback import (
    BinaryScores,
    Callback,
    StepCallback,
    callback,
    dtype_tags,
    evaluate,
    fit,
    precision_policy,
)
from mltrack.keras.multi_worker import export

__all__ = [
    "BinaryScores",
    "Callback",
    "StepCallback",
    "callback",
    "dtype_tags",
    "evaluate",
    "export",
    "fit",
    "precision_policy",
]
