"""Inception FID statistics of image arrays and of dataset splits, with their protocol: the API
that ``gaxp-fid`` and training runs share.

    ext = InceptionFeatures.load(cache_dir=None, download=True)      # checked, cached weights
    fake = ext.stats(images)                        # {"mu", "sigma", "features", "n"}; float64
    real = reference_stats(ext, "mnist", "test", n=10_000)             # cached on disk
    fid_kid(real, fake)                             # {"fid", "kid", "kid_std", "kid_subset_size"}

FID: Heusel et al. 2017 (float64 moments and matrix square root, ``gaxp.metrics.fid``); KID:
Binkowski et al. 2018 (cubic kernel, unbiased, 100 subsets of min(1000, n); ``gaxp.metrics.kid``).
Images are uint8 or float in [-1, 1], [N, H, W, 1 or 3], any size (preprocessing in
``gaxp.metrics.inception``).

Reference statistics of dataset splits are computed once per protocol and cached by
``gaxp.metrics.reference`` (``<cache>/stats/<dataset>-<split>-inception-n<n>-<key>.npz``; ``<key>``
digests the data source, dataset, split, n, image shape, weights checksum and preprocessing), the
same files the in-run evaluator and ``gaxp-eval`` read and write. A failed computation never
replaces a cached file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gaxp import xla
from gaxp.errors import ConfigError
from gaxp.metrics import classifier, inception, inception_weights, reference
from gaxp.metrics.fid import frechet_distance, moments
from gaxp.metrics.kid import kid
from gaxp.data import make_dataset
from gaxp.data.registry import SOURCES

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


@dataclass
class InceptionFeatures:
    """The FID Inception network on this process's default device, fed in fixed-size batches."""

    weights: inception_weights.Weights
    batch: int = 50

    def __post_init__(self):
        self.variables = jax.device_put(self.weights.variables)
        self._fn = xla.jit(inception.apply)

    @classmethod
    def load(cls, path: str | None = None, cache_dir: str | None = None, *,
             download: bool = True, batch: int = 50, log=print) -> "InceptionFeatures":
        root = classifier.cache_root(cache_dir)
        return cls(inception_weights.load(path, root, download=download, log=log), batch)

    @property
    def protocol(self) -> dict:
        w = self.weights
        return {"weights": w.source, "weights_checksum": w.checksum,
                "resize": f"{inception.SIZE} px, {inception.RESIZE}", "features": "pool3 2048-d"}

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features float32 [N, 2048], logits [N, 1008] or [N, 0]); one compile per image shape
        (the last batch is padded by repeating its last image)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
            raise ConfigError(f"Inception takes a non-empty batch of images [N, H, W, 1 or 3]; "
                              f"got shape {images.shape}")
        feats, logits = [], []
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
            f, lg = self._fn(self.variables, jnp.asarray(chunk))
            feats.append(np.asarray(f)[: len(chunk) - pad])
            logits.append(np.asarray(lg)[: len(chunk) - pad])
        return np.concatenate(feats).astype(np.float32), np.concatenate(logits)

    def stats(self, images: np.ndarray) -> dict:
        """Features and their float64 moments: {"mu", "sigma", "features", "n"}."""
        f = self.features(images)[0]
        mu, sigma = moments(f)
        return {"mu": mu, "sigma": sigma, "features": f, "n": len(f)}


def inception_fid_stats(images: np.ndarray, *, weights: str | None = None,
                        cache_dir: str | None = None, download: bool = True) -> dict:
    """FID statistics of ``images`` with the cached FID Inception weights, and the protocol."""
    ext = InceptionFeatures.load(weights, cache_dir, download=download)
    return ext.stats(images) | {"protocol": ext.protocol}


def fid_kid(a: dict, b: dict, *, kid_subsets: int = KID_SUBSETS,
            kid_subset_size: int | None = None, seed: int = 0) -> dict:
    """FID of two statistics dicts; KID too when both carry features (subsets of
    ``kid_subset_size``, default min(1000, n_a, n_b); larger than either set: ConfigError)."""
    out = {"fid": frechet_distance(a["mu"], a["sigma"], b["mu"], b["sigma"])}
    if "features" in a and "features" in b:
        size = kid_subset_size or min(KID_SUBSET_SIZE, len(a["features"]), len(b["features"]))
        m, sd = kid(a["features"], b["features"], num_subsets=kid_subsets, subset_size=size,
                    seed=seed)
        out |= {"kid": m, "kid_std": sd, "kid_subset_size": size, "kid_subsets": kid_subsets}
    return out


def save_stats(path: Path, stats: dict, protocol: dict) -> None:
    """Write ``mu``, ``sigma``, ``features`` and the protocol (JSON) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, mu=stats["mu"], sigma=stats["sigma"], features=stats["features"],
                 protocol=np.array(json.dumps(protocol)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_stats(path: Path) -> dict:
    """A statistics ``.npz`` (``mu`` [D], ``sigma`` [D, D]; ``features`` optional) as a dict."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a readable .npz ({e})") from None
    mu, sigma = data.get("mu"), data.get("sigma")
    if mu is None or sigma is None or mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ConfigError(f"{path} holds no FID statistics: it needs mu [D] and sigma [D, D] "
                          f"(has {', '.join(sorted(data)) or 'nothing'})")
    out = {"mu": mu.astype(np.float64), "sigma": sigma.astype(np.float64)}
    if "features" in data:
        out |= {"features": data["features"], "n": len(data["features"])}
    if "protocol" in data:
        out["protocol"] = json.loads(str(data["protocol"]))
    return out


def reference_stats(ext: InceptionFeatures, dataset: str, split: str, n: int | None = None, *,
                    cache_dir: str | None = None, data_dir: str | None = None,
                    image_size: int | None = None, log=print) -> dict:
    """Statistics of ``n`` examples (default all, at most 10,000) of a dataset split (a fixed
    seed-0 random subset when fewer than all: MNIST's embedded digits are sorted by class),
    computed once per protocol and cached by ``gaxp.metrics.reference``, the code path and cache
    key of the in-run evaluator and ``gaxp-eval``; ``stats["protocol"]`` says what they are."""

    source = dataset if dataset in SOURCES else "tfds"
    ds = make_dataset(source, dataset, split=split, image_size=image_size, data_dir=data_dir)
    if ds.kind != "image":
        raise ConfigError(f"{dataset} is not an image dataset; FID needs images")
    available = len(ds.records)
    n = n or min(available, 10_000)
    if n > available:
        raise ConfigError(f"{dataset}:{split} has {available} examples, fewer than n={n}")
    key = reference.reference_key(
        source=source, dataset=ds.name, split=split, n=n, available=available, shape=ds.shape,
        network="inception", weights_checksum=ext.weights.checksum,
        preprocessing=ext.protocol["resize"])
    stats = reference.reference_stats(ds.records, key, ext.features, cache_dir=cache_dir, log=log)
    protocol = stats["protocol"] | ext.protocol | {"reference": f"{dataset}:{split}"}
    return stats | {"protocol": protocol}
