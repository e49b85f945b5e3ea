"""The metric functions on plain arrays against independent implementations and known values."""

import numpy as np
import pytest
import scipy.linalg

from gaxp.errors import ConfigError
from gaxp.metrics import frechet_distance, inception_score, kid, mode_coverage, moments, prdc
from gaxp.metrics.kid import kid_values, subset_indices


def _scipy_fid(a, b):
    """The reference route (pytorch-fid): float64 moments, scipy.linalg.sqrtm of S1 S2."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_fid_matches_scipy_float64():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 64)).astype(np.float32)
    b = (rng.normal(size=(1500, 64)) @ rng.normal(size=(64, 64)) * 0.3 + 0.5).astype(np.float32)
    got = frechet_distance(*moments(a), *moments(b))
    np.testing.assert_allclose(got, _scipy_fid(a, b), rtol=1e-6)
    np.testing.assert_allclose(frechet_distance(*moments(a), *moments(a)), 0.0, atol=1e-9)


def test_fid_known_value_for_gaussians():
    # Diagonal covariances: d^2 = |mu1-mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    got = frechet_distance(np.zeros(3), s1, np.ones(3), s2)
    np.testing.assert_allclose(got, 3 + 1 + 0 + 4, rtol=1e-12)


def _numpy_mmd2(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d, m = x.shape[1], x.shape[0]
    k = lambda p, q: (p @ q.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_kid_matches_numpy_on_identical_subsets():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(600, 32)).astype(np.float32)
    b = (rng.normal(size=(500, 32)) * 1.2 + 0.2).astype(np.float32)
    ia, ib = subset_indices(600, 500, num_subsets=8, subset_size=200, seed=3)
    got = kid_values(a, b, ia, ib)
    want = [_numpy_mmd2(a[i], b[j]) for i, j in zip(ia, ib)]
    np.testing.assert_allclose(got, want, rtol=2e-4)
    mean, std = kid(a, b, num_subsets=8, subset_size=200, seed=3)
    np.testing.assert_allclose([mean, std], [np.mean(want), np.std(want)], rtol=2e-4)
    same, _ = kid(a[:300], a[300:], num_subsets=8, subset_size=200)
    assert abs(same) < 0.1 * mean


def test_prdc_matches_the_prdc_package():
    prdc_pkg = pytest.importorskip("prdc")
    rng = np.random.default_rng(2)
    real = rng.normal(size=(700, 48)).astype(np.float32)
    fake = (rng.normal(size=(600, 48)) * 1.1 + 0.1).astype(np.float32)
    for k in (3, 5):
        want = prdc_pkg.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
        got = prdc(real, fake, nearest_k=k)
        for key in ("precision", "recall", "density", "coverage"):
            np.testing.assert_allclose(got[key], want[key], atol=1e-6, err_msg=f"{key} k={k}")


def test_inception_score_known_values():
    confident = np.eye(10)[np.arange(1000) % 10] * 50.0  # one-hot, uniform over classes
    mean, std = inception_score(confident, splits=10)
    np.testing.assert_allclose([mean, std], [10.0, 0.0], atol=1e-6)
    mean, _ = inception_score(np.zeros((100, 10)), splits=10)  # uniform p(y|x)
    np.testing.assert_allclose(mean, 1.0, atol=1e-12)


def test_perfect_toy_sampler_covers_every_mode():
    from gaxp.data.toy2d import MIXTURES, sample_mixture

    for name, (modes_fn, sigma) in MIXTURES.items():
        modes = modes_fn()
        x = sample_mixture(np.random.default_rng(0), modes, sigma, 100_000)
        out = mode_coverage(x, modes, sigma)
        assert out["modes"] == len(modes), name
        np.testing.assert_allclose(out["hq_frac"], 1 - np.exp(-4.5), atol=2e-3)  # 98.89%
        assert out["reverse_kl"] < 1e-3


def test_collapsed_sampler_scores_one_mode():
    from gaxp.data.toy2d import ring_modes

    modes = ring_modes()
    x = modes[3] + 0.01 * np.random.default_rng(0).normal(size=(2500, 2))
    out = mode_coverage(x, modes, 0.01)
    assert out["modes"] == 1
    np.testing.assert_allclose(out["reverse_kl"], np.log(8), rtol=1e-9)
    far = mode_coverage(x + 10.0, modes, 0.01)
    assert far["modes"] == 0 and far["hq_frac"] == 0 and far["reverse_kl"] == float("inf")


@pytest.mark.parametrize("call, match", [
    (lambda: kid(np.zeros((50, 4)), np.zeros((50, 4)), subset_size=100), "at least 100 samples"),
    (lambda: prdc(np.zeros((5, 4)), np.zeros((50, 4)), nearest_k=5), "more than 5 samples"),
    (lambda: inception_score(np.zeros((5, 10)), splits=10), "at least 10 samples"),
    (lambda: moments(np.zeros((1, 4))), "at least 2 feature vectors"),
])
def test_too_few_samples_is_a_clear_error(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
