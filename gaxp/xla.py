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

import ctypes
import os
import sys

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


# --- The host allocator ----------------------------------------------------------------------
#
# XLA:CPU allocates each step's large buffers with malloc and frees them after the step. glibc
# serves allocations above 32 MB with a fresh mmap and unmaps them on free, so every step
# page-faults and zeroes those buffers again (4 KB pages). In the classic DCGAN-28 step at batch
# 256 a 103 MB im2col (the transposed convolution's backward of the time) took 63 ms instead of
# 20, and the product reading it 94 ms instead of 67 (2-core CPU, 2026-11-30). Served from the
# heap, the buffers' pages stay mapped from step to step: the whole step ran 1.10x faster at
# batch 256 (741-755 -> 669-675 ms, alternating processes), at batch 64 within noise. The price:
# memory freed inside the heap is not handed back to the system, so the resident size stays at
# the run's peak, which a training step reaches every step anyway.

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_TUNED = [False]


def tune_host_allocator() -> bool:
    """Keep large host buffers mapped between steps (glibc on Linux; see above): no mmap for
    large allocations, and no trimming of the heap below 2 GB of free space at its top. Once per
    process; ``GAXP_MALLOC=system`` leaves glibc's defaults. Returns whether it is in effect."""
    if _TUNED[0]:
        return True
    if os.environ.get("GAXP_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # musl and other libcs: their own policies
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False
    _TUNED[0] = ok
    return ok
