"""Improved precision and recall (Kynkäänniemi et al. 2019, "Improved precision and recall metric
for assessing generative models", NeurIPS; k=3) and density and coverage (Naeem et al. 2020,
"Reliable fidelity and diversity metrics for generative models", ICML; k=5).

Each sample's k-NN radius is the distance to its k-th nearest neighbour within its own set.
    precision = fraction of fakes inside some real ball
    recall    = fraction of reals inside some fake ball
    density   = (1 / (k M)) * sum over fakes of the number of real balls containing it
    coverage  = fraction of reals whose nearest fake lies inside their own ball
Ball membership is strict (d < r), as in the authors' reference code. Distances are computed on
device under ``jax.jit`` in blocks of real rows (never the whole N x M matrix at once), in the
features' dtype, comparing squared distances.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gaxp.errors import ConfigError

_BLOCK = 500


def _sqdist(a, b, b2):
    return jnp.maximum((a * a).sum(1)[:, None] + b2[None, :] - 2.0 * a @ b.T, 0.0)


def _blocks(x, block: int):
    pad = (-x.shape[0]) % block
    return jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, block, x.shape[1]), pad


@functools.partial(jax.jit, static_argnames=("k",))
def _nearest(b, x, x2, k: int):
    return -jax.lax.top_k(-_sqdist(b, x, x2), k + 1)[0]  # [block, k+1]; self (0) first


def knn_sq_radii(x, ks, block: int = _BLOCK) -> dict:
    """{k: squared distance from each row of x to its k-th nearest other row} for every k in
    ``ks``, from one top_k pass. The columns are taken outside the jitted top_k: slicing its
    output inside the same program makes XLA:CPU compute it by a full sort, ~10x slower."""
    x = jnp.asarray(x)
    x2 = (x * x).sum(1)
    blocks, _ = _blocks(x, block)
    nearest = jnp.concatenate([_nearest(b, x, x2, max(ks)) for b in blocks])[: x.shape[0]]
    return {k: nearest[:, k] for k in ks}


@functools.partial(jax.jit, static_argnames=("block",))
def _cross(real, fake, r_real, r_fake, block: int = _BLOCK):
    f2 = (fake * fake).sum(1)
    blocks, pad = _blocks(real, block)
    radii = jnp.pad(r_real, (0, pad), constant_values=-1.0).reshape(-1, block)

    def body(counts, xs):
        b, r = xs
        d = _sqdist(b, fake, f2)
        inside = d < r[:, None]  # fake j inside real ball i
        recalled = (d < r_fake[None, :]).any(1)
        covered = d.min(1) < r
        return counts + inside.sum(0), (recalled, covered)

    counts, (recalled, covered) = jax.lax.scan(body, jnp.zeros(fake.shape[0], jnp.int32),
                                               (blocks, radii))
    n = real.shape[0]
    return counts, recalled.reshape(-1)[:n], covered.reshape(-1)[:n]


def prdc(real, fake, nearest_k: int = 5, *, real_radii=None, fake_radii=None) -> dict:
    """Precision, recall, density and coverage of ``fake`` [M, D] against ``real`` [N, D].
    ``real_radii``/``fake_radii``: precomputed ``knn_sq_radii(...)[nearest_k]`` (optional)."""
    real, fake = jnp.asarray(real), jnp.asarray(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ConfigError(f"prdc needs features [N, D] of equal D; got {real.shape} and {fake.shape}")
    if nearest_k < 1 or min(real.shape[0], fake.shape[0]) <= nearest_k:
        raise ConfigError(f"prdc with k={nearest_k} needs more than {nearest_k} samples of each set "
                          f"(got {real.shape[0]} real, {fake.shape[0]} fake)")
    r_real = knn_sq_radii(real, (nearest_k,))[nearest_k] if real_radii is None else real_radii
    r_fake = knn_sq_radii(fake, (nearest_k,))[nearest_k] if fake_radii is None else fake_radii
    counts, recalled, covered = jax.device_get(_cross(real, fake, r_real, r_fake))
    return {"precision": float(np.mean(counts > 0)), "recall": float(np.mean(recalled)),
            "density": float(np.sum(counts) / (nearest_k * fake.shape[0])),
            "coverage": float(np.mean(covered))}
