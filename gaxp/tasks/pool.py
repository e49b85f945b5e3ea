"""A history of generated images for D (Shrivastava et al. 2017, "Learning from simulated and
unsupervised images through adversarial training"; CycleGAN's image buffer of 50, Zhu et al. 2017).

The pool is part of the train state (``GANState.pool``: ``{"a": [size, ...], "b": [size, ...],
"n": filled}`` for CycleGAN's two directions), so it is checkpointed with it and a resumed run
matches an uninterrupted one bit for bit. ``query`` goes through the batch one image at a time,
as the paper's buffer does:

* while the pool is not full, the image is stored in the next free slot and D sees it;
* once it is full, with probability 1/2 D sees a uniformly drawn stored image instead, and that
  slot receives the new image; otherwise D sees the new image and the pool is unchanged.

Randomness comes from the step's key only. ``size == 0`` turns the pool off.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init(size: int, shape_a: tuple, shape_b: tuple) -> dict | None:
    """An empty pool of ``size`` images per domain (None when ``size`` is 0)."""
    if size <= 0:
        return None
    return {"a": jnp.zeros((size,) + tuple(shape_a), jnp.float32),
            "b": jnp.zeros((size,) + tuple(shape_b), jnp.float32),
            "n": jnp.zeros((), jnp.int32)}


def query(images: jax.Array, stored: jax.Array, filled: jax.Array, key: jax.Array):
    """What D sees for ``images`` [B, ...]: (images for D, new stored images, new fill count,
    [B] bool: the image came from the pool). ``stored``: [size, ...], ``filled``: slots in use."""
    size = stored.shape[0]

    def one(carry, inputs):
        stored, filled = carry
        img, k = inputs
        k_swap, k_idx = jax.random.split(k)
        filling = filled < size
        swap = ~filling & jax.random.bernoulli(k_swap, 0.5)
        idx = jnp.where(filling, jnp.minimum(filled, size - 1),
                        jax.random.randint(k_idx, (), 0, size))
        old = stored[idx]
        out = jnp.where(swap, old, img)
        stored = stored.at[idx].set(jnp.where(filling | swap, img, old))
        return (stored, filled + filling.astype(filled.dtype)), (out, swap)

    keys = jax.random.split(key, images.shape[0])
    (stored, filled), (out, used) = jax.lax.scan(one, (stored, filled),
                                                 (images.astype(stored.dtype), keys))
    return out, stored, filled, used


def query_both(pool: dict, fake_a: jax.Array, fake_b: jax.Array, key: jax.Array):
    """CycleGAN: both directions through their pools (filled together, one count). Returns
    (fake_a, fake_b for D, new pool, fraction of D's fakes taken from the pool)."""
    k_a, k_b = jax.random.split(key)
    out_a, a, n, used_a = query(fake_a, pool["a"], pool["n"], k_a)
    out_b, b, _, used_b = query(fake_b, pool["b"], pool["n"], k_b)
    frac = jnp.mean(jnp.concatenate([used_a, used_b]).astype(jnp.float32))
    return out_a, out_b, {"a": a, "b": b, "n": n}, frac
