"""gaxp: a JAX research framework for GAN experiments."""

import jax as _jax

__version__ = "0.1.0"

# Random draws are defined globally in both threefry modes (the same numbers on 1 or 8 devices);
# the "partitionable" lowering only lets XLA shard the generator itself. On XLA:CPU it makes
# compiling each draw ~8x slower (10 normal draws: 7.6 s vs 0.9 s here), which dominated the
# compile time of parameter initialisation. gaxp's draws are small (latents, penalties' mixing
# weights), so it keeps the cheaper lowering; every run of gaxp uses the same, so digests agree.
_jax.config.update("jax_threefry_partitionable", False)
