"""Reference statistics of real data, computed once per protocol and cached: the one code path
that ``gaxp-fid``, the in-run evaluator and ``gaxp-eval`` share.

    key = reference_key(source="mnist", dataset="mnist", split="train", n=500, available=5000,
                        shape=(28, 28, 1), network="inception", weights_checksum="sha1:...",
                        preprocessing="299 px, TF-FID: ...")
    stats = reference_stats(records, key, embed, cache_dir=None)   # {"features", "logits", "mu",
                                                                   #  "sigma", "protocol"}

The reference examples are all of the split, else a fixed random subset of ``n`` (seed 0,
sorted: ``reference_indices``; MNIST's embedded digits are sorted by class, so the first n would
be a few classes only). The file is ``<cache>/stats/<dataset>-<split>-<network>-n<n>-<key>.npz``,
where ``<key>`` digests the whole key: data source, dataset, split, n, the split's size and the
subset rule, image shape, feature network, its weights' checksum and preprocessing. A different
protocol is a different file, computed once. The file is written atomically once the features are
complete, so a failed computation leaves every cached file as it was; a file that cannot be read
is computed again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from gaxp.files import atomic_path
from gaxp.metrics.classifier import cache_root
from gaxp.metrics.fid import moments


def reference_indices(available: int, n: int) -> np.ndarray:
    """All ``available`` examples when ``n`` is all of them, else ``n`` of them drawn at random
    (seed 0) and sorted: a fixed subset that does not depend on the split's order."""
    if n >= available:
        return np.arange(available)
    return np.sort(np.random.default_rng(0).choice(available, n, replace=False))


def reference_key(*, source: str, dataset: str, split: str, n: int, available: int, shape,
                  network: str, weights_checksum: str, preprocessing: str) -> dict:
    """What reference statistics are: the cache key and the protocol stored with them."""
    return {"source": source, "dataset": dataset, "split": split, "n": int(n),
            "available": int(available),
            "subset": "all" if n >= available else "seed-0 random, sorted",
            "shape": [int(d) for d in shape], "network": network,
            "weights_checksum": weights_checksum, "preprocessing": preprocessing}


def stats_path(key: dict, cache_dir: str | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{key['dataset']}-{key['split']}-{key['network']}-n{key['n']}-{digest}.npz"
    return cache_root(cache_dir) / "stats" / name.replace("/", "_")


def _read(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in ("features", "logits", "mu", "sigma")}
            out["protocol"] = json.loads(str(z["protocol"]))
    except (OSError, ValueError, KeyError):
        return None
    return out


def reference_stats(records, key: dict, embed: Callable, *, cache_dir: str | None = None,
                    write: bool = True, log: Callable | None = None) -> dict:
    """Statistics of ``key["n"]`` examples of ``records`` (a split: ``len`` and ``gather``) under
    ``embed(uint8 images) -> (features [N, D], logits [N, K])``: read from the cache, else
    computed and (with ``write``) cached. Returns features (float32), logits, float64 ``mu`` and
    ``sigma``, and the key as ``protocol``."""
    path = stats_path(key, cache_dir)
    if path.is_file():
        cached = _read(path)
        if cached is not None and cached["protocol"] == key:
            return cached
    if log is not None:
        log(f"computing the {key['network']} statistics of {key['dataset']}:{key['split']} "
            f"(n={key['n']}) once -> {path}")
    images = records.gather(reference_indices(len(records), key["n"]))["x"]
    features, logits = embed(images)
    features = np.asarray(features, np.float32)
    mu, sigma = moments(features)
    stats = {"features": features, "logits": np.asarray(logits), "mu": mu, "sigma": sigma,
             "protocol": key}
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, "cached reference statistics") as tmp:
            np.savez(tmp, **{k: v for k, v in stats.items() if k != "protocol"},
                     protocol=np.array(json.dumps(key)))
    return stats
