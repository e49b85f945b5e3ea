"""Discriminator regularizers: penalties added to the discriminator loss.

Each penalty is a plain function ``penalty(d_fn, real, fake, key) -> scalar`` where ``d_fn`` maps
a batch of inputs to per-sample logits with the discriminator's parameters held fixed by the
caller (the step differentiates the total loss with respect to those parameters).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
DFn = Callable[[Array], Array]


def _grad_norms(d_fn: DFn, x: Array) -> Array:
    """Per-sample L2 norm of dD(x)/dx. Valid because D scores each sample independently
    (per-sample BatchNorm statistics would couple them; WGAN-GP recommends no BatchNorm in D)."""
    grads = jax.grad(lambda inp: jnp.sum(d_fn(inp)))(x)
    flat = grads.reshape(grads.shape[0], -1).astype(jnp.float32)
    return jnp.sqrt(jnp.sum(jnp.square(flat), axis=1) + 1e-12)


def wgan_gp(d_fn: DFn, real: Array, fake: Array, key: Array) -> Array:
    """Two-sided gradient penalty of WGAN-GP (Gulrajani et al. 2017, Algorithm 1):
    ``E[(||grad D(x_hat)|| - 1)^2]`` at ``x_hat = eps * x + (1 - eps) * G(z)``, eps ~ U[0, 1]
    per sample."""
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    x_hat = eps * real + (1.0 - eps) * fake
    return jnp.mean(jnp.square(_grad_norms(d_fn, x_hat) - 1.0))


REGULARIZERS: dict[str, Callable[[DFn, Array, Array, Array], Array]] = {
    "wgan_gp": wgan_gp,
}
