"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs", ICLR): the unbiased
estimator of the squared MMD with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged
over ``num_subsets`` random subsets of ``subset_size`` samples of each set (100 subsets of 1,000,
the paper's protocol), reported as mean and standard deviation over subsets.

Per subset, with m samples of each set:
    MMD^2 = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1))
            - 2 sum_{i,j} k(x_i, y_j) / m^2

The subsets are drawn on the host (``subset_indices``, numpy, seeded) and the kernel sums run
on device under one ``jax.jit`` (a ``lax.map`` over subsets), in the features' dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gaxp.errors import ConfigError


def subset_indices(n_a: int, n_b: int, num_subsets: int, subset_size: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays [num_subsets, subset_size] into each set; each subset without replacement."""
    if subset_size < 2 or num_subsets < 1:
        raise ConfigError(f"KID needs subset_size >= 2 and num_subsets >= 1 (got {subset_size} "
                          f"and {num_subsets})")
    if min(n_a, n_b) < subset_size:
        raise ConfigError(f"KID with subsets of {subset_size} needs at least {subset_size} samples "
                          f"of each set (got {n_a} and {n_b}); lower kid_subset_size or add samples")
    rng = np.random.default_rng(seed)
    a = np.stack([rng.choice(n_a, subset_size, replace=False) for _ in range(num_subsets)])
    b = np.stack([rng.choice(n_b, subset_size, replace=False) for _ in range(num_subsets)])
    return a, b


def _kernel(x, y, degree: int, coef0: float):
    return (x @ y.T / x.shape[1] + coef0) ** degree


def _mmd2(x, y, degree: int, coef0: float):
    m = x.shape[0]
    kxx, kyy, kxy = (_kernel(x, x, degree, coef0), _kernel(y, y, degree, coef0),
                     _kernel(x, y, degree, coef0))
    off = (kxx.sum() - jnp.trace(kxx) + kyy.sum() - jnp.trace(kyy)) / (m * (m - 1))
    return off - 2.0 * kxy.sum() / (m * m)


@functools.partial(jax.jit, static_argnames=("degree", "coef0"))
def _kid_values(a, b, idx_a, idx_b, degree: int = 3, coef0: float = 1.0):
    return jax.lax.map(lambda ij: _mmd2(a[ij[0]], b[ij[1]], degree, coef0), (idx_a, idx_b))


def kid_values(feats_a, feats_b, idx_a, idx_b, *, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """Unbiased MMD^2 of each subset pair (rows of ``idx_a``, ``idx_b``) -> float [num_subsets]."""
    a, b = jnp.asarray(feats_a), jnp.asarray(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(f"KID needs features [N, D] of equal D; got {a.shape} and {b.shape}")
    return np.asarray(_kid_values(a, b, jnp.asarray(idx_a), jnp.asarray(idx_b),
                                  degree=degree, coef0=coef0), np.float64)


def kid(feats_a, feats_b, *, num_subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased squared MMD between two feature sets [N, D]."""
    idx_a, idx_b = subset_indices(len(feats_a), len(feats_b), num_subsets, subset_size, seed)
    values = kid_values(feats_a, feats_b, idx_a, idx_b, degree=degree, coef0=coef0)
    return float(values.mean()), float(values.std())
