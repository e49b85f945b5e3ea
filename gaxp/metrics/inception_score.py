"""Inception Score (Salimans et al. 2016, "Improved techniques for training GANs", NeurIPS):
exp(E_x KL(p(y|x) || p(y))), computed on ``splits`` consecutive equal chunks of the samples and
reported as mean and standard deviation over chunks (10 splits, as in the original code). With a
domain classifier's logits instead of InceptionV3's 1008 it is the classifier IS (``is_mnist``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from gaxp.errors import ConfigError


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the Inception Score of class logits [N, C] over ``splits`` chunks."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2:
        raise ConfigError(f"inception_score needs logits [N, classes]; got shape {logits.shape}")
    n = logits.shape[0]
    if splits < 1 or n < splits:
        raise ConfigError(f"inception_score with {splits} splits needs at least {splits} samples "
                          f"(got {n})")
    log_p = log_softmax(logits, axis=1)
    scores = []
    for chunk in np.array_split(log_p, splits):
        log_marginal = np.log(np.exp(chunk).mean(axis=0))
        kl = (np.exp(chunk) * (chunk - log_marginal)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
