"""Architectures: each entry builds a (generator, discriminator) pair of Flax NNX modules for a
data shape, and checks before anything is built that it can produce that shape.

``G(z, train=...) -> samples`` of the data shape; ``D(x, train=...) -> logits [batch]``."""

from __future__ import annotations

from gaxp.models import dcgan, growth, infogan, mlp, progan, resnet, srgan, unet
from gaxp.registry import ARCHS, ArchEntry, register  # noqa: F401 - ARCHS re-exported


Arch = ArchEntry  # an entry of the registry: build, check, supports, params

# The built-in architectures register exactly as a plugin's do (gaxp.register.arch).
register.arch("mlp", check=mlp.check)(mlp.build)
register.arch("dcgan", check=dcgan.check)(dcgan.build)
register.arch("resnet", check=resnet.check)(resnet.build)
# Lucic et al. (2018)'s InfoGAN-style pair for 28x28 images: sigmoid G, images in [0, 1]
register.arch("infogan", check=infogan.check, supports=("g_spectral_norm",),
              params=infogan.InfoGANParams, pixels="unit")(infogan.build)
# Progressive growing (gaxp.models.growth compiles one program per stage); equalized lr, no spectral norm.
register.arch("progan", check=progan.check, supports=("pack", "mbstd"),
              phases=growth.phases)(progan.build)
# Image-to-image (gaxp.tasks): shape = (target_shape, source_shape); G maps source images.
register.arch("pix2pix", check=unet.check_pix2pix, supports=("g_spectral_norm",))(unet.build_pix2pix)
register.arch("srgan", check=srgan.check, supports=("g_spectral_norm",))(srgan.build)
register.arch("cyclegan", check=unet.check_cyclegan, supports=("g_spectral_norm",))(unet.build_cyclegan)
