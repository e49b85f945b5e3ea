"""The InfoGAN-style networks of Lucic et al. (2018, "Are GANs Created Equal? A Large-Scale
Study"), as their code (google/compare_gan, branch v1, ``gans/abstract_gan.py`` and ``ops.py``)
builds them for 28x28 images (MNIST, Fashion-MNIST); the architecture is InfoGAN's (Chen et al.
2016, appendix C.1).

- G: z (64-d, U[-1, 1]) -> FC 1024, BN, lReLU -> FC 7x7x128, BN, lReLU -> 4x4 stride-2 deconv to
  64, BN, lReLU -> 4x4 stride-2 deconv to C, sigmoid: images in [0, 1] (``pixels="unit"``).
- D: 4x4 stride-2 conv to 64, lReLU -> 4x4 stride-2 conv to 128, [BN], lReLU -> FC 1024, [BN],
  lReLU -> FC 1 (a logit). ``model.d_norm``: batch (the study's "D-BN") or none.
- lReLU slope 0.2; SAME padding (for these even sizes exactly PyTorch's k=4 s=2 p=1); weights
  N(0, 0.02), D's convolutions drawn from TF 1's truncated normal; zero biases; BatchNorm with
  decay ``model.bn_momentum`` (0.999) and ``model.epsilon`` (1e-3), scale and offset.

The latent: gaxp draws z ~ N(0, I) everywhere (training, grids, metrics); with ``latent:
uniform`` this G maps it by ``erf(z / sqrt 2)``, which is exactly U[-1, 1] (the normal's CDF is
uniform), so the distribution G sees is the paper's. Widths: ``g_width`` (64; G's FC gives 2x
that per pixel), ``d_width`` (64, then 2x), ``fc_width`` (1024).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from gaxp.errors import ConfigError
from gaxp.models.blocks import Dense, Down2x, Norm, Up2x, lrelu
from gaxp.specs import ModelSpec

SIZE = 28  # 7 -> 14 -> 28


@dataclasses.dataclass(frozen=True)
class InfoGANParams:
    fc_width: int = 1024  # the FC layer of both networks
    epsilon: float = 1e-3  # BatchNorm's epsilon (TF's contrib batch_norm in compare_gan)
    latent: str = "uniform"  # uniform: G sees U[-1, 1] (the paper's z); normal: N(0, I) as drawn


def _params(spec: ModelSpec) -> InfoGANParams:
    return spec.params or InfoGANParams()


class InfoGANGenerator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, *, rngs: nnx.Rngs):
        p, sn, mom = _params(spec), spec.g_spectral_norm, spec.bn_momentum
        self.top, self.uniform = 2 * spec.g_width, p.latent == "uniform"
        quarter = SIZE // 4
        dense = dict(sn=sn, init="dcgan", rngs=rngs)
        norm = dict(momentum=mom, epsilon=p.epsilon, rngs=rngs)
        self.fc1 = Dense(spec.z_dim, p.fc_width, **dense)
        self.bn1 = Norm(spec.g_norm, p.fc_width, **norm)
        self.fc2 = Dense(p.fc_width, quarter * quarter * self.top, **dense)
        self.bn2 = Norm(spec.g_norm, quarter * quarter * self.top, **norm)
        self.up3 = Up2x(self.top, spec.g_width, **dense)
        self.bn3 = Norm(spec.g_norm, spec.g_width, **norm)
        self.up4 = Up2x(spec.g_width, shape[-1], **dense)

    def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
        if self.uniform:  # N(0, 1) -> U[-1, 1] exactly: 2 Phi(z) - 1 = erf(z / sqrt 2)
            z = jax.lax.erf(z * jnp.sqrt(0.5).astype(z.dtype))
        h = lrelu(self.bn1(self.fc1(z, train=train), train=train))
        h = lrelu(self.bn2(self.fc2(h, train=train), train=train))
        h = h.reshape(z.shape[0], SIZE // 4, SIZE // 4, self.top)
        h = lrelu(self.bn3(self.up3(h, train=train), train=train))
        return jax.nn.sigmoid(self.up4(h, train=train))


class InfoGANDiscriminator(nnx.Module):
    def __init__(self, spec: ModelSpec, shape: tuple, *, rngs: nnx.Rngs):
        p, sn = _params(spec), spec.spectral_norm
        w1, w2 = spec.d_width, 2 * spec.d_width
        conv = dict(sn=sn, init="tf_truncated", rngs=rngs)
        norm = dict(momentum=spec.bn_momentum, epsilon=p.epsilon, rngs=rngs)
        self.conv1 = Down2x(shape[-1], w1, **conv)
        self.conv2 = Down2x(w1, w2, **conv)
        self.bn2 = Norm(spec.d_norm, w2, **norm)
        self.fc3 = Dense((SIZE // 4) ** 2 * w2, p.fc_width, sn=sn, init="dcgan", rngs=rngs)
        self.bn3 = Norm(spec.d_norm, p.fc_width, **norm)
        self.out = Dense(p.fc_width, 1, sn=sn, init="dcgan", rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        h = lrelu(self.conv1(x, train=train))
        h = lrelu(self.bn2(self.conv2(h, train=train), train=train))
        h = h.reshape(h.shape[0], -1)
        h = lrelu(self.bn3(self.fc3(h, train=train), train=train))
        return self.out(h, train=train)[:, 0]


def check(spec: ModelSpec, shape: tuple, image: bool) -> None:
    p = _params(spec)
    if not image or tuple(shape[:2]) != (SIZE, SIZE):
        got = "2D points" if not image else f"{shape[0]}x{shape[1]} px images"
        raise ConfigError(f"model=infogan makes 28x28 images (MNIST, Fashion-MNIST), not {got}; "
                          "use data=fashion_mnist or data=mnist with data.image_size=null")
    if spec.cond != "none":
        raise ConfigError("model=infogan is unconditional; use model=dcgan for model.cond="
                          f"{spec.cond}")
    if p.latent not in ("uniform", "normal"):
        raise ConfigError(f"model.latent must be uniform or normal, got {p.latent!r}")
    for key in ("g_norm", "d_norm"):
        if getattr(spec, key) not in ("batch", "none"):
            raise ConfigError(f"model.{key} of model=infogan must be batch or none, got "
                              f"{getattr(spec, key)!r}")


def build(spec: ModelSpec, shape: tuple, image: bool, rngs: nnx.Rngs):
    return InfoGANGenerator(spec, shape, rngs=rngs), InfoGANDiscriminator(spec, shape, rngs=rngs)
