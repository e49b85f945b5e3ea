"""gaxp's own XLA options (gaxp.xla) reach the programs it compiles: on CPU the train step's
convolutions stay XLA's (YNNPACK gets the matrix products one by one) and the donated Adam
moments are updated in place, without copies around the non-finite guard's select."""

from __future__ import annotations

import re

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
