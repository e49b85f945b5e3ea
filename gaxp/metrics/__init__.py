"""Evaluation metrics for generative models on plain arrays, and the in-loop evaluator.

    frechet_distance(mu1, sigma1, mu2, sigma2)   FID / fd_<classifier> (float64)
    kid(feats_a, feats_b, ...)                    KID mean, std (cubic kernel, unbiased MMD^2)
    prdc(real, fake, nearest_k)                   precision, recall, density, coverage
    inception_score(logits, splits)               IS mean, std
    mode_coverage(samples, modes, sigma)          toy 2D: modes covered, hq_frac, reverse_kl
"""

from gaxp.metrics.fid import fid_from_features, frechet_distance, moments
from gaxp.metrics.inception_score import inception_score
from gaxp.metrics.kid import kid
from gaxp.metrics.modes import mode_coverage
from gaxp.metrics.prdc import prdc

__all__ = ["fid_from_features", "frechet_distance", "inception_score", "kid", "mode_coverage",
           "moments", "prdc"]
