"""Progressive GAN (Karras et al. 2018, "Progressive Growing of GANs for Improved Quality,
Stability, and Variation"): G and D grow from 4x4 to the data size, one resolution per stage,
each new resolution faded in.

Every resolution's layers exist from the start, so the parameters, the optimizer states and the
checkpoints keep one layout through the whole run; a stage only selects how many of them run.

* G: z -> pixel norm -> dense to 4x4 -> 3x3 conv, then per resolution an upsampling block (nearest
  2x, two 3x3 convs); each block is followed by pixel norm (section 4.2) and each resolution has a
  1x1 ``toRGB`` with a linear output. At stage s with fade-in alpha the image is
  ``(1 - alpha) * up(toRGB_{s-1}(h_{s-1})) + alpha * toRGB_s(h_s)`` (section 3, figure 2).
* D mirrors it: a 1x1 ``fromRGB`` per resolution, downsampling blocks (two 3x3 convs, 2x2 average
  pooling), minibatch standard deviation (section 3) before the last 4x4 block, dense head. At
  stage s the features entering block s-1 are ``(1 - alpha) * fromRGB_{s-1}(pool(x)) + alpha *
  block_s(fromRGB_s(x))``.
* Equalized learning rate (section 4.1): weights are stored N(0, 1) and multiplied at run time by
  He's constant ``gain / sqrt(fan_in)``; LeakyReLU(0.2) everywhere but the outputs.

``stage`` is a static Python int (a different output size is a different program) and ``alpha`` a
traced scalar (``gaxp.models.growth`` derives it from the step). G records the stage and alpha of its last
training call in two statistics (``BatchStat``, checkpointed with the state), and a call without
``stage`` (sampling, evaluation, ``gaxp-sample``) draws at that stage and alpha and returns images
upsampled (nearest) to the data size, so sample grids and metrics need no knowledge of the growth.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gaxp.specs import ModelSpec
from gaxp.errors import ConfigError
from gaxp.models.blocks import lrelu, minibatch_std, pack
from gaxp.models import layers
from gaxp.models.layers import conv_transpose_2x

SQRT2 = math.sqrt(2.0)


def upsample(x: jax.Array, factor: int) -> jax.Array:
    """Nearest-neighbour upsampling of [..., H, W, C] by an integer factor."""
    if factor == 1:
        return x
    *lead, h, w, c = x.shape
    y = jnp.broadcast_to(x[..., :, None, :, None, :], (*lead, h, factor, w, factor, c))
    return y.reshape(*lead, h * factor, w * factor, c)


def downsample(x: jax.Array, factor: int) -> jax.Array:
    """Average pooling of [..., H, W, C] over factor x factor blocks."""
    if factor == 1:
        return x
    *lead, h, w, c = x.shape
    return x.reshape(*lead, h // factor, factor, w // factor, factor, c).mean(axis=(-4, -2))


def lerp(a: jax.Array, b: jax.Array, t) -> jax.Array:
    """``(1 - t) * a + t * b``: exactly ``a`` at t = 0 and exactly ``b`` at t = 1."""
    t = jnp.asarray(t).astype(b.dtype)
    return (1 - t) * a + t * b


def pixel_norm(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Pixelwise feature vector normalization (Karras et al. 2018, section 4.2): each pixel's
    feature vector divided by its root mean square over the channels."""
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


class Equalized(nnx.Module):
    """A kernel of ``shape`` (last axis = outputs) stored N(0, 1) and scaled at run time by He's
    constant ``gain / sqrt(fan_in)`` (equalized learning rate), and a zero-initialized bias."""

    def __init__(self, shape: tuple, *, gain: float = SQRT2, rngs: nnx.Rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32))
        self.bias = nnx.Param(jnp.zeros((shape[-1],), jnp.float32))
        self.scale = gain / math.sqrt(math.prod(shape[:-1]))

    def weight(self) -> jax.Array:
        return self.kernel[...] * self.scale


class EqDense(Equalized):
    def __init__(self, fan_in: int, out: int, *, gain: float = SQRT2, rngs: nnx.Rngs):
        super().__init__((fan_in, out), gain=gain, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.weight() + self.bias[...]


class EqConv(Equalized):
    """Stride-1 'SAME' convolution (NHWC, HWIO); a 1x1 kernel runs as a matmul."""

    def __init__(self, fan_in: int, out: int, size: int, *, gain: float = SQRT2, rngs: nnx.Rngs):
        super().__init__((size, size, fan_in, out), gain=gain, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.weight()
        if w.shape[0] == 1:
            return x @ w[0, 0] + self.bias[...]
        return layers.conv(x, w, (1, 1), "SAME") + self.bias[...]


# Nearest 2x upsampling then a 3x3 'SAME' conv, per axis: output 2m sees input rows m-1 (tap 0)
# and m (taps 1 + 2), output 2m+1 sees m (taps 0 + 1) and m+1 (tap 2); as a transposed conv of
# stride 2 (lax correlation of the 2x-dilated input, padding 2) its 4 taps are UP @ (w0, w1, w2).
UP = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]], np.float32)


