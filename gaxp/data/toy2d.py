"""Synthetic 2D mixtures of Gaussians: the PacGAN mode-collapse benchmarks and a spiral.

* `ring`: 8 Gaussians evenly spaced on a circle of radius 1, std 0.01 (PacGAN, Lin et al. 2018).
* `grid`: 25 Gaussians centred on {-4,-2,0,2,4}^2, std 0.05 (PacGAN, Lin et al. 2018).
* `spiral`: 20 Gaussians, std 0.05, equally spaced by arc length along the Archimedean spiral
  r = theta / (2 pi) for theta in [pi, 4 pi] (1.5 turns, radius 0.5 to 2). Neighbouring centres
  are 0.59 apart (12 sigma), so mode coverage and the 3-sigma quality metrics apply unchanged.

Every mode has equal weight. A sample is `modes[k] + sigma * N(0, I)` with k uniform.

Speed: one grain element is one whole batch, drawn vectorized with
`np.random.default_rng([seed, process_index, i])` for batch index i. The pipeline is therefore
index-addressable: the iterator state is just the next batch index, and resuming is exact. The data
are unlabeled (`num_classes` is None, no `y`) unless built with `labeled=True` (`data.labeled=true`):
then each point carries the index of the mode it was drawn from as `y` (int32), `num_classes` is
the number of modes, and the points are the same as unlabeled. `num_examples` is a nominal epoch
size.
"""

from __future__ import annotations

import dataclasses
import sys
import zlib

import grain
import numpy as np

from gaxp.errors import ConfigError, unknown

NOMINAL_EPOCH = 100_000
SPLITS = ("train", "test")
# A toy batch takes ~0.1 ms to draw, on the main thread: JAX dispatches the step asynchronously, so
# drawing overlaps the step. Measured on 2 cores (toy MLP step ~5 ms): no thread 4.7 ms/step, one
# prefetch thread 6.7 ms/step (GIL and core contention with XLA).
_READ_OPTIONS = dict(num_threads=0, prefetch_buffer_size=0)


def ring_modes(n: int = 8, radius: float = 1.0) -> np.ndarray:
    angles = 2 * np.pi * np.arange(n) / n
    return (radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)


def grid_modes(values=(-4.0, -2.0, 0.0, 2.0, 4.0)) -> np.ndarray:
    xs, ys = np.meshgrid(values, values, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def spiral_modes(n: int = 20, turns: float = 1.5, start: float = np.pi) -> np.ndarray:
    """`n` centres equally spaced by arc length on r = theta / (2 pi), from theta = `start` on."""
    theta = np.linspace(start, start + 2 * np.pi * turns, 100_001)
    r = theta / (2 * np.pi)
    curve = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    idx = np.searchsorted(arc, np.linspace(0.0, arc[-1], n))
    return curve[np.minimum(idx, len(curve) - 1)].astype(np.float32)


# name -> (mode centres, std of each mode)
MIXTURES = {
    "ring": (ring_modes, 0.01),
    "grid": (grid_modes, 0.05),
    "spiral": (spiral_modes, 0.05),
}


def sample_mixture(rng: np.random.Generator, modes: np.ndarray, sigma: float, n: int,
                   with_modes: bool = False):
    """`n` float32 points from the equal-weight mixture, vectorized (and, with `with_modes`,
    the int32 index of each point's mode)."""
    k = rng.integers(0, len(modes), size=n)
    x = (modes[k] + sigma * rng.standard_normal((n, 2), dtype=np.float32)).astype(np.float32)
    return (x, k.astype(np.int32)) if with_modes else x


@dataclasses.dataclass(frozen=True, eq=False)
class PointDataset:
    """A 2D mixture of Gaussians; see the module docstring."""

    name: str
    modes: np.ndarray
    sigma: float
    split: str = "train"
    seed: int = 0
    process_index: int = 0
    process_count: int = 1
    kind: str = "points"
    shape: tuple = (2,)
    num_classes: int | None = None  # len(modes) when labeled
    num_examples: int = NOMINAL_EPOCH

    def _draw(self, rng: np.random.Generator, n: int) -> dict:
        if not self.num_classes:
            return {"x": sample_mixture(rng, self.modes, self.sigma, n)}
        x, y = sample_mixture(rng, self.modes, self.sigma, n, with_modes=True)
        return {"x": x, "y": y}

    def _batch(self, batch_size: int, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.process_index, index])
        return self._draw(rng, batch_size)

    def iterator(self, batch_size: int) -> grain.DatasetIterator:
        """Infinite, checkpointable iterator of `dict(x=float32[batch_size, 2])`."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")

        def draw(index):
            return self._batch(batch_size, int(index))

        ds = grain.MapDataset.range(sys.maxsize).map(draw)
        return iter(ds.to_iter_dataset(grain.ReadOptions(**_READ_OPTIONS)))

    def examples(self, n: int, split: str | None = None) -> dict:
        """`n` deterministic points of `split` (a stream separate from training batches)."""
        split = self.split if split is None else split
        if split not in SPLITS:
            raise unknown("toy2d split", split, SPLITS)
        rng = np.random.default_rng([0x70792D, self.seed, zlib.crc32(split.encode())])
        return self._draw(rng, n)


def build(name: str, *, split: str = "train", image_size: int | None = None,
          data_dir: str | None = None, seed: int = 0, process_index: int = 0,
          process_count: int = 1, labeled: bool = False) -> PointDataset:
    """The `toy2d` source: `ring`, `grid` or `spiral`; no `image_size`; `data_dir` is ignored;
    `labeled`: `y` = mode index."""
    if name not in MIXTURES:
        raise unknown("toy2d dataset", name, MIXTURES)
    if split not in SPLITS:
        raise unknown("toy2d split", split, SPLITS)
    if image_size is not None:
        raise ConfigError(f"toy2d data are 2D points; unset image_size (got {image_size})")
    modes_fn, sigma = MIXTURES[name]
    modes = modes_fn()
    return PointDataset(name=name, modes=modes, sigma=sigma, split=split, seed=seed,
                        process_index=process_index, process_count=process_count,
                        num_classes=len(modes) if labeled else None)
