"""Keras under ``MultiWorkerMirroredStrategy`` (a ``TF_CONFIG`` naming several workers).

Only the chief owns the job's run (``mltrack.tracking.distributed``); every worker runs the same
``model.fit`` and the same callback, whose run is a ``Follower`` there. Two things need help:

- **Keras 3's own fit does not train multi-worker** (Keras 3.5 to 3.15 with TensorFlow 2.16 to
  2.21: keras-team/keras#20585, tensorflow/tensorflow#72388, whose only advice is Keras 2).
  ``TensorFlowTrainer._maybe_symbolic_build`` reduces the first ``(x, y)`` batch across the
  workers to read its shapes, which the collective reduce cannot take ("Attempt to convert a
  value (PerReplica...) to a Tensor"); then ``reduce_per_replica`` reduces every scalar of the
  step's logs with ``axis=0`` ("Invalid reduction dimension 0 for input with 0 dimensions").
  ``repair_fit`` fixes both for a multi-worker strategy alone (both paths fail there on every
  call, so nothing that worked changes): the shapes are read from this worker's own part of
  the batch, and each scalar of the logs is the mean over all replicas (the job's loss and
  metrics, as every worker then shows). Remove it once tests/test_keras_multiworker.py passes
  without it.
- **Export on the chief alone**: ``model.predict`` of a model built under the strategy is a
  collective (the other workers would have to predict too, and may have exited), so the
  chief exports a single-process copy with the same weights (``local_copy``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mltrack.export.artifacts import export_keras
from mltrack.tracking import distributed
from mltrack.tracking.run import Run

_REPAIRED: list[bool] = []


def repair_fit() -> bool:
    """Let Keras 3's ``fit``/``evaluate`` run under a multi-worker strategy (see the module
    docstring); idempotent. False, changing nothing, on a Keras without the code it repairs."""
    if _REPAIRED:
        return True
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    needed = ("reduce_per_replica", "_collective_all_reduce_multi_worker", "TensorFlowTrainer")
    if not all(hasattr(trainer, name) for name in needed) or not hasattr(
        trainer.TensorFlowTrainer, "_maybe_symbolic_build"
    ):
        return False
    multi_worker = trainer._collective_all_reduce_multi_worker
    reduce_per_replica = trainer.reduce_per_replica
    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_logs(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction not in ("auto", "mean") or not multi_worker(strategy):
            return reduce_per_replica(values, strategy, reduction)

        def one(value: Any) -> Any:
            # A loss or metric (a scalar per replica): the mean over every replica.
            if strategy.experimental_local_results(value)[0].shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return reduce_per_replica(value, strategy, reduction)

        return tree.map_structure(one, values)

    def build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None and multi_worker(strategy):
            for _, _, batches in iterator:  # Keras' own loop: the first batch, for its shapes
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(batches)
                )
                break
            iterator = None
        return symbolic_build(self, iterator=iterator, data_batch=data_batch)

    trainer.reduce_per_replica = reduce_logs
    trainer.TensorFlowTrainer._maybe_symbolic_build = build
    _REPAIRED.append(True)
    return True


def local_copy(model: Any) -> Any:
    """A copy of ``model`` outside any strategy, with its weights: it predicts on its own.
    Call it outside ``strategy.scope()``."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def export(
    run: Run,
    model: Any,
    probe: np.ndarray,
    *,
    precision: str,
    register: str = "",
    rescale: float = 0.0,
) -> bool:
    """``mltrack.export.artifacts.export_keras`` (the same arguments and result); under a
    multi-worker ``TF_CONFIG`` the chief exports a ``local_copy`` and the others nothing, so
    call it on every worker or on the chief alone, outside ``strategy.scope()``."""
    if run.is_rank_zero and not run.stopping and distributed.world().launcher == "tf_config":
        model = local_copy(model)
    return export_keras(run, model, probe, precision=precision, register=register, rescale=rescale)
