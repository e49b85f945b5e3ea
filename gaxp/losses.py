"""Adversarial losses as plain functions of discriminator logits.

Every loss is a pair of functions ``d(real, fake)`` and ``g(real, fake)`` of the discriminator's
raw outputs (logits for the sigmoid losses, critic values for the Wasserstein family) for a batch
of real and a batch of generated samples, each returning a scalar to *minimise*. ``g`` takes the
real logits too because the relativistic losses need them; the others ignore them (and the step
skips the extra discriminator pass for them, see ``Loss.g_needs_real``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from gaxp.errors import ConfigError
from gaxp.registry import LOSSES, register

Array = jax.Array


class Loss(NamedTuple):
    """What a ``loss`` entry returns: D's and G's loss as functions of D's raw outputs on a real
    and a generated batch (each a scalar to minimise). ``g_needs_real``: G's loss reads the real
    outputs too (the step then runs D on the real batch in the G step as well)."""

    d: Callable[[Array, Array], Array]
    g: Callable[[Array, Array], Array]
    g_needs_real: bool = False


def get(spec) -> Loss:
    """The ``Loss`` of a ``LossSpec``: its entry's factory, given its own settings if it has any."""
    entry = LOSSES.entry(spec.name)
    return entry.make(spec.params) if entry.params is not None else entry.make()


def _mean(x: Array) -> Array:
    return jnp.mean(x.astype(jnp.float32))


def minimax_d(real: Array, fake: Array) -> Array:
    """Discriminator loss of the original GAN (Goodfellow et al. 2014, eq. 1).

    ``-log D(x) - log(1 - D(G(z)))`` with ``D = sigmoid(logits)``, written with softplus for
    numerical stability: ``softplus(-real) + softplus(fake)``.
    """
    return _mean(jax.nn.softplus(-real)) + _mean(jax.nn.softplus(fake))


def minimax_g(real: Array, fake: Array) -> Array:
    """Saturating generator loss of the original GAN (Goodfellow et al. 2014): minimise
    ``log(1 - D(G(z))) = -softplus(fake)``. Its gradient vanishes when D rejects the fakes."""
    del real
    return -_mean(jax.nn.softplus(fake))


def ns_g(real: Array, fake: Array) -> Array:
    """Non-saturating generator loss (Goodfellow et al. 2014, section 3): minimise
    ``-log D(G(z)) = softplus(-fake)``."""
    del real
    return _mean(jax.nn.softplus(-fake))


def wasserstein_d(real: Array, fake: Array) -> Array:
    """Critic loss of WGAN (Arjovsky et al. 2017): ``E[f(G(z))] - E[f(x)]``. Needs a Lipschitz
    constraint on the critic: weight clipping (``loss.clip``), a gradient penalty (WGAN-GP,
    Gulrajani et al. 2017, ``loss.gp_weight``) or spectral norm."""
    return _mean(fake) - _mean(real)


def wasserstein_g(real: Array, fake: Array) -> Array:
    """Generator loss of WGAN (Arjovsky et al. 2017): ``-E[f(G(z))]``. Also the generator loss
    of the hinge GAN."""
    del real
    return -_mean(fake)


def hinge_d(real: Array, fake: Array) -> Array:
    """Hinge discriminator loss (Lim & Ye 2017, "Geometric GAN"; used by Miyato et al. 2018
    and BigGAN): ``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]``."""
    return _mean(jax.nn.relu(1.0 - real)) + _mean(jax.nn.relu(1.0 + fake))


def lsgan_d(real: Array, fake: Array) -> Array:
    """Least-squares discriminator loss (Mao et al. 2017, eq. 2 with a=0, b=1):
    ``1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]``."""
    return 0.5 * _mean(jnp.square(real - 1.0)) + 0.5 * _mean(jnp.square(fake))


def lsgan_g(real: Array, fake: Array) -> Array:
    """Least-squares generator loss (Mao et al. 2017, eq. 2 with c=1): ``1/2 E[(D(G(z)) - 1)^2]``."""
    del real
    return 0.5 * _mean(jnp.square(fake - 1.0))


def relativistic_d(real: Array, fake: Array) -> Array:
    """Relativistic average standard GAN discriminator loss (RaSGAN, Jolicoeur-Martineau 2018,
    eq. 16): ``-E[log sigmoid(C(x) - E C(G(z)))] - E[log(1 - sigmoid(C(G(z)) - E C(x)))]``."""
    real, fake = real.astype(jnp.float32), fake.astype(jnp.float32)
    return _mean(jax.nn.softplus(-(real - jnp.mean(fake)))) + _mean(
        jax.nn.softplus(fake - jnp.mean(real))
    )


def relativistic_g(real: Array, fake: Array) -> Array:
    """Relativistic average standard GAN generator loss (RaSGAN, Jolicoeur-Martineau 2018):
    the discriminator loss with the roles of real and fake swapped."""
    return relativistic_d(fake, real)


# The built-in losses register exactly as a plugin's do.
@register.loss("minimax")
def minimax() -> Loss:
    return Loss(minimax_d, minimax_g)


@register.loss("ns")
def ns() -> Loss:
    return Loss(minimax_d, ns_g)


@register.loss("wgan")
def wgan() -> Loss:
    return Loss(wasserstein_d, wasserstein_g)


@register.loss("hinge")
def hinge() -> Loss:
    return Loss(hinge_d, wasserstein_g)


@dataclass(frozen=True)
class LsganParams:
    """``output``: the least squares of D's ``raw`` output (Mao et al. 2017), or of its
    ``sigmoid`` probability (compare_gan's LSGAN, Lucic et al. 2018)."""

    output: str = "raw"  # raw | sigmoid


@register.loss("lsgan", params=LsganParams)
def lsgan(p: LsganParams | None = None) -> Loss:
    p = p or LsganParams()
    if p.output == "raw":
        return Loss(lsgan_d, lsgan_g)
    if p.output != "sigmoid":
        raise ConfigError(f"loss.output of loss=lsgan must be raw or sigmoid, got {p.output!r}")
    s = jax.nn.sigmoid
    return Loss(lambda r, f: lsgan_d(s(r), s(f)), lambda r, f: lsgan_g(r, s(f)))


@register.loss("relativistic")
def relativistic() -> Loss:
    return Loss(relativistic_d, relativistic_g, g_needs_real=True)
