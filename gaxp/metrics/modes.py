"""Mode coverage of 2D mixtures of Gaussians (the PacGAN protocol: Lin et al. 2018, "PacGAN: the
power of two samples in generative adversarial networks", NeurIPS, Sec. 5; after VEEGAN,
Srivastava et al. 2017).

Each generated sample is registered to its nearest mode by Mahalanobis distance (isotropic: the
Euclidean distance over sigma). It is *high quality* when that distance is below 3 (3 standard
deviations). A mode is *covered* when at least ``min_count`` high-quality samples are registered
to it. The default ``min_count=20`` (of 2,500 samples) follows our reading of PacGAN's text, which
counts a mode as lost when fewer than 20 generated samples are registered to it; the authors'
public code (``MetricLogger`` in fjxmlzn/PacGAN) counts a mode with at least one high-quality
sample, which ``min_count=1`` reproduces. The paper's text could not be re-read offline here. *Reverse KL* is KL(q || p) between the histogram q of
high-quality samples over modes and the uniform target p (0 for a perfect sampler, log K when
everything falls on one of K modes).

A perfect sampler puts 1 - exp(-9/2) = 98.89% of its samples within 3 sigma in 2D.
"""

from __future__ import annotations

import numpy as np

from gaxp.errors import ConfigError


def mode_histogram(samples, modes, sigma: float, threshold: float = 3.0) -> tuple[np.ndarray, int]:
    """(high-quality samples per mode [K], number of high-quality samples)."""
    x = np.asarray(samples, np.float64)
    m = np.asarray(modes, np.float64)
    if x.ndim != 2 or m.ndim != 2 or x.shape[1] != m.shape[1]:
        raise ConfigError(f"mode_coverage needs samples [N, D] and modes [K, D]; got {x.shape} "
                          f"and {m.shape}")
    d2 = ((x[:, None, :] - m[None, :, :]) ** 2).sum(-1) / float(sigma) ** 2
    nearest = d2.argmin(axis=1)
    good = np.sqrt(d2[np.arange(len(x)), nearest]) < threshold
    counts = np.bincount(nearest[good], minlength=len(m))
    return counts, int(good.sum())


def mode_coverage(samples, modes, sigma: float, *, min_count: int = 20,
                  threshold: float = 3.0) -> dict:
    """``modes`` covered, ``hq_frac`` (fraction within ``threshold`` sigma of its nearest mode)
    and ``reverse_kl`` (histogram of high-quality samples vs uniform; inf when there are none)."""
    if len(samples) < 1:
        raise ConfigError("mode_coverage needs at least one sample")
    counts, good = mode_histogram(samples, modes, sigma, threshold)
    k = len(counts)
    if good:
        q = counts[counts > 0] / good
        reverse_kl = float((q * np.log(q * k)).sum())
    else:
        reverse_kl = float("inf")
    return {"modes": int((counts >= min_count).sum()), "hq_frac": good / len(samples),
            "reverse_kl": reverse_kl, "counts": counts}
