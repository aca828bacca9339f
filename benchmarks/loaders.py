"""Cats-vs-dogs input pipelines side by side: tf.data vs the seed's ImageDataGenerator.

    python -m benchmarks.loaders                       # synthetic folder, about 3 minutes here
    python -m benchmarks.loaders --data-dir ~/data/cat-vs-dogs-kaggle --epochs 2

The same seed-001 CNN trains on the same images with each loader, alternating, one fresh model
per trial. Timed: each epoch's wall seconds from the tracking ledger (no validation, so the
epoch is reading + decoding + training). Epoch 0 of tf.data also fills its cache, so warm-up
(epoch 0) and steady epochs are reported apart; the ratio that matters for a long training is
the steady one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from experiments.cats_dogs import IMAGE_SIZE, build_model
from mltrack.measure.ledger import Ledger
from mltrack.studies.data.images import legacy_generators, open_folder, tf_datasets, write_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--per-class", type=int, default=200, help="synthetic images per class")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=20)
    args = parser.parse_args()

    import keras

    root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp()) / "images"
    if not args.data_dir:
        write_synthetic(root, args.per_class, IMAGE_SIZE)
    # Each loader reads the files it can (legacy skips GIFs): checked once per loader.
    folders = {name: open_folder(root, loader=name) for name in ("tf_data", "legacy")}
    for name, folder in folders.items():
        print(f"{name}: {folder.train_size} training images from {root}", flush=True)
        if folder.skipped:
            print(folder.summary(), flush=True)

    class Timer(keras.callbacks.Callback):
        def __init__(self, samples: int) -> None:
            super().__init__()
            self.ledger = Ledger()
            self.samples = samples  # what the loader yields an epoch

        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.ledger.start_epoch()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            self.ledger.end_epoch(self.samples)

    results: dict[str, list[list[float]]] = {"tf_data": [], "legacy": []}
    for trial in range(args.trials):
        for name, make in (("tf_data", tf_datasets), ("legacy", legacy_generators)):
            keras.utils.set_random_seed(trial)
            train, _ = make(folders[name], IMAGE_SIZE, args.batch_size, trial)
            model = build_model("fp32")
            model.compile(keras.optimizers.RMSprop(1e-3), "binary_crossentropy")
            timer = Timer(folders[name].train_size)
            model.fit(train, epochs=args.epochs, verbose=0, callbacks=[timer])
            walls = [e["epoch_wall_s"] for e in timer.ledger.epochs]
            results[name].append(walls)
            print(f"trial {trial + 1} {name}: " + ", ".join(f"{w:.2f}s" for w in walls), flush=True)

    print("\n| loader | warm-up epoch s | steady epoch s (median) | images/s steady |")
    print("|---|---|---|---|")
    steady = {}
    for name, trials in results.items():
        warm = statistics.median(t[0] for t in trials)
        steady[name] = statistics.median(w for t in trials for w in t[1:])
        rate = folders[name].train_size / steady[name]
        print(f"| {name} | {warm:.2f} | {steady[name]:.2f} | {rate:.0f} |")
    print(f"\nsteady epoch time, legacy / tf_data: {steady['legacy'] / steady['tf_data']:.2f}×")


if __name__ == "__main__":
    main()
