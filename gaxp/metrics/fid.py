"""Fréchet distance between Gaussians fitted to features (Heusel et al. 2017, "GANs trained by a
two time-scale update rule converge to a local Nash equilibrium", NeurIPS; FID when the features
are InceptionV3 pool features, ``fd_<classifier>`` in a domain classifier's feature space).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

Moments and the matrix square root are computed in float64 on the host. The trace of the square
root uses the symmetric form tr((S1 S2)^(1/2)) = tr((A S2 A)^(1/2)) with A = S1^(1/2), whose
eigenvalues are real and non-negative, so no complex ``sqrtm`` is needed (the same value as
``scipy.linalg.sqrtm(S1 @ S2)``, the reference implementation's route, for PSD matrices).
"""

from __future__ import annotations

import numpy as np

from gaxp.errors import ConfigError


def moments(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D], in float64."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ConfigError(f"Fréchet distance needs at least 2 feature vectors [N, D]; got shape "
                          f"{x.shape}")
    mu = x.mean(axis=0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, in float64."""
    a = _psd_sqrt(np.asarray(sigma1, np.float64))
    m = a @ np.asarray(sigma2, np.float64) @ a
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ConfigError(f"Fréchet distance needs matching shapes: mu {mu1.shape} vs {mu2.shape},"
                          f" sigma {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2)
    return float(max(value, 0.0))


def fid_from_features(real, fake) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D]."""
    return frechet_distance(*moments(real), *moments(fake))
