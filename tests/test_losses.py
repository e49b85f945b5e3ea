"""Known values of every adversarial loss, computed by hand from each paper's formula, plus the
properties that define them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaxp.losses import LOSSES, get as _get_loss
from gaxp.specs import LossSpec

REAL = jnp.array([1.0, -2.0])
FAKE = jnp.array([0.5, -1.0])

# (d loss, g loss) for REAL, FAKE from the formulas in -log(sigmoid) form, in plain Python.
KNOWN = {
    "minimax": (1.8637641851297626, -0.6436693358491647),
    "ns": (1.8637641851297626, 0.8936693358491647),
    "wgan": (0.25, 0.25),
    "hinge": (2.25, 0.25),
    "lsgan": (2.5625, 1.0625),
    "relativistic": (1.974745951740895, 1.4747459517408945),
}


def test_every_registered_loss_has_a_known_value():
    assert set(KNOWN) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_values(name):
    loss = _get_loss(LossSpec(name))
    d, g = KNOWN[name]
    np.testing.assert_allclose(float(loss.d(REAL, FAKE)), d, rtol=1e-6)
    np.testing.assert_allclose(float(loss.g(REAL, FAKE)), g, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_losses_are_stable_for_extreme_logits(name):
    big = jnp.array([80.0, -80.0, 1e4])
    loss = _get_loss(LossSpec(name))
    for value in (loss.d(big, -big), loss.g(big, -big), jax.grad(loss.g, argnums=1)(big, -big)):
        assert np.all(np.isfinite(np.asarray(value)))


def test_saturating_generator_gradient_vanishes_but_non_saturating_does_not():
    """Goodfellow et al. 2014, section 3: when D confidently rejects fakes, log(1 - D(G(z)))
    saturates while -log D(G(z)) keeps a strong gradient."""
    fake = jnp.array([-10.0])
    g_sat = jax.grad(_get_loss(LossSpec("minimax")).g, argnums=1)(REAL[:1], fake)
    g_ns = jax.grad(_get_loss(LossSpec("ns")).g, argnums=1)(REAL[:1], fake)
    assert abs(float(g_sat[0])) < 1e-4
    np.testing.assert_allclose(float(g_ns[0]), -1.0, atol=1e-4)


def test_optimal_discriminator_value_of_minimax_is_2_log_2():
    """At D = 1/2 everywhere (logits 0) the minimax D loss is 2 log 2 (Goodfellow et al. 2014, Thm 1)."""
    zeros = jnp.zeros(4)
    np.testing.assert_allclose(float(_get_loss(LossSpec("minimax")).d(zeros, zeros)), 2 * np.log(2), rtol=1e-6)


def test_relativistic_is_symmetric_in_real_and_fake():
    np.testing.assert_allclose(float(_get_loss(LossSpec("relativistic")).g(REAL, FAKE)),
                               float(_get_loss(LossSpec("relativistic")).d(FAKE, REAL)), rtol=1e-6)
