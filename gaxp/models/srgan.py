"""SRGAN's networks (Ledig et al. 2017, "Photo-realistic single image super-resolution using a
generative adversarial network").

* ``SRResNet`` (G): 9x9 conv + PReLU; ``g_depth`` residual blocks (3x3 conv, norm, PReLU, 3x3
  conv, norm, + input); 3x3 conv + norm + the long skip; one sub-pixel stage per factor of the
  scale (3x3 conv to r^2 * width channels, ``pixel_shuffle`` by r, PReLU; Shi et al. 2016); 9x9
  conv to the image, tanh. The paper: 16 blocks of 64 channels, two x2 stages (x4).
* ``SRDiscriminator`` (D): 3x3 conv + LeakyReLU, then per level a stride-2 4x4 conv and a
  stride-1 3x3 conv with norm and LeakyReLU (widths doubling from ``d_width``), a dense layer of
  ``16 * d_width`` units (1024 at the paper's 64), LeakyReLU, one logit. The paper's stride-2
  convolutions are 3x3; 4x4 here (``blocks.Down2x``, exact halving, fast on XLA:CPU).

Scales: products of x2 and x3 sub-pixel stages (2, 3, 4, 6, 8, ...), given by the data (target
size / source size) and checked before anything is built.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gaxp.specs import ModelSpec
from gaxp.errors import ConfigError
from gaxp.models.blocks import Conv, Dense, Down2x, Norm, lrelu
from gaxp.models.unet import _check_divisible


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
    """Depth-to-space as PyTorch's ``PixelShuffle(r)`` in NHWC: ``[B, H, W, C * r^2] ->
    [B, H r, W r, C]`` with ``out[b, h r + i, w r + j, c] = x[b, h, w, c r^2 + i r + j]``."""
    b, h, w, crr = x.shape
    c = crr // (r * r)
    x = x.reshape(b, h, w, c, r, r).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * r, w * r, c)


def scale_stages(scale: int) -> list[int] | None:
    """x2 and x3 sub-pixel stages whose product is ``scale`` (x2 first), or None."""
    stages, rest = [], scale
    for r in (2, 3):
        while rest % r == 0:
            stages.append(r)
            rest //= r
    return stages if rest == 1 and stages else None


class PReLU(nnx.Module):
    """max(0, x) + a * min(0, x) with a learned slope per channel (He et al. 2015), a = 0.25."""

    def __init__(self, features: int):
        self.a = nnx.Param(jnp.full((features,), 0.25, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.where(x >= 0, x, self.a[...].astype(x.dtype) * x)


class SRBlock(nnx.Module):
    def __init__(self, spec: ModelSpec, w: int, *, rngs: nnx.Rngs):
        kw = dict(sn=spec.g_spectral_norm, init=spec.init, rngs=rngs)
        self.c1, self.c2 = Conv(w, w, 3, **kw), Conv(w, w, 3, **kw)
        self.n1 = Norm(spec.g_norm, w, momentum=spec.bn_momentum, rngs=rngs)
        self.n2 = Norm(spec.g_norm, w, momentum=spec.bn_momentum, rngs=rngs)
        self.act = PReLU(w)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        h = self.act(self.n1(self.c1(x, train=train), train=train))
        return x + self.n2(self.c2(h, train=train), train=train)


class SRResNet(nnx.Module):
    def __init__(self, spec: ModelSpec, c_in: int, c_out: int, scale: int, *, rngs: nnx.Rngs):
        w, kw = spec.g_width, dict(sn=spec.g_spectral_norm, init=spec.init, rngs=rngs)
        self.stages = tuple(scale_stages(scale))
        self.inp, self.inp_act = Conv(c_in, w, 9, **kw), PReLU(w)
        self.blocks = nnx.List([SRBlock(spec, w, rngs=rngs) for _ in range(spec.g_depth)])
        self.mid = Conv(w, w, 3, **kw)
        self.mid_norm = Norm(spec.g_norm, w, momentum=spec.bn_momentum, rngs=rngs)
        self.ups = nnx.List([Conv(w, w * r * r, 3, **kw) for r in self.stages])
        self.up_acts = nnx.List([PReLU(w) for _ in self.stages])
        self.out = Conv(w, c_out, 9, **kw)

    def __call__(self, c: jax.Array, *, train: bool) -> jax.Array:
        h = skip = self.inp_act(self.inp(c, train=train))
        for block in self.blocks:
            h = block(h, train=train)
        h = skip + self.mid_norm(self.mid(h, train=train), train=train)
        for r, up, act in zip(self.stages, self.ups, self.up_acts):
            h = act(pixel_shuffle(up(h, train=train), r))
        return jnp.tanh(self.out(h, train=train))


class SRDiscriminator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, *, rngs: nnx.Rngs):
        w, kw, m = spec.d_width, dict(sn=spec.spectral_norm, init=spec.init, rngs=rngs), spec.bn_momentum
        widths = [w * 2 ** i for i in range(spec.d_depth + 1)]
        self.inp = Conv(shape[-1], w, 3, **kw)
        self.downs = nnx.List([Down2x(a, b, **kw) for a, b in zip(widths, widths[1:])])
        self.convs = nnx.List([Conv(b, b, 3, **kw) for b in widths[1:]])
        self.norms = nnx.List([Norm(spec.d_norm, b, momentum=m, rngs=rngs)
                               for b in widths[1:] for _ in (0, 1)])
        f = 2 ** spec.d_depth
        self.fc = Dense((shape[0] // f) * (shape[1] // f) * widths[-1], 16 * w, **kw)
        self.head = Dense(16 * w, 1, **kw)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        h = lrelu(self.inp(x, train=train))
        for i, (down, conv) in enumerate(zip(self.downs, self.convs)):
            h = lrelu(self.norms[2 * i](down(h, train=train), train=train))
            h = lrelu(self.norms[2 * i + 1](conv(h, train=train), train=train))
        h = lrelu(self.fc(h.reshape(h.shape[0], -1), train=train))
        return self.head(h, train=train)[:, 0]


def check(spec: ModelSpec, shape, image: bool) -> None:

    if not image or len(shape) != 2 or not all(isinstance(s, tuple) for s in shape):
        raise ConfigError("model=srgan super-resolves images: use it with task=srgan and "
                          "low-res/high-res pairs (data=mnist_sr, paired_folder)")
    (th, tw, _), (sh, sw, _) = shape
    scale = th // sh
    if th % sh or tw % sw or tw // sw != scale or scale < 2:
        raise ConfigError(f"model=srgan cannot upsample {sh}x{sw} px to {th}x{tw} px: it needs "
                          "one integer scale >= 2 for both sides")
    if scale_stages(scale) is None:
        raise ConfigError(f"model=srgan cannot produce x{scale} super-resolution: its sub-pixel "
                          "stages make x2 and x3 and their products (2, 3, 4, 6, 8, ...); use "
                          "another low-res size (data.name=lowres2 or lowres4)")
    _check_divisible("srgan", (th, tw), spec.d_depth, "model.d_depth")


def build(spec: ModelSpec, shape, image: bool, rngs: nnx.Rngs):
    target, source = shape
    return (SRResNet(spec, source[-1], target[-1], target[0] // source[0], rngs=rngs),
            SRDiscriminator(spec, target, rngs=rngs))
