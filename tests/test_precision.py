"""trainer.precision=bf16: bfloat16 compute, float32 parameters, optimizer states, statistics,
losses and metrics; the custom conv VJPs in bfloat16; training still learns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaxp.config import load
from gaxp.models import layers
from gaxp.step import generate, train_step
from gaxp.loop import compile_step
from gaxp.api import run as train
from gaxp.training import prepare

DCGAN = ("model=dcgan", "model.g_width=8", "model.d_width=8", "data.batch_size=16",
         "trainer.devices=1")


def _float_dtypes(tree) -> set:
    return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


@pytest.mark.parametrize("overrides", [
    DCGAN,
    ("model=mlp", "data=ring", "data.batch_size=16", "trainer.devices=1", "loss=wgan_gp",
     "regularizer=[spectral_norm]"),
], ids=["dcgan-bn", "mlp-gp-sn"])
def test_bf16_computes_in_bf16_and_keeps_float32_state(tiny, overrides):
    run, batches, _, state, _ = prepare(load(tiny(*overrides, "trainer.precision=bf16")))
    batch, key = next(batches), jax.random.key(0)
    jaxpr = str(jax.make_jaxpr(lambda s, b: train_step(s, b, key, {}, spec=run.spec))(state, batch))
    assert "bf16" in jaxpr and ("dot_general" in jaxpr)
    fn, _ = compile_step(run, state, batch, key)
    for _ in range(2):
        state, metrics = fn(state, next(batches), key)
    assert _float_dtypes(state) == {"float32"}  # params, Adam moments, EMA, BN/SN statistics
    for k, v in jax.device_get(metrics).items():
        assert np.isfinite(v) and (np.asarray(v).dtype == np.float32 or k.startswith("guard/")), k
    x, _ = generate(run.spec, state.g_ema, state.g_stats, jnp.ones((2, run.spec.z_dim)), train=False)
    assert x.dtype == jnp.float32


def test_fp32_step_has_no_bf16(tiny):
    run, batches, _, state, _ = prepare(load(tiny(*DCGAN)))
    key = jax.random.key(0)
    jaxpr = str(jax.make_jaxpr(lambda s, b: train_step(s, b, key, {}, spec=run.spec))(state, next(batches)))
    assert "bf16" not in jaxpr


@pytest.mark.parametrize("cout", [1, 8], ids=["lax", "custom-vjp"])
def test_conv_transpose_gradients_in_bf16(cout):
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (4, 7, 7, 16))
    k = jax.random.normal(kk, (4, 4, 16, cout)) * 0.1
    g = jax.random.normal(kg, (4, 14, 14, cout))

    def grads(x, k):
        y, vjp = jax.vjp(layers.conv_transpose_2x, x, k)
        return (y, *vjp(g.astype(y.dtype)))

    ref = grads(x, k)
    low = grads(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
    for a, b in zip(ref, low):
        assert b.dtype == jnp.bfloat16
        err = np.linalg.norm(np.asarray(b, np.float32) - np.asarray(a)) / np.linalg.norm(a)
        assert err < 2e-2


def test_bf16_learns_the_ring(tiny):
    """A small MLP GAN in bfloat16 moves its samples from near the origin onto the unit ring."""
    config = load(tiny("model=mlp", "data=ring", "model.z_dim=8", "model.g_width=64",
                       "model.d_width=64", "data.batch_size=64", "trainer.devices=1",
                       "optim.g.lr=1e-3", "optim.d.lr=1e-3", "trainer.precision=bf16"))
    run, batches, _, state, _ = prepare(config)
    key, z = jax.random.key(1), jax.random.normal(jax.random.key(3), (1000, 8))

    def radius(s):
        x = generate(run.spec, s.g_params, s.g_stats, z, train=False)[0]
        return np.linalg.norm(np.asarray(x), axis=1)

    r0 = radius(state)
    near_before = np.mean(np.abs(r0 - 1) < 0.2)
    fn, _ = compile_step(run, state, next(batches), key)
    for _ in range(400):
        state, metrics = fn(state, next(batches), key)
    r, m = radius(state), jax.device_get(metrics)
    near = np.mean(np.abs(r - 1) < 0.2)
    assert abs(np.median(r) - 1) < 0.25 and near > max(0.15, 2 * near_before), \
        (np.median(r0), near_before, np.median(r), near)
    assert 0.3 < m["train/d_loss"] < 2.0 and np.isfinite(m["train/g_loss"])


def test_short_bf16_mnist_dcgan_run(tiny):
    summary = train(load(tiny("model.g_width=16", "model.d_width=16", "data.batch_size=32",
                              "trainer.devices=2", "trainer.precision=bf16", "trainer.steps=30",
                              "trainer.log_every=10", "trainer.ckpt_every=30",
                              "trainer.sample_every=30")))
    assert summary["steps"] == 30 and summary["step_traces"] == 1
    final = summary["final"]
    assert all(np.isfinite(final[k]) for k in ("train/d_loss", "train/g_loss"))
    assert final["guard/skipped_d"] == 0 and final["guard/skipped_g"] == 0
    assert 0.05 < final["train/d_loss"] < 5
