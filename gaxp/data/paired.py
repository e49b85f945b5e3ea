"""Source/target image datasets for the image-to-image tasks (``gaxp.tasks``).

Every batch is ``dict(x=target uint8 [B, H, W, C], c=source uint8 [B, h, w, c])`` (plus ``y``
labels for MNIST). The datasets are ``ImageDataset``s (same grain pipeline, exact resume) with two
more attributes: ``source_shape`` and ``paired`` (whether ``c[i]`` is the source of ``x[i]``).

``mnist_pairs`` builds the pairs from the embedded MNIST digits (test split from the official
files), once per split, on the host:

| name | source ``c`` | target ``x`` | paired |
|---|---|---|---|
| ``edges`` | outer contour of the binarized digit (dilation XOR digit, 3x3) | the digit | yes |
| ``lowres<k>`` | the digit box-averaged over k x k blocks (28/k px) | the digit | yes |
| ``thick``, ``inverted`` | the digit | grey dilation 3x3 / 255 - digit | yes |
| ``thick_unpaired``, ``inverted_unpaired`` | digits of the even indices | transformed digits of the odd indices, in a fixed random order | no |

The unpaired domains come from disjoint halves of the split, so no target is ever the transform
of a source in the data (CycleGAN's setting).

``folder`` reads a user's images: ``<data_dir>/<split>/A/*`` (sources) and ``<split>/B/*``
(targets), PNG or JPEG, loaded into memory. ``name=paired`` needs the same file names in A and B
(the pairs); ``name=unpaired`` takes the two folders as independent domains.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from gaxp.data import images, pictures
from gaxp.errors import ConfigError, unknown

log = logging.getLogger("gaxp")

MNIST_PAIRS = ("edges", "lowres2", "lowres4", "lowres<k>", "thick", "inverted", "thick_unpaired",
               "inverted_unpaired")
FOLDER_NAMES = ("paired", "unpaired")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _max3(x: np.ndarray) -> np.ndarray:
    """3x3 grey dilation of uint8 [N, H, W, C] (zero padding)."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    return np.max([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def edges(x: np.ndarray) -> np.ndarray:
    """Outer contour of the digit: pixels next to (but not on) the binarized stroke, 255."""
    ink = x > 127
    return ((_max3(ink.astype(np.uint8)) > 0) & ~ink).astype(np.uint8) * 255


