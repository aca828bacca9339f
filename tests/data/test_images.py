"""Image folders: the layout check, the synthetic writer, the check of every image file before
training, and both loaders on the same files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mltrack.studies.data import DataUnavailable
from mltrack.studies.data.imagecheck import LISTED, TF_FORMATS
from mltrack.studies.data.images import legacy_generators, open_folder, tf_datasets, write_synthetic

pytestmark = pytest.mark.tf


def encoded(kind: str, seed: int = 0, size: int = 96, **options: object) -> bytes:
    """A real image file's bytes (PIL's encoder), of smooth noise that compresses like a photo."""
    rng = np.random.default_rng(seed)
    pixels = np.kron(rng.integers(0, 255, (size // 8, size // 8, 3)), np.ones((8, 8, 1)))
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, kind, **options)
    return buffer.getvalue()


def write_faulty(root: Path) -> dict[str, dict[str, str]]:
    """A readable synthetic folder (4 images a class, 2 in test/) plus Kaggle's kinds of bad
    files; returns, per loader, each file it cannot read and (a word of) why."""
    write_synthetic(root, per_class=4, size=48)
    cats, dogs = root / "train" / "cats", root / "train" / "dogs"
    jpeg = encoded("JPEG", 1)
    commented = encoded("JPEG", 3, comment=b"x\xff\xd9x")
    scan = commented.index(b"\xff\xda")  # cut halfway through the scan, after the comment
    files = {
        cats / "666.jpg": b"",  # Kaggle's zero-byte cat
        cats / "cut.jpg": jpeg[: len(jpeg) // 2],
        cats / "notes.jpg": b"not an image, a text file named .jpg\n",
        cats / "anim.gif": encoded("GIF", 2),
        # A comment holding FF D9 before the scan: only the walk over the segments finds
        # that the scan after it is cut.
        dogs / "commented.jpg": commented[: (scan + len(commented)) // 2],
        dogs / "no_iend.png": encoded("PNG", 4)[:-12],
        dogs / "._dog.jpg": b"\x00\x05\x16\x07AppleDouble resource fork",
        dogs / "nested" / "tiff_inside.jpg": encoded("TIFF", 5),
        # Readable: kept by both loaders.
        dogs / "trailing.jpg": encoded("JPEG", 6) + b"\x00" * 64 + b"camera data",
        dogs / "progressive.jpg": encoded("JPEG", 7, progressive=True),
        dogs / "Thumbs.db": b"not an image by its name: no loader lists it",
    }
    for path, data in files.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    common = {
        "train/cats/666.jpg": "empty",
        "train/cats/cut.jpg": "truncated",
        "train/cats/notes.jpg": "not an image",
        "train/dogs/commented.jpg": "truncated",
        "train/dogs/no_iend.png": "truncated",
        "train/dogs/._dog.jpg": "not an image",
    }
    return {
        "legacy": {**common, "train/cats/anim.gif": "reads no .gif files"},
        "tf_data": {**common, "train/dogs/nested/tiff_inside.jpg": "TIFF inside"},
    }


def count_yielded(dataset) -> int:
    if hasattr(dataset, "take"):  # tf.data
        return sum(len(y) for _, y in dataset)
    return sum(len(dataset[i][1]) for i in range(len(dataset)))


@pytest.mark.parametrize("loader", ["legacy", "tf_data"])
def test_unreadable_files_are_skipped_named_and_never_reach_the_loader(tmp_path, loader):
    """Issue 19, item 1: one zero-byte JPEG ended the training with a traceback; legacy's
    skipped GIFs were counted, so train_size and samples/s were too high."""
    expected = write_faulty(tmp_path)[loader]
    folder = open_folder(tmp_path, loader=loader)
    found = {s.path: s.reason for s in folder.skipped}
    assert set(found) == set(expected), found
    for path, word in expected.items():
        assert word in found[path], (path, found[path])
    # 4 + 4 written, + the GIF (tf_data) or the TIFF inside a .jpg (legacy), + 2 readable
    assert folder.train_size == 8 + 1 + 2 and folder.test_size == 4
    params = folder.params()
    assert params["dataset.skipped_files"] == len(expected)
    assert params["dataset.train_size"] == folder.train_size
    assert "666.jpg (empty)" in folder.summary() and "\n" not in folder.summary()
    assert folder.skipped_listing().count("\n") == len(expected)
    make = tf_datasets if loader == "tf_data" else legacy_generators
    train, test = make(folder, 32, batch_size=4, seed=0)
    # Every epoch's samples/s divides by train_size: what the loader yields, read to the end.
    assert count_yielded(train) == folder.train_size and count_yielded(test) == 4


def test_the_check_agrees_with_tensorflows_decoder(tmp_path):
    """What tf.io.decode_image (tf_data's decoder) makes of each file decides: the kept ones
    decode, the skipped ones (but files it lists by name only) do not."""
    import tensorflow as tf

    write_faulty(tmp_path)
    folder = open_folder(tmp_path, loader="tf_data")

    def decodes(relative: str) -> bool:
        try:
            tf.io.decode_image((tmp_path / relative).read_bytes(), 3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, ValueError):
            return False
        return True

    assert all(decodes(path) for names in folder.files.values() for path in names)
    assert not any(decodes(s.path) for s in folder.skipped)
    assert set(TF_FORMATS) >= {"JPEG", "PNG", "GIF", "BMP"}


def test_strict_data_refuses_in_one_line_naming_the_file(tmp_path):
    write_faulty(tmp_path)
    with pytest.raises(
        DataUnavailable, match=r"^--data-dir: .*/train/cats/666\.jpg: empty \(and 6 more"
    ) as info:
        open_folder(tmp_path, strict=True)
    assert "\n" not in str(info.value) and "--strict-data" in str(info.value)


def test_a_class_left_without_readable_images_is_named(tmp_path):
    write_synthetic(tmp_path, per_class=4, size=32)
    for path in (tmp_path / "test" / "cats").iterdir():
        path.write_bytes(b"")
    with pytest.raises(
        DataUnavailable, match=r"test/cats holds no image --loader legacy can read \(2 image"
    ):
        open_folder(tmp_path)


def test_listed_names_are_the_loaders_own():
    from keras.src.legacy.preprocessing.image import DirectoryIterator
    from keras.src.utils.image_dataset_utils import ALLOWLIST_FORMATS

    assert set(LISTED["tf_data"]) == set(ALLOWLIST_FORMATS)
    assert set(LISTED["legacy"]) == set(DirectoryIterator.white_list_formats)


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
    with pytest.raises(DataUnavailable, match=r"test/dogs holds no image --loader legacy can"):
        open_folder(tmp_path)
    (tmp_path / "test" / "dogs").rmdir()
    with pytest.raises(DataUnavailable, match=r"test/dogs not found; expected .*\{cats,dogs\}"):
        open_folder(tmp_path)


def test_both_loaders_read_the_same_images_and_labels(tmp_path):
    write_synthetic(tmp_path, per_class=4, size=48)
    _, test_ds = tf_datasets(open_folder(tmp_path, loader="tf_data"), 48, batch_size=4, seed=0)
    _, test_gen = legacy_generators(open_folder(tmp_path), 48, batch_size=4, seed=0)
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

    folder = write_synthetic(tmp_path, per_class=4, size=48, loader="tf_data")
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
