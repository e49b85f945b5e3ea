"""Metrics of class-conditional generators: does a sample requested as class k look like class k?

* ``cond_acc``: the fraction of generated samples that the domain classifier assigns to the class
  they were requested with (overall and per class, ``cond_acc/<k>``). The classifier is the
  dataset's LeNet (``gaxp.metrics.classifier``; the AC-GAN paper's and Miyato & Koyama's
  "classification accuracy of generated images" idea) for images and the nearest mode for toy 2D
  mixtures, whose labels are mode indices (exact: a sample belongs to the mode it is closest to).
* ``fd_class/<k>``: the Fréchet distance between the generated samples of class k and the real
  examples of class k, in the classifier's feature space for images (float64 moments, as
  ``gaxp.metrics.fid``) and in the plane for toy data, where the real class k is exactly
  N(mode_k, sigma^2 I). ``fd_class_mean`` is their mean (an intra-class FD, as Miyato & Koyama
  2018 report intra-FID).
"""

from __future__ import annotations

import numpy as np

from gaxp.metrics.fid import frechet_distance, moments


def class_accuracy(predicted: np.ndarray, requested: np.ndarray, num_classes: int) -> dict:
    """``{cond_acc: overall, cond_acc/<k>: per requested class}``."""
    hit = np.asarray(predicted) == np.asarray(requested)
    out = {"cond_acc": float(hit.mean())}
    for k in range(num_classes):
        mask = requested == k
        out[f"cond_acc/{k}"] = float(hit[mask].mean()) if mask.any() else float("nan")
    return out


def class_fd(real: np.ndarray, real_y: np.ndarray, fake: np.ndarray, fake_y: np.ndarray,
             num_classes: int) -> dict:
    """``fd_class/<k>`` between real and generated features of each class, and their mean."""
    out = {}
    for k in range(num_classes):
        r, f = real[real_y == k], fake[fake_y == k]
        out[f"fd_class/{k}"] = (frechet_distance(*moments(r), *moments(f))
                                if len(r) > 1 and len(f) > 1 else float("nan"))
    out["fd_class_mean"] = float(np.mean([out[f"fd_class/{k}"] for k in range(num_classes)]))
    return out


def nearest_mode(points: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """Index of the nearest mode centre of each point [N, 2] -> [N]."""
    d2 = ((np.asarray(points, np.float64)[:, None] - np.asarray(modes, np.float64)[None]) ** 2)
    return d2.sum(-1).argmin(axis=1)


def point_metrics(samples: np.ndarray, requested: np.ndarray, modes: np.ndarray,
                  sigma: float) -> dict:
    """Toy 2D: nearest-mode accuracy, and per-class FD against N(mode_k, sigma^2 I)."""
    k = len(modes)
    out = class_accuracy(nearest_mode(samples, modes), requested, k)
    cov = np.eye(2) * float(sigma) ** 2
    for c in range(k):
        f = np.asarray(samples, np.float64)[requested == c]
        out[f"fd_class/{c}"] = (frechet_distance(np.asarray(modes[c], np.float64), cov,
                                                 *moments(f)) if len(f) > 1 else float("nan"))
    out["fd_class_mean"] = float(np.mean([out[f"fd_class/{c}"] for c in range(k)]))
    return out
