"""MLP generator and discriminator: the original GAN (Goodfellow et al. 2014) and the PacGAN toy
setup (Lin et al. 2018: G with 4x400 ReLU+BatchNorm layers, D with maxout units of 5 pieces;
maxout from Goodfellow et al. 2013). Works on points (toy 2D) and on flattened images."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from gaxp.specs import ModelSpec
from gaxp.models import conditional
from gaxp.models.blocks import Dense, Norm, lrelu, maxout, minibatch_std, pack


class MLPGenerator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, image: bool, *, rngs: nnx.Rngs):
        self.shape, self.image = tuple(shape), image
        dims = [conditional.z_features(spec)] + [spec.g_width] * spec.g_depth
        sn = spec.g_spectral_norm
        self.hidden = nnx.List([Dense(a, b, sn=sn, init=spec.init, rngs=rngs) for a, b in zip(dims, dims[1:])])
        self.norms = nnx.List([conditional.g_norm(spec, b, rngs=rngs) for b in dims[1:]])
        self.out = Dense(dims[-1], math.prod(shape), sn=sn, init=spec.init, rngs=rngs)
        self.embed = conditional.g_embed(spec, rngs=rngs)

    def __call__(self, z: jax.Array, y=None, *, train: bool) -> jax.Array:
        h = conditional.g_input(self.embed, z, y)
        for layer, norm in zip(self.hidden, self.norms):
            h = jax.nn.relu(norm(layer(h, train=train), y, train=train))
        x = self.out(h, train=train)
        x = jnp.tanh(x) if self.image else x
        return x.reshape((z.shape[0],) + self.shape)


class MLPDiscriminator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, *, rngs: nnx.Rngs):
        self.pieces, self.pack, self.mbstd = spec.maxout, spec.d_pack, spec.d_mbstd
        width = spec.d_width * max(spec.maxout, 1)
        dims = [math.prod(shape) * spec.d_pack] + [spec.d_width] * spec.d_depth
        sn = spec.spectral_norm
        self.hidden = nnx.List([
            Dense(a, width, sn=sn, init=spec.init, rngs=rngs) for a in dims[:-1]
        ])
        self.norms = nnx.List([
            Norm(spec.d_norm, width, momentum=spec.bn_momentum, rngs=rngs) for _ in dims[:-1]
        ])
        head = dims[-1] + (1 if spec.d_mbstd else 0)
        self.out = Dense(head, 1, sn=sn, init=spec.init, rngs=rngs)
        self.cond = conditional.d_cond(spec, head, rngs=rngs)

    def __call__(self, x: jax.Array, y=None, *, train: bool):
        h = pack(x.reshape(x.shape[0], -1), self.pack)
        for layer, norm in zip(self.hidden, self.norms):
            h = norm(layer(h, train=train), train=train)
            if self.pieces:
                h = maxout(h, self.pieces)
            else:
                h = lrelu(h)
        return conditional.d_output(self.out, self.cond, minibatch_std(h, self.mbstd), y, train=train)


def build(spec: ModelSpec, shape: tuple, image: bool, rngs: nnx.Rngs):
    return MLPGenerator(spec, shape, image, rngs=rngs), MLPDiscriminator(spec, shape, rngs=rngs)


def check(spec: ModelSpec, shape: tuple, image: bool) -> None:
    """Every shape works for an MLP."""
