"""Sample grids and metrics of the image-to-image tasks, on held-out source/target pairs.

Grid columns (the EMA generator, the same held-out examples every time):
pix2pix: source | G(source) | target; srgan: low-res (nearest) | bicubic | G(low-res) | target;
cyclegan: a | G_AB(a) | G_BA(G_AB(a)) | b | G_BA(b) | G_AB(G_BA(b)).

``TranslationEvaluator`` (the interface of ``gaxp.metrics.evaluator.Evaluator``: ``due``,
``__call__``, ``protocol``, ``last``) computes on ``metrics.n_real`` held-out pairs (default
1,000, ``metrics.split``, default the test split):
- pix2pix, srgan: ``eval/l1`` (mean absolute error, pixels in [0, 1]), ``eval/psnr`` (dB, peak 1)
  and ``eval/ssim`` (Gaussian window 11, sigma 1.5; Wang et al. 2004) with dm-pix; srgan also the
  same three for bicubic upsampling (``eval/*_bicubic``, jax.image.resize), the baseline to beat;
- cyclegan: ``eval/cycle_a``, ``eval/cycle_b`` (L1 of the reconstructions, pixels in [0, 1]);
- ``eval/fd_<c>`` (pix2pix, srgan) or ``eval/fd_<c>_ab``, ``eval/fd_<c>_ba`` (cyclegan): Frechet
  distance between outputs and real targets of that direction in the feature space of classifier
  ``<c>`` (the MNIST LeNet of scripts/train_classifier.py) when it is in the cache.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from gaxp import xla
from gaxp import sharding
from gaxp.errors import ConfigError
from gaxp.logging.grids import save_image_grid
from gaxp.metrics import features
from gaxp.metrics.evaluator import Scheduled
from gaxp.metrics.fid import frechet_distance, moments
from gaxp.models import adapter
from gaxp.pixels import to_float

log = logging.getLogger("gaxp.metrics")
GRID_EXAMPLES = 16


EVAL_NOISE_SEED = 3  # Pix2Pix's test-time dropout masks: a fixed key, so grids are comparable


def generator(spec) -> Callable:
    """(params, stats, images, direction) -> translated images (eval mode). Pix2Pix's U-Net gets
    a fixed dropout key (used when ``model.dropout_at_test``, as the paper samples)."""
    dtype = adapter.PRECISIONS[spec.precision]

    def g(params, stats, img, direction="ab"):
        kw = {"direction": direction} if spec.task.name == "cyclegan" else {}
        if spec.task.name == "pix2pix":
            kw["noise"] = jax.random.key(EVAL_NOISE_SEED)
        return adapter.apply(spec.nets.g_def, params, stats, img, train=False,
                             compute_dtype=dtype, **kw)[0]
    return g


def _fit(img: jax.Array, shape: tuple, method: str = "nearest") -> jax.Array:
    """Images resized to ``shape``'s H, W and broadcast to its channels (for display)."""
    n, (h, w, ch) = img.shape[0], shape
    img = jax.image.resize(img, (n, h, w, img.shape[-1]), method) if img.shape[1:3] != (h, w) else img
    return jnp.broadcast_to(img, (n, h, w, ch)) if img.shape[-1] != ch else img


def bicubic(c: jax.Array, shape: tuple) -> jax.Array:
    return jnp.clip(_fit(c, shape, "bicubic"), -1.0, 1.0)


def panels(task: str, g: Callable, params, stats, c, x) -> list:
    """The grid's columns for sources ``c`` and targets ``x`` (floats in [-1, 1])."""
    shape = tuple(max(a, b) for a, b in zip(x.shape[1:], (0, 0, c.shape[-1])))
    if task == "cyclegan":
        fb, fa = g(params, stats, c, "ab"), g(params, stats, x, "ba")
        cols = [c, fb, g(params, stats, fb, "ba"), x, fa, g(params, stats, fa, "ab")]
    elif task == "srgan":
        cols = [c, bicubic(c, x.shape[1:]), g(params, stats, c), x]
    else:
        cols = [c, g(params, stats, c), x]
    return [_fit(col, shape) for col in cols]


def held_out(config, dataset, n: int, split: str | None = None) -> dict:
    """``n`` pairs evenly spaced over ``split`` (default: the test split when readable, else the
    training split: the grid must work without the test files)."""
    if split is not None:
        records = dataset.records if split == dataset.split else dataset.open_split(split)
    else:
        try:
            records = dataset.open_split("test")
        except ConfigError:
            records = dataset.records
    n = min(n, len(records))
    # Evenly spaced over the split: the embedded MNIST training images are sorted by class.
    return records.gather(np.linspace(0, len(records) - 1, n).round().astype(np.int64))


class Grid:
    """The fixed sample grid of a translation run."""

    def __init__(self, run):
        self.task = run.config.task.name
        ex = held_out(run.config, run.dataset, GRID_EXAMPLES)
        self.c, self.x = to_float(jnp.asarray(ex["c"])), to_float(jnp.asarray(ex["x"]))
        g = generator(run.spec)
        self._draw = xla.jit(lambda p, s, c, x: jnp.stack(panels(self.task, g, p, s, c, x), 1))

    def draw(self, params, stats) -> np.ndarray:
        """[examples, columns, H, W, C] floats in [-1, 1] (call on every process)."""
        return np.asarray(jax.device_get(self._draw(params, stats, self.c, self.x)))

    def write(self, cols: np.ndarray, path):
        n, k = cols.shape[:2]
        per_row = 2 if k > 4 else 4
        return save_image_grid(cols.reshape((n * k,) + cols.shape[2:]), path, cols=k * per_row)