def conv_upsampled(x: jax.Array, w: jax.Array) -> jax.Array:
    """``conv3x3_same(upsample(x, 2), w)`` without the upsampling: one stride-2 transposed conv
    with the 4x4 kernel ``UP w UP^T`` (``layers.conv_transpose_2x``, its fast sub-pixel form),
    16 instead of 36 multiply-adds per input pixel and channel pair (the fused up-conv that
    StyleGAN, Karras et al. 2019, also uses). Same values up to float rounding."""
    k = jnp.einsum("ai,bj,ijco->abco", UP, UP, w)
    return conv_transpose_2x(x, k)


class GBlock(nnx.Module):
    """Nearest 2x upsampling, then two 3x3 convs, each with LeakyReLU and pixel norm (the
    upsampling and the first conv fused: ``conv_upsampled``)."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.c1, self.c2 = EqConv(cin, cout, 3, rngs=rngs), EqConv(cout, cout, 3, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        h = pixel_norm(lrelu(conv_upsampled(h, self.c1.weight()) + self.c1.bias[...]))
        return pixel_norm(lrelu(self.c2(h)))


class DBlock(nnx.Module):
    """Two 3x3 convs with LeakyReLU, then 2x2 average pooling."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.c1, self.c2 = EqConv(cin, cin, 3, rngs=rngs), EqConv(cin, cout, 3, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return downsample(lrelu(self.c2(lrelu(self.c1(h)))), 2)


class ProGANGenerator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, *, rngs: nnx.Rngs):
        w, channels = spec.grow.g_widths, shape[-1]
        self.n, self.top = len(w), w[0]
        # The paper's first layer (4x4 "conv" on the latent) is a dense layer with gain sqrt(2)/4.
        self.fc = EqDense(spec.z_dim, 16 * w[0], gain=SQRT2 / 4, rngs=rngs)
        self.conv = EqConv(w[0], w[0], 3, rngs=rngs)
        self.blocks = nnx.List([GBlock(a, b, rngs=rngs) for a, b in zip(w, w[1:])])
        self.to_rgb = nnx.List([EqConv(c, channels, 1, gain=1.0, rngs=rngs) for c in w])
        # The stage and fade-in of the last training call: what a call without `stage` draws.
        self.stage = nnx.BatchStat(jnp.zeros((), jnp.int32))
        self.alpha = nnx.BatchStat(jnp.ones((), jnp.float32))

    def features(self, z: jax.Array, stage: int) -> list[jax.Array]:
        """The feature maps of resolutions 0..stage."""
        h = self.fc(pixel_norm(z)).reshape(z.shape[0], 4, 4, self.top)
        h = pixel_norm(lrelu(self.conv(pixel_norm(lrelu(h)))))
        feats = [h]
        for k in range(stage):
            feats.append(self.blocks[k](feats[-1]))
        return feats

    def __call__(self, z: jax.Array, *, train: bool, stage: int | None = None, alpha=None):
        if stage is None:
            return self._full_size(z)
        alpha = jnp.float32(1.0) if alpha is None else jnp.asarray(alpha, jnp.float32)
        if train:
            self.stage[...] = jnp.int32(stage)
            self.alpha[...] = alpha
        feats = self.features(z, stage)
        x = self.to_rgb[stage](feats[stage])
        if stage == 0:
            return x
        return lerp(upsample(self.to_rgb[stage - 1](feats[stage - 1]), 2), x, alpha)

    def _full_size(self, z: jax.Array) -> jax.Array:
        """The image at the recorded stage and alpha, upsampled to the last resolution (every
        resolution is computed and the two that the stage blends are picked: traced indices)."""
        feats = self.features(z, self.n - 1)
        rgb = jnp.stack([upsample(to(h), 2 ** (self.n - 1 - k))
                         for k, (to, h) in enumerate(zip(self.to_rgb, feats))])
        s = self.stage[...]
        alpha = jnp.where(s == 0, 1.0, self.alpha[...])
        return lerp(rgb[jnp.maximum(s - 1, 0)], rgb[s], alpha)


