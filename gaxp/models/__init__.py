"""Architectures: each entry builds a (generator, discriminator) pair of Flax NNX modules for a
data shape, and checks before anything is built that it can produce that shape.

``G(z, train=...) -> samples`` of the data shape; ``D(x, train=...) -> logits [batch]``."""

from __future__ import annotations

from typing import Callable, NamedTuple

from gaxp.models import dcgan, mlp, progan, resnet, srgan, unet


class Arch(NamedTuple):
    build: Callable  # (ModelSpec, shape, image: bool, rngs) -> (G, D)
    check: Callable  # (ModelSpec, shape, image: bool) -> None, raises ConfigError
    # Stabilizers that need model support: PacGAN packing in D, minibatch stddev in D,
    # spectral norm in G (gaxp.config checks a requested one is supported, before building).
    supports: frozenset = frozenset({"pack", "mbstd", "g_spectral_norm"})


ARCHS: dict[str, Arch] = {
    "mlp": Arch(mlp.build, mlp.check),
    "dcgan": Arch(dcgan.build, dcgan.check),
    "resnet": Arch(resnet.build, resnet.check),
    # Progressive growing (gaxp.grow compiles one program per stage); equalized lr, no spectral norm.
    "progan": Arch(progan.build, progan.check, frozenset({"pack", "mbstd"})),
    # Image-to-image (gaxp.tasks): shape = (target_shape, source_shape); G maps source images.
    "pix2pix": Arch(unet.build_pix2pix, unet.check_pix2pix, frozenset({"g_spectral_norm"})),
    "srgan": Arch(srgan.build, srgan.check, frozenset({"g_spectral_norm"})),
    "cyclegan": Arch(unet.build_cyclegan, unet.check_cyclegan, frozenset({"g_spectral_norm"})),
}