def _to01(v):
    return (v + 1.0) * 0.5


def pixel_metrics(out: jax.Array, target: jax.Array, suffix: str = "") -> dict:
    """Per-example L1, PSNR and SSIM (dm-pix) of images in [-1, 1], measured in [0, 1]."""
    o, t = _to01(jnp.clip(out, -1, 1)), _to01(target)
    return {f"l1{suffix}": jnp.mean(jnp.abs(o - t), axis=(1, 2, 3)),
            f"psnr{suffix}": dm_pix.psnr(o, t), f"ssim{suffix}": dm_pix.ssim(o, t, max_val=1.0)}


class TranslationEvaluator(Scheduled):
    """See the module docstring; constructed before anything compiles (checks the inputs)."""

    def __init__(self, config, dataset, mesh, step_spec):
        spec, self.step_spec = config.metrics, step_spec
        self.task, self.every, self.last = config.task.name, spec.every, {}
        self.mesh = mesh
        self.batch = -(-spec.batch_size // self.mesh.devices.size) * self.mesh.devices.size
        available = len(dataset.open_split(spec.split) if spec.split != dataset.split
                        else dataset.records)
        self.n = spec.n_real or min(1000, available)
        if spec.names == ("auto",):  # metrics chosen for the data: at most what the split has
            self.n = min(self.n, available)
        if self.n > available:
            raise ConfigError(f"metrics.n_real={self.n} but {dataset.name}/{spec.split} has "
                              f"{available} pairs; lower metrics.n_real")
        self.pairs = held_out(config, dataset, self.n, spec.split)
        name = getattr(dataset, "feature_data", None)
        self.net = None
        why = name and features.classifier_problem(spec, name, name, tuple(dataset.shape))
        if name and why is None:
            self.net = features.load_classifier(
                spec, {"name": name, "shape": tuple(dataset.shape)}, name)
        elif name and features.classifier_cached(spec, name, tuple(dataset.shape)):
            log.warning("the Frechet distance fd_%s is left out of this run: %s", name, why)
        self.fd_key = f"fd_{self.net.name}" if self.net else None
        # the classifier's weights on every device of the mesh, like G's (a multi-device run
        # otherwise mixes arrays on one device with arrays on all of them)
        self._feat_vars = (jax.device_put(self.net.variables, sharding.replicated(mesh))
                           if self.net else None)
        self._fn = xla.jit(self._batch_metrics)
        self.protocol = {
            "task": self.task, "pairs": self.n, "split": spec.split,
            "pixels": "[0, 1]", "psnr": "dB, peak 1", "ssim": "dm-pix, gaussian 11, sigma 1.5",
            "baseline": "bicubic (jax.image.resize)" if self.task == "srgan" else None,
            "frechet": self.net.protocol if self.net else "no classifier for these images"}

    def _batch_metrics(self, params, stats, feat_vars, c, x):
        g, c, x = generator(self.step_spec), to_float(c), to_float(x)
        res = {}
        if self.task == "cyclegan":
            fb, fa = g(params, stats, c, "ab"), g(params, stats, x, "ba")
            res["cycle_a"] = jnp.mean(jnp.abs(_to01(g(params, stats, fb, "ba")) - _to01(c)), (1, 2, 3))
            res["cycle_b"] = jnp.mean(jnp.abs(_to01(g(params, stats, fa, "ab")) - _to01(x)), (1, 2, 3))
            outs = {"_ab": (fb, x), "_ba": (fa, c)}
        else:
            out = g(params, stats, c)
            res |= pixel_metrics(out, x)
            if self.task == "srgan":
                res |= pixel_metrics(bicubic(c, x.shape[1:]), x, "_bicubic")
            outs = {"": (out, x)}
        if self.net is not None:
            for k, (fake, real) in outs.items():
                res[f"feat_fake{k}"] = self.net.fn(feat_vars, fake)[0]
                res[f"feat_real{k}"] = self.net.fn(feat_vars, real)[0]
        return res

    def evaluate(self, params, stats) -> dict:
        t0 = time.perf_counter()
        sh = sharding.batch_sharding(self.mesh)
        feat_vars = self._feat_vars
        parts = []
        for start in range(0, self.n, self.batch):
            stop = min(self.n, start + self.batch)
            idx = np.arange(start, start + self.batch).clip(max=stop - 1)  # pad with the last
            c, x = (jax.device_put(self.pairs[k][idx], sh) for k in ("c", "x"))
            res = jax.device_get(self._fn(params, stats, feat_vars, c, x))
            parts.append({k: np.asarray(v)[: stop - start] for k, v in res.items()})
        allv = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        out = {f"eval/{k}": float(np.mean(v)) for k, v in allv.items() if not k.startswith("feat")}
        for k in [k for k in allv if k.startswith("feat_fake")]:
            suffix = k[len("feat_fake"):]
            fd = frechet_distance(*moments(allv[k]), *moments(allv["feat_real" + suffix]))
            out[f"eval/{self.fd_key}{suffix}"] = float(fd)
        return out | {"perf/eval_s": time.perf_counter() - t0}

