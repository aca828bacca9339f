"""Keras under a ``TF_CONFIG`` naming two workers (``MultiWorkerMirroredStrategy``), launched
as two local processes on the CPU (issue 27, item 6): the chief owns the job's one run, the
other worker trains the same steps without one and writes nothing, not even a journal.

No ``tf`` marker: TensorFlow is loaded by the two workers, never by pytest's process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from pytest import approx

from tests.conftest import all_runs, env_for

# docs/own-training.md's keras_fit.py, the model built under the strategy; every worker runs it.
SCRIPT = """
import keras
import numpy as np
import tensorflow as tf

import mltrack
from mltrack import keras as mk

strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).random((320, 8), dtype=np.float32)
y = (x.sum(axis=1) > 4).astype("int64")
with strategy.scope():
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )

with mltrack.start_run("keras-multiworker", params={"batch_size": 64}) as run:
    # Every worker passes all 256 samples: each global batch of 64 is split across the workers.
    summary = mk.fit(
        run, model, x[:256], y[:256], batch_size=64, epochs=2, validation_data=(x[256:], y[256:])
    )
    mk.export(run, model, x[:8], precision="fp32")
print(f"final loss {summary['loss']!r} steps {int(model.optimizer.iterations.numpy())}")
"""

SAMPLES, EPOCHS = 256, 2


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch(tmp_path: Path, store: str) -> list[tuple[int, str, str]]:
    """Both workers of the job, each with its own TF_CONFIG, journal folder and output files;
    returns (exit code, stdout, stderr) per worker, task 0 (the chief) first."""
    (tmp_path / "keras_multiworker.py").write_text(SCRIPT)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    procs = []
    for index in (0, 1):
        env = env_for(tmp_path)
        env.update(
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            MLTRACK_SPOOL_DIR=str(tmp_path / f"spool{index}"),
            # The other worker must touch no store: one of its own would show it if it did.
            MLFLOW_TRACKING_URI=store if index == 0 else f"sqlite:///{tmp_path}/worker1/mlflow.db",
        )
        out, err = tmp_path / f"worker{index}.out", tmp_path / f"worker{index}.err"
        with out.open("w") as stdout, err.open("w") as stderr:  # the child keeps its own copies
            command = [sys.executable, "keras_multiworker.py"]
            procs.append(
                subprocess.Popen(command, cwd=tmp_path, env=env, stdout=stdout, stderr=stderr)
            )
    try:
        codes = [proc.wait(timeout=900) for proc in procs]  # gRPC start-up on a busy machine
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [
        (code, (tmp_path / f"worker{i}.out").read_text(), (tmp_path / f"worker{i}.err").read_text())
        for i, code in enumerate(codes)
    ]


def test_only_the_chief_of_two_keras_workers_opens_a_run(tmp_path, store, client):
    (chief_code, chief_out, chief_err), (code, out, err) = launch(tmp_path, store)
    assert chief_code == 0, chief_err[-4000:]
    assert code == 0, err[-4000:]

    [run] = all_runs(client)
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
    params, tags = run.data.params, run.data.tags
    assert params["world_size"] == "2" and params["distributed.launcher"] == "tf_config"
    assert params["nodes"] == "1" and params["processes_per_node"] == "2"
    assert params["batch_size"] == "64" and tags["distributed.world_size"] == "2"

    # One point per epoch; the job's throughput: its samples over the chief's training time.
    history = {
        key: sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        for key in ("loss", "samples_per_s", "train_wall_s", "val_loss")
    }
    for key, points in history.items():
        assert [m.step for m in points] == list(range(EPOCHS)), key
    for rate, train in zip(history["samples_per_s"], history["train_wall_s"], strict=True):
        assert rate.value == approx(SAMPLES / train.value, rel=1e-6)  # not x 2, not / 2

    # Both workers trained the same 2 x 4 global steps in lockstep, and the logged loss is the
    # job's: the mean over both workers, the same number each of them saw.
    final = [line for line in (chief_out + out).splitlines() if line.startswith("final loss")]
    assert final == [final[0]] * 2 and final[0].endswith(f"steps {EPOCHS * SAMPLES // 64}")
    assert float(final[0].split()[2]) == approx(history["loss"][-1].value, rel=1e-6)

    # The export: a single-process copy on the chief, reloaded and verified.
    assert tags["reload_ok"] == "true", tags.get("error")
    [model] = client.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run.info.run_id

    # Keras' epoch lines on the chief alone.
    assert "Epoch 1/2" in chief_out and "Epoch 2/2" in chief_out
    assert "Epoch" not in out and "loss:" not in out, out

    # No journal on the other worker, no store of its own; the chief's journal was delivered.
    assert not (tmp_path / "worker1").exists()
    assert not (tmp_path / "spool1").exists() or not any((tmp_path / "spool1").iterdir())
    assert not list((tmp_path / "spool0").glob("*.jsonl"))
