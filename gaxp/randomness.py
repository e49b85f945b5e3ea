"""How gaxp lowers its random draws, set around each entry point instead of process-wide.

Random draws are defined globally in both threefry modes (the same numbers on 1 or 8 devices);
the "partitionable" lowering only lets XLA shard the generator itself. On XLA:CPU it makes
compiling each draw ~8x slower (10 normal draws: 7.6 s vs 0.9 s here), which dominated the
compile time of parameter initialisation. gaxp's draws are small (latents, penalties' mixing
weights), so its runs use the cheaper lowering, and every run uses the same one, so digests agree
across runs, resumes and versions. Importing gaxp changes no JAX setting: the choice is scoped
(``jax.threefry_partitionable`` as a context manager) to the functions decorated here.
"""

from __future__ import annotations

import functools

import jax


def gaxp_draws(fn):
    """Run ``fn`` with gaxp's threefry lowering (``jax_threefry_partitionable=False``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.threefry_partitionable(False):
            return fn(*args, **kwargs)

    return wrapper
