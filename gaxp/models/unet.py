"""Image-to-image networks of Pix2Pix and CycleGAN.

* ``UNet`` (Ronneberger et al. 2015, as the Pix2Pix generator of Isola et al. 2017): ``g_depth``
  4x4 stride-2 convolutions (LeakyReLU 0.2, no norm on the first) down to H / 2^g_depth, then as
  many 4x4 stride-2 transposed convolutions (norm, ReLU) back up, each decoder level concatenated
  with the encoder output of the same size (the skip connections); tanh output. Channels
  ``g_width * 2^i``, capped at 8 * g_width (the paper's 64 ... 512). G's only noise is dropout
  (``model.dropout``, the paper's 0.5) after the first ``model.dropout_levels`` decoder levels
  (the paper's first three, "CD512"), drawn from the ``noise`` key the step derives from its own
  key; at test time too when ``model.dropout_at_test`` (as the paper does), with the caller's key.
* ``PatchGAN`` (Isola et al. 2017): ``d_depth`` 4x4 stride-2 convolutions, one 4x4 stride-1
  convolution, then a 4x4 stride-1 convolution to one logit per patch. Receptive field
  9 * 2^d_depth - 2 px: d_depth=3 is the paper's 70x70 PatchGAN for 256 px, d_depth=1 a 16x16
  PatchGAN for 28 px digits. Conditional (Pix2Pix): D sees the source and the image concatenated
  on channels.
* ``ResnetGenerator`` (Johnson et al. 2016, CycleGAN's G): 7x7 conv, two stride-2 downsamplings,
  ``g_depth`` residual blocks, two stride-2 upsamplings, 7x7 conv to the image, tanh. Below 64 px
  the two outer convolutions are 3x3 (a 7x7 kernel spans a quarter of a 28 px digit, and its
  gradient is the slowest pass of the step on XLA:CPU).
* ``CycleGenerators``/``CycleDiscriminators``: G_AB and G_BA (D_A and D_B) in one module each, so
  the train state, EMA, checkpoints and the guard treat them as one G (one D).

The archs take ``shape = (target_shape, source_shape)`` (``gaxp.tasks.model_shape``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gaxp.specs import ModelSpec
from gaxp.errors import ConfigError
from gaxp.models.blocks import Conv, Down2x, Norm, Up2x, lrelu


def _widths(width: int, depth: int) -> list[int]:
    return [width * min(2 ** i, 8) for i in range(depth)]


class UNet(nnx.Module):
    def __init__(self, spec: ModelSpec, c_in: int, c_out: int, *, rngs: nnx.Rngs, skips=True):
        w, m, sn = _widths(spec.g_width, spec.g_depth), spec.bn_momentum, spec.g_spectral_norm
        self.skips = skips
        self.dropout, self.dropout_levels = spec.dropout, spec.dropout_levels  # static
        self.dropout_at_test = spec.dropout_at_test
        self.downs = nnx.List([Down2x(a, b, sn=sn, init=spec.init, rngs=rngs)
                               for a, b in zip([c_in] + w, w)])
        self.down_norms = nnx.List([Norm("none" if i == 0 else spec.g_norm, b, momentum=m, rngs=rngs)
                                    for i, b in enumerate(w)])
        k = 2 if skips else 1  # decoder inputs: upsampled features (+ the skip)
        ins = [w[-1]] + [k * c for c in reversed(w[:-1])]
        outs = list(reversed(w[:-1]))
        self.ups = nnx.List([Up2x(a, b, sn=sn, init=spec.init, rngs=rngs) for a, b in zip(ins, outs)])
        self.up_norms = nnx.List([Norm(spec.g_norm, b, momentum=m, rngs=rngs) for b in outs])
        self.out = Up2x(ins[-1] if len(w) > 1 else w[0], c_out, sn=sn, init=spec.init, rngs=rngs)

    def _drop(self, h: jax.Array, level: int, noise, train: bool) -> jax.Array:
        """Dropout (inverted: kept units scaled by 1 / (1 - rate)) on decoder level ``level``."""
        active = self.dropout > 0 and noise is not None and (train or self.dropout_at_test)
        if not active or level >= self.dropout_levels:
            return h
        keep = jax.random.bernoulli(jax.random.fold_in(noise, level), 1.0 - self.dropout, h.shape)
        return jnp.where(keep, h / (1.0 - self.dropout), 0.0).astype(h.dtype)

    def __call__(self, c: jax.Array, *, train: bool, noise=None) -> jax.Array:
        """``noise``: a key for the dropout masks (None: no dropout)."""
        h, skips = c, []
        for down, norm in zip(self.downs, self.down_norms):
            h = lrelu(norm(down(h, train=train), train=train))
            skips.append(h)
        for i, (up, norm, skip) in enumerate(zip(self.ups, self.up_norms, reversed(skips[:-1]))):
            h = self._drop(jax.nn.relu(norm(up(h, train=train), train=train)), i, noise, train)
            h = jnp.concatenate([h, skip], axis=-1) if self.skips else h
        return jnp.tanh(self.out(h, train=train))


class PatchGAN(nnx.Module):
    def __init__(self, spec: ModelSpec, c_in: int, *, rngs: nnx.Rngs):
        w, m, sn = _widths(spec.d_width, spec.d_depth + 1), spec.bn_momentum, spec.spectral_norm
        self.downs = nnx.List([Down2x(a, b, sn=sn, init=spec.init, rngs=rngs)
                               for a, b in zip([c_in] + w[:-1], w[:-1])])
        self.norms = nnx.List([Norm("none" if i == 0 else spec.d_norm, b, momentum=m, rngs=rngs)
                               for i, b in enumerate(w[:-1])])
        self.mid = Conv(w[-2], w[-1], 4, sn=sn, init=spec.init, rngs=rngs)
        self.mid_norm = Norm(spec.d_norm, w[-1], momentum=m, rngs=rngs)
        self.out = Conv(w[-1], 1, 4, sn=sn, init=spec.init, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """[B, H, W, C] -> patch logits [B, H / 2^d, W / 2^d]."""
        h = x
        for down, norm in zip(self.downs, self.norms):
            h = lrelu(norm(down(h, train=train), train=train))
        h = lrelu(self.mid_norm(self.mid(h, train=train), train=train))
        return self.out(h, train=train)[..., 0]


class ConditionalPatchGAN(PatchGAN):
    """Pix2Pix's D: the source and the (real or generated) target concatenated on channels."""

    def __call__(self, pair: tuple, *, train: bool) -> jax.Array:
        c, x = pair
        return super().__call__(jnp.concatenate([c, x], axis=-1), train=train)