def box_down(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (area downsampling), rounded to uint8."""
    n, h, w, c = x.shape
    blocks = x.reshape(n, h // k, k, w // k, k, c).astype(np.float32)
    return np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)


def _lowres_factor(name: str) -> int | None:
    rest = name[len("lowres"):] if name.startswith("lowres") else ""
    return int(rest) if rest.isdigit() and int(rest) > 0 else None


def mnist_transform(name: str, size: int):
    """name -> (f(uint8 images) -> (sources, targets), paired); ConfigError when unknown."""
    k = _lowres_factor(name)
    if k is not None:
        if size % k:
            raise ConfigError(f"mnist_pairs {name}: {size} px is not divisible by {k}; use a "
                              f"factor dividing {size} (lowres2: {size // 2} px, lowres4: "
                              f"{size // 4} px)")
        return (lambda x: (box_down(x, k), x)), True
    base = {"edges": None, "thick": _max3, "inverted": lambda x: 255 - x}
    stem = name[:-len("_unpaired")] if name.endswith("_unpaired") else name
    if stem not in base or (stem == "edges" and stem != name):
        raise unknown("mnist_pairs dataset", name, MNIST_PAIRS)
    if name == "edges":
        return (lambda x: (edges(x), x)), True
    f = base[stem]
    if stem == name:
        return (lambda x: (x, f(x))), True
    # Unpaired: sources from the even indices, targets from the odd ones in a fixed random order.
    def unpaired(x):
        a, b = x[0::2], f(x[1::2])
        n = min(len(a), len(b))
        return a[:n], b[np.random.default_rng(1234).permutation(len(b))[:n]]
    return unpaired, False


@dataclasses.dataclass(frozen=True, eq=False)
class PairRecords:
    """In-memory pairs: x (targets) uint8 [N, H, W, C], c (sources) [N, h, w, c'], y or None."""

    x: np.ndarray
    c: np.ndarray
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def gather(self, indices: np.ndarray) -> dict:
        batch = {"x": np.take(self.x, indices, axis=0), "c": np.take(self.c, indices, axis=0)}
        if self.y is not None:
            batch["y"] = np.take(self.y, indices, axis=0)
        return batch


@dataclasses.dataclass(frozen=True, eq=False)
class PairDataset(images.ImageDataset):
    source_shape: tuple = ()
    paired: bool = True
    feature_data: str | None = None  # the classifier (by dataset name) for Frechet distances


@functools.lru_cache(maxsize=8)
def _mnist_pair_records(name: str, split: str, image_size, data_dir) -> PairRecords:
    test_dir = images.mnist_test_dir(data_dir) if split == "test" else None
    x, y = images.load_mnist(split, test_dir)
    x = images._resize_mnist(x, image_size)
    make, paired = mnist_transform(name, x.shape[1])
    c, target = make(x)
    return PairRecords(target, c, y if paired else None)


def build_mnist_pairs(name: str, *, split: str = "train", image_size: int | None = None,
                      data_dir: str | None = None, seed: int = 0, process_index: int = 0,
                      process_count: int = 1) -> PairDataset:
    """The ``mnist_pairs`` source (module docstring)."""
    images._check_common(image_size)
    mnist_transform(name, image_size or 28)  # unknown names fail before any image is read

    def open_split(s: str) -> PairRecords:
        if s not in images.MNIST_SPLITS:
            raise unknown("mnist split", s, images.MNIST_SPLITS)
        return _mnist_pair_records(name, s, image_size, data_dir)

    records = open_split(split)
    return PairDataset(name=f"mnist_{name}", split=split, shape=records.x.shape[1:],
                       num_classes=10 if records.y is not None else None, records=records,
                       open_split=open_split, seed=seed, process_index=process_index,
                       process_count=process_count, source_shape=records.c.shape[1:],
                       paired=mnist_transform(name, records.x.shape[1])[1], feature_data="mnist")


# ---------------------------------------------------------------- a user's image folders


def _read_folder(folder: Path, size: int | None) -> tuple[list[str], np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    arrays, rules = [], Counter()
    for f in files:  # each converted by gaxp.data.pictures' rule; channels as the first image's
        a, applied = pictures.read(f)
        rules.update(applied)
        if arrays and a.shape[-1] != arrays[0].shape[-1]:
            a = (np.repeat(a, 3, axis=-1) if a.shape[-1] == 1
                 else np.asarray(Image.fromarray(a).convert("L"), np.uint8)[..., None])
        if size is not None:
            a = images.fit_image(a, size)
        elif arrays and a.shape != arrays[0].shape:
            raise ConfigError(f"{f} is {a.shape[1]}x{a.shape[0]} px, {files[0].name} "
                              f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; set data.image_size")
        arrays.append(a)
    said = pictures.note(dict(rules), folder)
    if said:
        log.warning("gaxp: %s", said)
    return [f.stem for f in files], np.stack(arrays)


def _folder_records(root: str, split: str, size, paired: bool) -> PairRecords:
    where = Path(root).expanduser() / split
    for sub in ("A", "B"):
        if not (where / sub).is_dir():
            raise ConfigError(f"data=paired_folder needs {where / sub}/ (sources in A/, targets "
                              f"in B/, one folder per split: train/, test/)")
    names_a, a = _read_folder(where / "A", size)
    names_b, b = _read_folder(where / "B", size)
    if not paired:
        n = max(len(a), len(b))
        return PairRecords(b[np.arange(n) % len(b)], a[np.arange(n) % len(a)])
    missing = sorted(set(names_a) ^ set(names_b))
    if missing:
        side = "B" if missing[0] in names_a else "A"
        raise ConfigError(f"data=paired_folder: {missing[0]} has no partner in {where / side}/ "
                          f"({len(missing)} unpaired files); A/ and B/ need the same file names "
                          "(or data.name=unpaired)")
    order = np.argsort(names_b)  # both sorted by name already; keep explicit
    return PairRecords(b[order], a)


def build_folder(name: str, *, split: str = "train", image_size: int | None = None,
                 data_dir: str | None = None, seed: int = 0, process_index: int = 0,
                 process_count: int = 1) -> PairDataset:
    """The ``folder`` source: ``<data_dir>/<split>/{A,B}/`` (module docstring)."""
    images._check_common(image_size)
    if name not in FOLDER_NAMES:
        raise unknown("paired_folder name", name, FOLDER_NAMES)
    if not data_dir:
        raise ConfigError("data=paired_folder needs data.data_dir=<dir> holding train/A, train/B "
                          "(and test/A, test/B for held-out pairs)")

    opened: dict = {}  # each split is read once per dataset (not cached across datasets)

    def open_split(s: str) -> PairRecords:
        if s not in opened:
            opened[s] = _folder_records(str(data_dir), s, image_size, name == "paired")
        return opened[s]

    records = open_split(split)
    return PairDataset(name=f"folder_{Path(data_dir).name}", split=split,
                       shape=records.x.shape[1:], num_classes=None, records=records,
                       open_split=open_split, seed=seed, process_index=process_index,
                       process_count=process_count, source_shape=records.c.shape[1:],
                       paired=name == "paired")


# ---------------------------------------------------------------- TFDS domain pairs (cycle_gan/*)


@dataclasses.dataclass(frozen=True, eq=False)
class DomainRecords:
    """Two TFDS splits as unpaired domains: example i is (A[i mod |A|], B[perm(i) mod |B|])."""

    a: images.TfdsRecords
    b: images.TfdsRecords

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def gather(self, indices: np.ndarray) -> dict:
        perm = np.random.default_rng(1234).permutation(len(self.b))
        return {"c": self.a.gather(indices % len(self.a))["x"],
                "x": self.b.gather(perm[indices % len(self.b)])["x"]}


def build_tfds_domains(name: str, *, split: str = "train", image_size: int | None = None,
                       data_dir: str | None = None, seed: int = 0, process_index: int = 0,
                       process_count: int = 1) -> PairDataset:
    """The ``tfds_domains`` source: splits ``<split>A`` and ``<split>B`` of a prepared TFDS
    dataset (the ``cycle_gan/*`` layout, e.g. ``cycle_gan/horse2zebra``) as domains A and B."""
    images._check_common(image_size)

    def open_split(s: str) -> DomainRecords:
        sides = []
        for side in ("A", "B"):
            src = images._tfds_data_source(name, f"{s}{side}", data_dir)
            images._tfds_shape(name, src.dataset_info.features, image_size)
            sides.append(images.TfdsRecords(src, image_size, labeled=False))
        return DomainRecords(*sides)

    records = open_split(split)
    features = records.a.source.dataset_info.features
    shape = images._tfds_shape(name, features, image_size)
    return PairDataset(name=name, split=split, shape=shape, num_classes=None, records=records,
                       open_split=open_split, seed=seed, process_index=process_index,
                       process_count=process_count, source_shape=shape, paired=False,
                       num_threads=min(8, os.cpu_count() or 1))
