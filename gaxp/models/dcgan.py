"""DCGAN (Radford et al. 2016): a generator of 4x4 stride-2 transposed convolutions with
BatchNorm and ReLU, a discriminator of 4x4 stride-2 convolutions with LeakyReLU(0.2).

Sizes: ``base * 2**n`` with base 4 or 7 (28 px: 7 -> 14 -> 28; 32 px: 4 -> 8 -> 16 -> 32;
64 px: 4 -> ... -> 64). Channels: G starts at ``g_width * 2**n`` and halves at every upsampling;
D doubles from ``d_width``. With g_width = d_width = 64 this is the classic DCGAN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gaxp.specs import ModelSpec
from gaxp.models import conditional
from gaxp.models.blocks import (
    Dense, Down2x, Norm, Up2x, check_square_image, lrelu, minibatch_std, pack, up_levels,
)


class DCGANGenerator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, *, rngs: nnx.Rngs):
        (self.base, n), channels = up_levels(shape[0]), shape[-1]
        widths = [spec.g_width * 2 ** (n - i) for i in range(n)]  # e.g. 256, 128 for 28 px
        self.top = widths[0]
        sn = spec.g_spectral_norm
        self.fc = Dense(conditional.z_features(spec), self.base * self.base * widths[0], sn=sn,
                        init=spec.init, rngs=rngs)
        self.fc_norm = conditional.g_norm(spec, widths[0], rngs=rngs)
        self.ups = nnx.List([
            Up2x(a, b, sn=sn, init=spec.init, rngs=rngs) for a, b in zip(widths, widths[1:])
        ])
        self.norms = nnx.List([conditional.g_norm(spec, b, rngs=rngs) for b in widths[1:]])
        self.out = Up2x(widths[-1], channels, sn=sn, init=spec.init, rngs=rngs)
        self.embed = conditional.g_embed(spec, rngs=rngs)

    def __call__(self, z: jax.Array, y=None, *, train: bool) -> jax.Array:
        h = self.fc(conditional.g_input(self.embed, z, y), train=train)
        h = h.reshape(z.shape[0], self.base, self.base, self.top)
        h = jax.nn.relu(self.fc_norm(h, y, train=train))
        for up, norm in zip(self.ups, self.norms):
            h = jax.nn.relu(norm(up(h, train=train), y, train=train))
        return jnp.tanh(self.out(h, train=train))


class DCGANDiscriminator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, *, rngs: nnx.Rngs):
        base, n = up_levels(shape[0])
        widths = [shape[-1] * spec.d_pack] + [spec.d_width * 2**i for i in range(n)]
        sn, self.pack, self.mbstd = spec.spectral_norm, spec.d_pack, spec.d_mbstd
        self.downs = nnx.List([
            Down2x(a, b, sn=sn, init=spec.init, rngs=rngs) for a, b in zip(widths, widths[1:])
        ])
        # No normalization on the first layer (Radford et al. 2016).
        self.norms = nnx.List([
            Norm("none" if i == 0 else spec.d_norm, b, momentum=spec.bn_momentum, rngs=rngs)
            for i, b in enumerate(widths[1:])
        ])
        head = base * base * (widths[-1] + (1 if spec.d_mbstd else 0))
        self.out = Dense(head, 1, sn=sn, init=spec.init, rngs=rngs)
        self.cond = conditional.d_cond(spec, head, rngs=rngs)

    def __call__(self, x: jax.Array, y=None, *, train: bool):
        h = pack(x, self.pack)
        for down, norm in zip(self.downs, self.norms):
            h = lrelu(norm(down(h, train=train), train=train))
        h = minibatch_std(h, self.mbstd)
        return conditional.d_output(self.out, self.cond, h.reshape(h.shape[0], -1), y, train=train)


def check(spec: ModelSpec, shape: tuple, image: bool) -> None:
    check_square_image("dcgan", shape, image)


def build(spec: ModelSpec, shape: tuple, image: bool, rngs: nnx.Rngs):
    return DCGANGenerator(spec, shape, rngs=rngs), DCGANDiscriminator(spec, shape, rngs=rngs)
