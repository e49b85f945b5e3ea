"""IDX files (the format of MNIST and Fashion-MNIST) and the ``fashion_mnist`` source.

``read_idx`` checks the header against the bytes that follow: a wrong magic number, an unknown
element type, a truncated or over-long file each raise one ``ConfigError`` line naming the file.

Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, "Fashion-MNIST: a novel image dataset for
benchmarking machine learning algorithms"): 60,000 training and 10,000 test images of 28x28
greyscale clothing, 10 classes, in the official IDX files (gzipped or not). They are looked for,
in order, in ``data.data_dir``, in ``$GAXP_FASHION_MNIST_DIR`` and where Debian's
``dataset-fashion-mnist`` package installs them; failing all three, ``gaxp.data.images`` reads a
prepared TFDS ``fashion_mnist`` (``tfds build fashion_mnist``, where a network exists).
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

from gaxp.errors import ConfigError

FASHION_ENV = "GAXP_FASHION_MNIST_DIR"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_SIZES = {"train": 60_000, "test": 10_000}
FASHION_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot")
# IDX element types (the third byte of the magic number): numpy dtypes, big-endian
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped when its name ends in .gz) -> its array, with its header's shape."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError) as e:  # EOFError: a gzip stream cut short
        raise ConfigError(f"cannot read IDX file {path}: {e}; fetch the official file again") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
        raise ConfigError(f"{path} is not an IDX file (magic number {data[:4].hex() or 'missing'}, "
                          "expected 0000 then a type byte and a rank); use the official files")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ConfigError(f"{path} is truncated inside its header; fetch the official file again")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    want = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != want:
        what = "truncated" if len(data) - header < want else "longer than its header says"
        raise ConfigError(f"{path} is {what}: {len(data) - header} bytes of data for shape {dims} "
                          f"({want} bytes); fetch the official file again")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_dir(data_dir: str | None) -> Path | None:
    """The first folder holding all four Fashion-MNIST IDX files, or None. A folder named by
    ``data_dir`` or the environment that lacks them is an error (a typo should not fall back)."""
    named = [(f"data.data_dir={data_dir}", data_dir),
             (f"${FASHION_ENV}={os.environ.get(FASHION_ENV)}", os.environ.get(FASHION_ENV))]
    for what, folder in named:
        if folder:
            p = Path(folder).expanduser()
            missing = [s for pair in FASHION_FILES.values() for s in pair if _find(p, s) is None]
            if missing:
                raise ConfigError(f"{what} lacks the Fashion-MNIST file(s) {', '.join(missing)} "
                                  "(.gz or not); point it at the folder of the official IDX files")
            return p
    if all(_find(FASHION_SYSTEM_DIR, s) for pair in FASHION_FILES.values() for s in pair):
        return FASHION_SYSTEM_DIR
    return None


@functools.lru_cache(maxsize=4)
def load_fashion(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 28, 28, 1] images and int32 labels of one split, checked against each other."""
    images_stem, labels_stem = FASHION_FILES[split]
    x, y = read_idx(_find(folder, images_stem)), read_idx(_find(folder, labels_stem))
    if x.ndim != 3 or x.dtype != np.uint8 or y.ndim != 1 or len(x) != len(y):
        raise ConfigError(f"Fashion-MNIST {split} files in {folder} do not match: images "
                          f"{x.shape} {x.dtype}, labels {y.shape}; use the official IDX files")
    if y.size and not 0 <= int(y.min()) <= int(y.max()) < len(FASHION_CLASSES):
        raise ConfigError(f"Fashion-MNIST {split} labels in {folder} lie outside 0..9")
    return x[..., None], y.astype(np.int32)
