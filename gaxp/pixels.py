"""Pixel values: the numeric helpers that training and evaluation share (below both).

gaxp's common image convention is float32 in [-1, 1] (``signed``): grids, metrics and feature
networks read generated images in that range. An architecture may train in another range, declared
when it is registered (``gaxp.register.arch(..., pixels="unit")``): ``unit`` is [0, 1], the range of
sigmoid generators such as the InfoGAN-style networks of Lucic et al. (2018). The step feeds D
real images in the arch's range (``to_float``), and every sampling path maps G's output back to
the common range (``to_signed``), so a gradient penalty sees exactly the inputs of the paper's D.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PIXELS = ("signed", "unit")  # [-1, 1] | [0, 1]


def to_float(x: jax.Array, pixels: str = "signed") -> jax.Array:
    """uint8 images in [0, 255] -> float32 in [-1, 1] (``signed``) or [0, 1] (``unit``); float
    data (toy points, images already converted) pass through."""
    if x.dtype != jnp.uint8:
        return x.astype(jnp.float32)
    if pixels == "unit":
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32) / 127.5 - 1.0


def to_signed(x: jax.Array, pixels: str = "signed") -> jax.Array:
    """Images in an arch's range -> the common [-1, 1]."""
    return x * 2.0 - 1.0 if pixels == "unit" else x
