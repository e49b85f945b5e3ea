"""Differentiable augmentations of NHWC image batches in [-1, 1] (DiffAugment).

DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training")
applies the same random transformation family T to real and generated images whenever D sees
them, in the D step and in the G step, and backpropagates through T into G. Every op here is a
differentiable function of the images (random parameters are drawn per sample from a key):

* ``color``: brightness shift in [-0.5, 0.5], saturation factor in [0, 2], contrast factor in
  [0.5, 1.5], each per sample;
* ``translation``: an integer shift of up to 1/8 of the image size per axis, zero padded;
* ``cutout``: a square of half the image size, at a random centre, set to zero.

The same ops are the transformation T of consistency regularization (bCR, Zhao et al. 2021).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gaxp.errors import ConfigError

Array = jax.Array


def _uniform(key: Array, x: Array, lo: float, hi: float) -> Array:
    return jax.random.uniform(key, (x.shape[0], 1, 1, 1), x.dtype, lo, hi)


def color(x: Array, key: Array) -> Array:
    """Brightness, saturation and contrast jitter (DiffAugment's ``color``)."""
    kb, ks, kc = jax.random.split(key, 3)
    x = x + _uniform(kb, x, -0.5, 0.5)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    x = (x - mean) * _uniform(ks, x, 0.0, 2.0) + mean
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) * _uniform(kc, x, 0.5, 1.5) + mean


def translation(x: Array, key: Array, ratio: float = 0.125) -> Array:
    """Shift each image by up to ``ratio`` of its size per axis, filling with zeros."""
    n, h, w, _ = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ky, kx = jax.random.split(key)
    dy = jax.random.randint(ky, (n,), -sy, sy + 1)
    dx = jax.random.randint(kx, (n,), -sx, sx + 1)
    padded = jnp.pad(x, ((0, 0), (sy, sy), (sx, sx), (0, 0)))

    def crop(img, oy, ox):
        return jax.lax.dynamic_slice(img, (sy - oy, sx - ox, 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, dy, dx)


def cutout(x: Array, key: Array, ratio: float = 0.5) -> Array:
    """Zero a square of ``ratio`` times the image size at a random centre (may leave the image)."""
    n, h, w, _ = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ky, kx = jax.random.split(key)
    cy = jax.random.randint(ky, (n, 1, 1), 0, h + (1 - ch % 2))
    cx = jax.random.randint(kx, (n, 1, 1), 0, w + (1 - cw % 2))
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = ((rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch)
              & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw))
    return x * (~inside)[..., None].astype(x.dtype)


def parse(policy) -> tuple[str, ...]:
    """Op names from ``"color,cutout"`` or ``["color", "cutout"]``."""
    items = policy.split(",") if isinstance(policy, str) else policy
    return tuple(str(op).strip() for op in items if str(op).strip())


def diff_augment(x: Array, policy, key: Array) -> Array:
    """Apply the ops of ``policy`` (e.g. ``("color", "translation", "cutout")``) in order."""
    for i, op in enumerate(parse(policy)):
        x = POLICIES[op](x, jax.random.fold_in(key, i))
    return x


def check_policy(path: str, policy, image: bool | None = None) -> None:
    """Raise ConfigError for an empty policy, an unknown op, or (``image=False``) point data."""
    ops = parse(policy)
    bad = [op for op in ops if op not in POLICIES]
    if not ops or bad:
        raise ConfigError(f"{path} must be a non-empty list of: {', '.join(POLICIES)} "
                          f"(got {list(ops)})")
    if image is False:
        raise ConfigError(f"{path}={list(ops)} needs image data (NHWC); it does not apply to points")


POLICIES = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}
