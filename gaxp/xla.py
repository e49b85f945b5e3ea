"""XLA options gaxp sets itself, per platform, where ``scripts/bench.py`` measured them faster.

Every program gaxp compiles (the train step, a population's step, sampling, the feature networks
of the evaluation and the classifier's training) gets them: ``jit`` here, or ``options`` for
``.lower(...).compile(compiler_options=...)``. Measured on the 2-core development CPU, interleaved
in one process (``--xla-option``), on a quiet machine (2026-11-30):

* ``xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``: YNNPACK computes
  the matrix products one by one, XLA the convolutions and the elementwise code around them (JAX
  0.10's default also hands YNNPACK the convolutions and fuses elementwise code into its products).
  FID InceptionV3 6.3 -> 12.2 images/s; PacGAN toy step 1.10x; classic DCGAN-28 step 1.07x at
  batch 64, 0.93x at batch 256 (YNNPACK's convolutions win on large batches).
* ``xla_cpu_copy_insertion_use_region_analysis=true``: without it, the non-finite guard's select
  (``optim.skip_nonfinite``) made XLA copy each donated Adam moment before the update (18
  parameter-sized copies in the PacGAN toy step, ~8% of it). Same values.
"""

from __future__ import annotations

import jax

PLATFORM_OPTIONS = {
    "cpu": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
            "xla_cpu_copy_insertion_use_region_analysis": True},
}


def options(platform: str | None = None, extra: dict | None = None) -> dict:
    """gaxp's XLA options for ``platform`` (default: JAX's default backend), then ``extra``."""
    return PLATFORM_OPTIONS.get(platform or jax.default_backend(), {}) | (extra or {})


def mesh_options(mesh, extra: dict | None = None) -> dict:
    """``options`` for the platform of ``mesh``'s devices."""
    return options(mesh.devices.flat[0].platform, extra)


def jit(fn, **kwargs):
    """``jax.jit`` with gaxp's XLA options for the default backend."""
    return jax.jit(fn, compiler_options=options(), **kwargs)