class ResBlock(nnx.Module):
    def __init__(self, spec: ModelSpec, width: int, *, rngs: nnx.Rngs):
        sn, m = spec.g_spectral_norm, spec.bn_momentum
        self.c1 = Conv(width, width, 3, sn=sn, init=spec.init, rngs=rngs)
        self.n1 = Norm(spec.g_norm, width, momentum=m, rngs=rngs)
        self.c2 = Conv(width, width, 3, sn=sn, init=spec.init, rngs=rngs)
        self.n2 = Norm(spec.g_norm, width, momentum=m, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        h = jax.nn.relu(self.n1(self.c1(x, train=train), train=train))
        return x + self.n2(self.c2(h, train=train), train=train)


class ResnetGenerator(nnx.Module):
    def __init__(self, spec: ModelSpec, c_in: int, c_out: int, *, rngs: nnx.Rngs, outer: int = 7):
        w, sn, m = spec.g_width, spec.g_spectral_norm, spec.bn_momentum
        self.inp = Conv(c_in, w, outer, sn=sn, init=spec.init, rngs=rngs)
        self.d1, self.d2 = (Down2x(w, 2 * w, sn=sn, init=spec.init, rngs=rngs),
                            Down2x(2 * w, 4 * w, sn=sn, init=spec.init, rngs=rngs))
        self.blocks = nnx.List([ResBlock(spec, 4 * w, rngs=rngs) for _ in range(spec.g_depth)])
        self.u1, self.u2 = (Up2x(4 * w, 2 * w, sn=sn, init=spec.init, rngs=rngs),
                            Up2x(2 * w, w, sn=sn, init=spec.init, rngs=rngs))
        self.norms = nnx.List([Norm(spec.g_norm, c, momentum=m, rngs=rngs)
                               for c in (w, 2 * w, 4 * w, 2 * w, w)])
        self.out = Conv(w, c_out, outer, sn=sn, init=spec.init, rngs=rngs)

    def __call__(self, c: jax.Array, *, train: bool) -> jax.Array:
        n = self.norms
        h = jax.nn.relu(n[0](self.inp(c, train=train), train=train))
        h = jax.nn.relu(n[1](self.d1(h, train=train), train=train))
        h = jax.nn.relu(n[2](self.d2(h, train=train), train=train))
        for block in self.blocks:
            h = block(h, train=train)
        h = jax.nn.relu(n[3](self.u1(h, train=train), train=train))
        h = jax.nn.relu(n[4](self.u2(h, train=train), train=train))
        return jnp.tanh(self.out(h, train=train))


class CycleGenerators(nnx.Module):
    """G_AB (A -> B) and G_BA (B -> A); ``direction`` picks one."""

    def __init__(self, spec: ModelSpec, c_a: int, c_b: int, *, rngs: nnx.Rngs, outer: int = 7):
        self.ab = ResnetGenerator(spec, c_a, c_b, rngs=rngs, outer=outer)
        self.ba = ResnetGenerator(spec, c_b, c_a, rngs=rngs, outer=outer)

    def __call__(self, x: jax.Array, *, train: bool, direction: str = "ab") -> jax.Array:
        return (self.ab if direction == "ab" else self.ba)(x, train=train)


class CycleDiscriminators(nnx.Module):
    """D_A (real A vs G_BA(b)) and D_B (real B vs G_AB(a)); ``domain`` picks one."""

    def __init__(self, spec: ModelSpec, c_a: int, c_b: int, *, rngs: nnx.Rngs):
        self.a = PatchGAN(spec, c_a, rngs=rngs)
        self.b = PatchGAN(spec, c_b, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool, domain: str = "b") -> jax.Array:
        return (self.a if domain == "a" else self.b)(x, train=train)


def _check_pair(model: str, shape, image: bool, same_size: bool = True) -> tuple:
    if not image or len(shape) != 2 or not all(isinstance(s, tuple) for s in shape):
        raise ConfigError(f"model={model} translates images: use it with task=pix2pix, srgan or "
                          "cyclegan and source/target data (data=mnist_edges, mnist_sr, "
                          "mnist_unpaired, paired_folder)")
    target, source = shape
    if same_size and target[:2] != source[:2]:
        raise ConfigError(f"model={model} maps images to images of the same size; the source is "
                          f"{source[0]}x{source[1]} px, the target {target[0]}x{target[1]} px")
    return target, source


def _check_divisible(model: str, size: tuple, depth: int, key: str) -> None:
    f = 2 ** depth
    if size[0] % f or size[1] % f:
        raise ConfigError(f"model={model}: {size[0]}x{size[1]} px images do not fit {key}={depth} "
                          f"(each level halves the size, so it must be divisible by 2^{depth}={f}); "
                          f"lower {key} or set data.image_size")


def check_pix2pix(spec: ModelSpec, shape, image: bool) -> None:
    target, _ = _check_pair("pix2pix", shape, image)
    _check_divisible("pix2pix", target, spec.g_depth, "model.g_depth")
    _check_divisible("pix2pix", target, spec.d_depth, "model.d_depth")


def build_pix2pix(spec: ModelSpec, shape, image: bool, rngs: nnx.Rngs):
    target, source = shape
    return (UNet(spec, source[-1], target[-1], rngs=rngs),
            ConditionalPatchGAN(spec, source[-1] + target[-1], rngs=rngs))


def check_cyclegan(spec: ModelSpec, shape, image: bool) -> None:
    target, _ = _check_pair("cyclegan", shape, image)
    _check_divisible("cyclegan", target, 2, "the generator's downsamplings")
    _check_divisible("cyclegan", target, spec.d_depth, "model.d_depth")


def build_cyclegan(spec: ModelSpec, shape, image: bool, rngs: nnx.Rngs):
    target, source = shape
    outer = 7 if min(target[:2]) >= 64 else 3  # the 7x7 outer convolutions scaled to small images
    return (CycleGenerators(spec, source[-1], target[-1], rngs=rngs, outer=outer),
            CycleDiscriminators(spec, source[-1], target[-1], rngs=rngs))
