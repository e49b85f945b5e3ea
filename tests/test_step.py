"""The step: same numbers on 1 and 8 devices, BatchNorm over the global batch, one compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gaxp import sharding
from gaxp.config import load
from gaxp.models import adapter
from gaxp.models.blocks import Norm
from gaxp.loop import compile_step
from gaxp.training import Batches, prepare


def _run_steps(tiny, tmp_path, devices, n, *overrides):
    config = load(tiny(f"trainer.devices={devices}", *overrides, name=f"d{devices}"))
    run, batches, _, state, _ = prepare(config)
    key = jax.random.key(7)
    step_fn, _ = compile_step(run, state, next(batches), key)
    batches = Batches(run)  # same data for every device count
    metrics = []
    for _ in range(n):
        state, m = step_fn(state, next(batches), key)
        metrics.append(jax.device_get(m))
    return jax.device_get(state), metrics


# SGD keeps float rounding differences linear; Adam's g/sqrt(v) turns a rounding-level difference
# in a near-zero gradient into a full learning-rate step, which says nothing about the step's math.
SGD = ("optim.g.name=sgd", "optim.d.name=sgd", "optim.g.lr=1e-3", "optim.d.lr=1e-3")


@pytest.mark.parametrize("overrides", [
    ("model=dcgan", "model.g_width=8", "model.d_width=8", "data.batch_size=16"),
    ("model=mlp", "data=ring", "data.batch_size=32", "loss=wgan_gp", "loss.n_critic=2"),
    ("model=resnet", "model.g_width=8", "model.d_width=8", "data.batch_size=8",
     "data.image_size=32", "loss=hinge"),
], ids=["dcgan-bn", "mlp-wgan-gp", "resnet-sn"])
def test_one_and_eight_devices_agree(tiny, tmp_path, overrides):
    one, m1 = _run_steps(tiny, tmp_path, 1, 3, *overrides, *SGD)
    eight, m8 = _run_steps(tiny, tmp_path, 8, 3, *overrides, *SGD)
    for a, b in zip(m1, m8):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-4, err_msg=k)
    for name in ("g_params", "d_params", "g_stats", "d_stats", "g_ema"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
                     getattr(one, name), getattr(eight, name))


def test_host_fed_batches_step_as_the_global_arrays_on_eight_devices(tiny):
    """``Batches.take`` hands the step host arrays in one process: the loop lowers them as the
    sharded global batch, and the steps equal those fed ``to_global``'s arrays bit for bit."""
    from gaxp.loop import Loop

    config = load(tiny("trainer.devices=8", "model=mlp", "data=ring", "data.batch_size=32",
                       "loss.n_critic=2"))
    run, batches, ckpt, state, meta = prepare(config)
    fed = batches.take()
    assert all(isinstance(v, np.ndarray) for v in fed.values())
    step_fn = Loop(run, batches, None, ckpt, meta).program(0, state, fed)
    batch_in = step_fn.input_shardings[0][1]
    assert batch_in["x"].is_equivalent_to(batches.sharding, 3) and batch_in["x"].num_devices == 8
    key, results = jax.random.key(3), []
    for feed in (lambda b: b.take(), next):
        b, s = Batches(run), jax.tree.map(jnp.copy, state)
        for _ in range(2):
            s, m = step_fn(s, feed(b), key)
        results.append(jax.device_get((s.g_params, s.d_params, m)))
    jax.tree.map(np.testing.assert_array_equal, *results)


def test_batchnorm_statistics_use_the_global_batch():
    mesh = sharding.make_mesh(8)
    norm = Norm("batch", 3, momentum=0.5, rngs=nnx.Rngs(0))
    graphdef, params, stats = adapter.split(norm)
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * np.arange(1, 65)[:, None]
    xs = jax.device_put(x, sharding.batch_sharding(mesh))
    fn = jax.jit(lambda p, s, x: adapter.apply(graphdef, p, s, x, train=True))
    y, new = fn(params, stats, xs)
    np.testing.assert_allclose(np.asarray(new["norm"]["mean"]), 0.5 * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new["norm"]["var"]), 0.5 + 0.5 * x.var(0), rtol=1e-4)
    # normalized with global moments: every column has mean 0 and variance 1 over all 64 rows
    np.testing.assert_allclose(np.asarray(y).mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(y).var(0), 1.0, rtol=1e-3)
    # ... which is not what any one device's 8 rows give
    assert not np.allclose(0.5 * x[:8].mean(0), 0.5 * x.mean(0), rtol=1e-2)


def test_wgan_weight_clipping_bounds_every_critic_parameter(tiny, tmp_path):
    state, _ = _run_steps(tiny, tmp_path, 1, 2, "model=mlp", "data=ring", "loss=wgan",
                          "optim=rmsprop", "optim.d.lr=0.5")
    leaves = jax.tree.leaves(state.d_params)
    assert max(float(np.abs(p).max()) for p in leaves) <= 0.01 + 1e-7


def test_ema_follows_the_half_life():
    from gaxp.config import EmaSpec
    from gaxp.step import ema_beta

    beta = float(ema_beta(EmaSpec(halflife_kimg=1.0, rampup=None), 100, jnp.int32(0)))
    np.testing.assert_allclose(beta ** 10, 0.5, rtol=1e-6)  # 10 steps x 100 images = 1 kimg
    ramped = float(ema_beta(EmaSpec(halflife_kimg=1.0, rampup=0.5), 100, jnp.int32(0)))
    np.testing.assert_allclose(ramped, 0.5 ** (100 / 50), rtol=1e-6)  # half-life 0.5 x 100 images


def test_nonfinite_gradients_skip_the_whole_update(tiny, tmp_path):
    """A step whose gradients are NaN (the debug hook) leaves parameters, optimizer moments and
    BatchNorm statistics exactly as they were, and counts the skipped updates; the next step
    updates normally."""
    over = ("model=dcgan", "model.g_width=8", "model.d_width=8", "data.batch_size=16",
            "loss.n_critic=2", "trainer.guard.inject_nan=[2]")
    before, metrics = _run_steps(tiny, tmp_path, 1, 1, *over)
    after, metrics2 = _run_steps(tiny, tmp_path, 1, 2, *over)
    for name in ("g_params", "d_params", "g_stats", "d_stats"):
        jax.tree.map(np.testing.assert_array_equal, getattr(before, name), getattr(after, name))
    jax.tree.map(np.testing.assert_array_equal, before.g_opt.inner_state, after.g_opt.inner_state)
    assert int(after.step) == 2
    assert [int(m["guard/skipped_g"]) for m in metrics2] == [0, 1]
    assert [int(m["guard/skipped_d"]) for m in metrics2] == [0, 2]
    assert [int(m["guard/consecutive"]) for m in metrics2] == [0, 1]
    third, _ = _run_steps(tiny, tmp_path, 1, 3, *over)
    assert not np.array_equal(jax.tree.leaves(third.g_params)[0], jax.tree.leaves(after.g_params)[0])