class ProGANDiscriminator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, *, rngs: nnx.Rngs):
        w, c = spec.grow.d_widths, shape[-1] * spec.d_pack
        self.pack, self.mbstd = spec.d_pack, spec.d_mbstd
        self.from_rgb = nnx.List([EqConv(c, width, 1, rngs=rngs) for width in w])
        self.blocks = nnx.List([DBlock(b, a, rngs=rngs) for a, b in zip(w, w[1:])])  # res k -> k-1
        self.conv = EqConv(w[0] + (1 if spec.d_mbstd else 0), w[0], 3, rngs=rngs)
        self.fc = EqDense(16 * w[0], w[0], rngs=rngs)
        self.out = EqDense(w[0], 1, gain=1.0, rngs=rngs)

    def input_features(self, x: jax.Array, stage: int, alpha) -> jax.Array:
        """The (packed) images of the stage's resolution -> the features entering block
        ``stage - 1`` (or the 4x4 head at stage 0), faded in between the two input paths."""
        h = lrelu(self.from_rgb[stage](x))
        if stage == 0:
            return h
        low = lrelu(self.from_rgb[stage - 1](downsample(x, 2)))
        return lerp(low, self.blocks[stage - 1](h), alpha)

    def __call__(self, x: jax.Array, *, train: bool, stage: int | None = None, alpha=None):
        """Scores of images at the stage's resolution; without ``stage``, the stage is read
        from the image size, with no fade-in."""
        del train  # no batch statistics
        if stage is None:
            stage, alpha = int(math.log2(x.shape[1] // 4)), None
        alpha = jnp.float32(1.0) if alpha is None else jnp.asarray(alpha, jnp.float32)
        h = self.input_features(pack(x, self.pack), stage, alpha)
        for k in range(stage - 1, 0, -1):
            h = self.blocks[k - 1](h)
        h = lrelu(self.conv(minibatch_std(h, self.mbstd)))
        h = lrelu(self.fc(h.reshape(h.shape[0], -1)))
        return self.out(h)[:, 0]


def _kimg(value, n: int, key: str) -> None:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and len(values) != n:
        raise ConfigError(f"model.grow.{key} must be one number or one per resolution ({n}); "
                          f"got {len(values)}: {values}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 for v in values):
        raise ConfigError(f"model.grow.{key} must be kimg >= 0 (got {value!r})")


def _fitting_sizes(res: list) -> str:
    return ", ".join(str(r) for r in res)


def check(spec: ModelSpec, shape: tuple, image: bool) -> None:
    """The schedule is well formed and ends at the data size (one line, before anything builds)."""
    g = spec.grow
    if g is None:
        raise ConfigError("model=progan needs model.grow (resolutions, g_widths, d_widths, "
                          "fade_kimg, stable_kimg); compose it with model=progan")
    if not image:
        raise ConfigError("model=progan needs image data; use model=mlp for toy 2D data")
    res = list(g.resolutions)
    if not res or res[0] != 4 or any(b != 2 * a for a, b in zip(res, res[1:])):
        raise ConfigError(f"model.grow.resolutions must start at 4 and double at every stage "
                          f"(got {res}); e.g. [4, 8, 16, 32]")
    size = shape[0]
    if shape[0] == shape[1] and size == res[-1]:
        pass
    elif shape[0] != shape[1] or size < 4 or size & (size - 1):
        raise ConfigError(f"model=progan cannot grow to {shape[0]}x{shape[1]} px images: it grows "
                          f"from 4 px by doubling, so square sizes 4*2^n fit (8, 16, 32, 64, ...); "
                          f"with model.grow.resolutions={res} set data.image_size={res[-1]}")
    else:
        upto = [4 * 2 ** i for i in range(int(math.log2(size // 4)) + 1)]
        raise ConfigError(f"model.grow.resolutions={res} ends at {res[-1]} px but the images are "
                          f"{size}x{size} px; end the schedule at the data size "
                          f"(model.grow.resolutions=[{_fitting_sizes(upto)}], one width per "
                          f"resolution) "
                          f"or set data.image_size to one of {_fitting_sizes(res)}")
    for key in ("g_widths", "d_widths"):
        widths = list(getattr(g, key))
        if len(widths) != len(res) or any(not isinstance(v, int) or v < 1 for v in widths):
            raise ConfigError(f"model.grow.{key} needs one positive width per resolution "
                              f"({len(res)} for {res}); got {widths}")
    _kimg(g.fade_kimg, len(res), "fade_kimg")
    _kimg(g.stable_kimg, len(res), "stable_kimg")
    if spec.spectral_norm:
        raise ConfigError("model=progan uses an equalized learning rate, not spectral norm; "
                          "drop spectral_norm from regularizer/model.spectral_norm")


def build(spec: ModelSpec, shape: tuple, image: bool, rngs: nnx.Rngs):
    return ProGANGenerator(spec, shape, rngs=rngs), ProGANDiscriminator(spec, shape, rngs=rngs)
