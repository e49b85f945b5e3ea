"""ResNet GAN with a spectrally normalized discriminator, the CIFAR-10 setup of SNGAN
(Miyato et al. 2018, appendix B.4, after Gulrajani et al. 2017): G of up-sampling residual blocks
with BatchNorm, D of down-sampling residual blocks with spectral norm on every layer, ReLU, global
sum pooling and a linear head. 32 px by default; any size 4*2^n or 7*2^n works."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gaxp.specs import ModelSpec
from gaxp.models import conditional
from gaxp.models.blocks import (
    Conv, Dense, check_square_image, minibatch_std, pack, up_levels,
)


def _up(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)


def _pool(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class GBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, spec: ModelSpec, *, rngs: nnx.Rngs):
        self.n1 = conditional.g_norm(spec, cin, rngs=rngs)
        self.n2 = conditional.g_norm(spec, cout, rngs=rngs)
        sn = spec.g_spectral_norm
        self.c1 = Conv(cin, cout, 3, sn=sn, init=spec.init, rngs=rngs)
        self.c2 = Conv(cout, cout, 3, sn=sn, init=spec.init, rngs=rngs)
        self.skip = Conv(cin, cout, 1, sn=sn, init=spec.init, rngs=rngs)

    def __call__(self, x, y=None, *, train: bool):
        h = self.c1(_up(jax.nn.relu(self.n1(x, y, train=train))), train=train)
        h = self.c2(jax.nn.relu(self.n2(h, y, train=train)), train=train)
        return h + self.skip(_up(x), train=train)


class DBlock(nnx.Module):
    """Residual D block; ``first`` is the "optimized" block without the leading ReLU."""

    def __init__(self, cin: int, cout: int, spec: ModelSpec, *, down: bool, first: bool, rngs):
        sn, init = spec.spectral_norm, spec.init
        self.down, self.first = down, first
        self.c1 = Conv(cin, cout, 3, sn=sn, init=init, rngs=rngs)
        self.c2 = Conv(cout, cout, 3, sn=sn, init=init, rngs=rngs)
        self.skip = Conv(cin, cout, 1, sn=sn, init=init, rngs=rngs) if (down or cin != cout) else None

    def __call__(self, x, *, train: bool):
        h = x if self.first else jax.nn.relu(x)
        h = self.c2(jax.nn.relu(self.c1(h, train=train)), train=train)
        s = x
        if self.first:
            s = self.skip(_pool(s), train=train)
        elif self.skip is not None:
            s = self.skip(s, train=train)
            s = _pool(s) if self.down else s
        return (_pool(h) if self.down else h) + s


class ResNetGenerator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, *, rngs: nnx.Rngs):
        (self.base, n), w = up_levels(shape[0]), spec.g_width
        self.width = w
        sn = spec.g_spectral_norm
        self.fc = Dense(conditional.z_features(spec), self.base * self.base * w, sn=sn,
                        init=spec.init, rngs=rngs)
        self.blocks = nnx.List([GBlock(w, w, spec, rngs=rngs) for _ in range(n)])
        self.norm = conditional.g_norm(spec, w, rngs=rngs)
        self.out = Conv(w, shape[-1], 3, sn=sn, init=spec.init, rngs=rngs)
        self.embed = conditional.g_embed(spec, rngs=rngs)

    def __call__(self, z, y=None, *, train: bool):
        h = self.fc(conditional.g_input(self.embed, z, y), train=train)
        h = h.reshape(z.shape[0], self.base, self.base, self.width)
        for block in self.blocks:
            h = block(h, y, train=train)
        return jnp.tanh(self.out(jax.nn.relu(self.norm(h, y, train=train)), train=train))


class ResNetDiscriminator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, *, rngs: nnx.Rngs):
        _, n = up_levels(shape[0])
        w, c = spec.d_width, shape[-1] * spec.d_pack
        self.pack, self.mbstd = spec.d_pack, spec.d_mbstd
        blocks = [DBlock(c, w, spec, down=True, first=True, rngs=rngs)]
        blocks += [DBlock(w, w, spec, down=True, first=False, rngs=rngs) for _ in range(n - 1)]
        blocks += [DBlock(w, w, spec, down=False, first=False, rngs=rngs) for _ in range(2)]
        self.blocks = nnx.List(blocks)
        head = w + (1 if spec.d_mbstd else 0)
        self.out = Dense(head, 1, sn=spec.spectral_norm, init=spec.init, rngs=rngs)
        self.cond = conditional.d_cond(spec, head, rngs=rngs)

    def __call__(self, x, y=None, *, train: bool):
        h = pack(x, self.pack)
        for block in self.blocks:
            h = block(h, train=train)
        h = jnp.sum(minibatch_std(jax.nn.relu(h), self.mbstd), axis=(1, 2))
        return conditional.d_output(self.out, self.cond, h, y, train=train)


def check(spec: ModelSpec, shape: tuple, image: bool) -> None:
    check_square_image("resnet", shape, image)


def build(spec: ModelSpec, shape: tuple, image: bool, rngs: nnx.Rngs):
    return ResNetGenerator(spec, shape, rngs=rngs), ResNetDiscriminator(spec, shape, rngs=rngs)
