"""gaxp's own XLA options (gaxp.xla) reach the programs it compiles: on CPU the train step's
convolutions stay XLA's (YNNPACK gets the matrix products one by one) and the donated Adam
moments are updated in place, without copies around the non-finite guard's select."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import pytest

from gaxp import xla


def _step_hlo(tiny, overrides):
    from gaxp.config import load
    from gaxp.loop import compile_step
    from gaxp.training import prepare

    run, batches, _, state, _ = prepare(load(tiny(*overrides)))
    return compile_step(run, state, next(batches), jax.random.key(0))[0].as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU options")
def test_cpu_step_keeps_convolutions_out_of_ynnpack_and_moments_uncopied(tiny):
    hlo = _step_hlo(tiny, ["model.g_width=8", "model.d_width=8", "data.batch_size=8", "trainer.devices=1"])
    calls = dict(re.findall(r"%(ynn_fusion[\w.\-]*) = [^\n]*calls=%([\w.\-]+)", hlo))
    bodies = {m.group(1): m.group(0) for m in re.finditer(r"^%([\w.\-]+) \(.*?^}", hlo, re.S | re.M)}
    assert calls, "YNNPACK still gets the matrix products"
    assert not [c for c in calls.values() if " convolution(" in bodies[c]]
    assert " convolution(" in hlo  # XLA's own
    copied = re.findall(r"= \S+ copy\(%state_[dg]_opt_inner_state_\S*__(?:mu|nu)__", hlo)
    assert not copied, copied[:3]


def test_options_are_per_platform_and_extra_wins():
    assert xla.options("cpu")["xla_cpu_copy_insertion_use_region_analysis"] is True
    assert xla.options("gpu") == {}
    assert xla.options("cpu", {"xla_cpu_copy_insertion_use_region_analysis": False})[
        "xla_cpu_copy_insertion_use_region_analysis"] is False


_FAULTS = r"""
import ctypes, resource, sys
from gaxp import xla
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def faults(cycles=4, size=96 << 20):  # a step's large buffer, freed and allocated again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
system = faults()
tuned = xla.tune_host_allocator()
faults(1)  # the heap grows once
print(tuned, system, faults(), file=sys.stderr)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("setting", ["", "system"])
def test_tuned_host_allocator_keeps_large_buffers_mapped(setting):
    """After tune_host_allocator, a 96 MB buffer freed and allocated again reuses its pages: with
    glibc's defaults each allocation is a fresh mmap that page-faults again (the cost it removes
    from large CPU steps). GAXP_MALLOC=system leaves the defaults."""
    env = dict(os.environ, GAXP_MALLOC=setting)
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True,
                         check=False, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    tuned, system, after = out.stderr.split()[-3:]
    if setting == "system":
        assert tuned == "False" and int(after) > int(system) / 2, out.stderr
    else:
        assert tuned == "True" and int(system) > 40 and int(after) < int(system) / 10, out.stderr
