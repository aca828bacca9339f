"""Image folders: the layout check, the synthetic writer, and both loaders on the same files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mltrack.data import DataUnavailable
from mltrack.data.images import legacy_generators, open_folder, tf_datasets, write_synthetic

pytestmark = pytest.mark.tf


def test_synthetic_folder_is_real_jpegs_in_the_seed_layout(tmp_path):
    folder = write_synthetic(tmp_path, per_class=8, size=64, seed=0)
    assert folder.counts == {"train/cats": 8, "train/dogs": 8, "test/cats": 2, "test/dogs": 2}
    image = Image.open(next((tmp_path / "train" / "dogs").iterdir()))
    assert image.format == "JPEG" and image.size == (64, 64)
    params = folder.params()
    assert params["dataset.train_size"] == 16 and params["dataset.test_size"] == 4
    assert (
        write_synthetic(tmp_path / "again", 8, 64, 0).params()["dataset.hash"]
        == params["dataset.hash"]
    )


def test_missing_class_folder_is_named(tmp_path):
    write_synthetic(tmp_path, per_class=4, size=32)
    for path in (tmp_path / "test" / "dogs").iterdir():
        path.unlink()
    with pytest.raises(DataUnavailable, match=r"test/dogs holds no images"):
        open_folder(tmp_path)
    (tmp_path / "test" / "dogs").rmdir()
    with pytest.raises(DataUnavailable, match=r"test/dogs not found; expected .*\{cats,dogs\}"):
        open_folder(tmp_path)


def test_both_loaders_read_the_same_images_and_labels(tmp_path):
    folder = write_synthetic(tmp_path, per_class=4, size=48)
    _, test_ds = tf_datasets(folder, 48, batch_size=4, seed=0)
    _, test_gen = legacy_generators(folder, 48, batch_size=4, seed=0)
    x_ds = np.concatenate([x.numpy() for x, _ in test_ds])
    y_ds = np.concatenate([y.numpy() for _, y in test_ds]).reshape(-1)
    x_gen = np.concatenate([test_gen[i][0] for i in range(len(test_gen))])
    y_gen = np.concatenate([test_gen[i][1] for i in range(len(test_gen))])
    assert x_ds.shape == x_gen.shape == (4, 48, 48, 3)
    assert x_ds.min() >= 0.0 and x_ds.max() <= 1.0
    assert sorted(y_ds.tolist()) == sorted(y_gen.tolist()) == [0, 0, 1, 1]  # cats 0, dogs 1
    # Same files, same rescaling: the pixel sums agree up to resize-method differences.
    assert abs(x_ds.mean() - x_gen.mean()) < 0.02


def test_tf_data_caches_uint8_pixels_and_rescales_after_the_cache(tmp_path):
    """Issue 19, item 8: the cache held float32 images (270 KB each at 150×150, 6.75 GB for
    the Kaggle set); it holds uint8 now (a quarter), and the model still sees [0, 1]."""
    import tensorflow as tf

    folder = write_synthetic(tmp_path, per_class=4, size=48)
    train, _ = tf_datasets(folder, 48, batch_size=4, seed=0)
    node, cached = train, None
    while node is not None:  # the pipeline's stages, from the last back to the first
        if type(node).__name__ == "CacheDataset":
            cached = node
        node = getattr(node, "_input_dataset", None)
    assert cached is not None, "no cache stage found in the tf.data pipeline"
    assert cached.element_spec[0].dtype == tf.uint8
    x = np.concatenate([x.numpy() for x, _ in train])
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert np.allclose(x * 255, np.round(x * 255), atol=1e-3)  # whole pixel values
