"""How the image-to-image tasks train as in their papers: Pix2Pix's dropout noise, CycleGAN's
history pool, SRGAN's MSE pre-training phase (the learning-rate decay: tests/test_optim.py)."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gaxp import phases as gaxp_phases
from gaxp.config import ModelSpec, load
from gaxp.errors import ConfigError
from gaxp.models.unet import UNet
from gaxp.tasks import pool
from gaxp.loop import compile_step
from gaxp.api import run as train
from gaxp.training import prepare


def _unet(**kw):
    return UNet(ModelSpec(g_width=8, g_depth=2, **kw), 1, 1, rngs=nnx.Rngs(params=0))


def test_unet_dropout_is_the_only_noise_and_follows_the_key():
    c = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1), minval=-1, maxval=1)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    net = _unet(dropout=0.5)
    differ = lambda a, b: float(jnp.max(jnp.abs(a - b))) > 1e-3  # noqa: E731
    # training: two keys give two outputs, the same key the same output, no key no dropout
    assert differ(net(c, train=True, noise=k1), net(c, train=True, noise=k2))
    np.testing.assert_array_equal(net(c, train=True, noise=k1), net(c, train=True, noise=k1))
    # test time: on by default (as the paper samples), off with dropout_at_test=False
    assert differ(net(c, train=False, noise=k1), net(c, train=False, noise=k2))
    off = _unet(dropout=0.5, dropout_at_test=False)
    np.testing.assert_array_equal(off(c, train=False, noise=k1), off(c, train=False, noise=k2))
    none = _unet(dropout=0.0)
    np.testing.assert_array_equal(none(c, train=True, noise=k1), none(c, train=True, noise=k2))


def test_dropout_drops_half_the_units_and_rescales_the_rest():
    net = _unet(dropout=0.5)
    h = jnp.ones((64, 7, 7, 32))
    out = np.asarray(net._drop(h, 0, jax.random.key(3), True))
    assert set(np.unique(out)) == {0.0, 2.0}  # inverted dropout: kept units times 1 / (1 - 0.5)
    np.testing.assert_allclose(np.mean(out == 0), 0.5, atol=0.01)  # 100k units: sd 0.0016
    # only the first dropout_levels decoder levels are dropped
    np.testing.assert_array_equal(_unet(dropout=0.5, dropout_levels=1)._drop(h, 1, jax.random.key(3), True), h)


def _reference_pool(images, stored, filled, key):
    """The paper's buffer in plain numpy with the same random draws as ``pool.query``."""
    stored, out, used = np.array(stored), [], []
    for img, k in zip(np.asarray(images), jax.random.split(key, len(images))):
        k_swap, k_idx = jax.random.split(k)
        if filled < len(stored):
            stored[filled] = img
            filled += 1
            out.append(img), used.append(False)
        elif bool(jax.random.bernoulli(k_swap, 0.5)):
            idx = int(jax.random.randint(k_idx, (), 0, len(stored)))
            out.append(stored[idx].copy()), used.append(True)
            stored[idx] = img
        else:
            out.append(img), used.append(False)
    return np.stack(out), stored, filled, np.array(used)


def test_pool_fills_then_swaps_exactly_as_specified():
    size, batch = 6, 4
    state = pool.init(size, (2, 2, 1), (2, 2, 1))
    stored, filled = state["a"], state["n"]
    ref_stored, ref_filled = np.zeros((size, 2, 2, 1), np.float32), 0
    query = jax.jit(pool.query)
    for k in range(5):  # fill (4, then 2 of the next batch), then swap with probability 1/2
        images = jnp.arange(batch, dtype=jnp.float32)[:, None, None, None] * jnp.ones((1, 2, 2, 1)) + 10 * k
        key = jax.random.key(k)
        out, stored, filled, used = query(images, stored, filled, key)
        ref_out, ref_stored, ref_filled, ref_used = _reference_pool(images, ref_stored, ref_filled, key)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(stored, ref_stored)
        np.testing.assert_array_equal(used, ref_used)
        assert int(filled) == ref_filled == min(size, batch * (k + 1))
        if k == 0:  # while filling, D sees the new images and they are stored in order
            np.testing.assert_array_equal(out, images)
            np.testing.assert_array_equal(stored[:batch], images)


def test_pool_shows_stored_images_half_the_time_once_full():
    size, batch, steps = 50, 32, 200
    stored = jnp.arange(size, dtype=jnp.float32)[:, None] - 100.0  # marked: negative values
    images = jnp.arange(batch, dtype=jnp.float32)[:, None]

    def body(carry, key):
        stored, filled = carry
        out, stored, filled, used = pool.query(images, stored, filled, key)
        return (stored, filled), (used, out)

    keys = jax.random.split(jax.random.key(0), steps)
    (_, filled), (used, out) = jax.jit(lambda s: jax.lax.scan(body, (s, jnp.int32(size)), keys))(stored)
    # 6,400 Bernoulli(1/2) draws: standard deviation 0.00625; 4 sigma
    np.testing.assert_allclose(np.mean(used), 0.5, atol=0.025)
    assert int(filled) == size
    # what D sees from the pool is an earlier image (an initial one or an earlier batch's), else new
    np.testing.assert_array_equal(np.asarray(out)[~np.asarray(used)][:, 0],
                                  np.broadcast_to(images[:, 0], (steps, batch))[~np.asarray(used)])


CG = ("experiment=cyclegan_mnist", "model.g_width=4", "model.d_width=4", "model.g_depth=1",
      "data.batch_size=4", "task.pool_size=4", "trainer.steps=4", "trainer.ckpt_every=2",
      "trainer.log_every=1", "trainer.sample_every=100", "trainer.devices=2")


@pytest.mark.slow
def test_cyclegan_with_pool_and_lr_decay_resumes_exactly(tiny, tmp_path):
    full = train(tiny(*CG, name="run"))
    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert rows[0]["train/pool_fraction"] == 0.0  # step 1 fills the pool of 4 with the batch of 4
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "4")
    resumed = train(tiny(*CG, f"trainer.resume={tmp_path / 'run'}", name="run"))
    assert resumed["resumed_from"] == 2 and resumed["digest"] == full["digest"]


SR = ("experiment=srgan_mnist", "model.g_width=4", "model.d_width=4", "model.g_depth=1",
      "model.d_depth=1", "data.batch_size=8", "task.pretrain_steps=3", "trainer.steps=4",
      "trainer.ckpt_every=2", "trainer.log_every=1", "trainer.sample_every=100", "trainer.devices=2")


def test_srgan_pretraining_leaves_d_untouched_then_switches(tiny):
    run, batches, ckpt, state, _ = prepare(load(tiny(*SR)))
    key = jax.random.key(0)
    host = lambda s: jax.device_get((s.d_params, s.d_stats, s.d_opt, s.g_params))  # noqa: E731
    d0, d_stats0, d_opt0, g0 = host(state)
    phases = []
    for step in range(4):
        spec = gaxp_phases.bind(run.spec, gaxp_phases.active(run.phases, step))
        phases.append(spec.phase)
        batch = next(batches)
        fn, _ = compile_step(run, state, batch, key, spec)
        state, m = fn(state, batch, key)
        d, d_stats, d_opt, g = host(state)
        assert float(m["train/pretrain"]) == (1.0 if step < 3 else 0.0)
        if step < 3:  # G alone on pixel MSE: D's parameters, statistics and optimizer as they were
            jax.tree.map(np.testing.assert_array_equal, (d, d_stats, d_opt), (d0, d_stats0, d_opt0))
            assert "train/d_loss" not in m and np.isfinite(float(m["train/mse"]))
    assert phases == ["pretrain"] * 3 + ["adversarial"]
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), d, d0))
    assert any(changed) and any(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), g, g0)))
    ckpt.close()


@pytest.mark.slow
def test_srgan_resumed_mid_pretraining_is_exact(tiny, tmp_path):
    full = train(tiny(*SR, name="run"))
    assert full["step_traces"] == 2  # one program per phase
    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["train/pretrain"] for r in rows] == [1.0, 1.0, 1.0, 0.0]
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "4")
    resumed = train(tiny(*SR, f"trainer.resume={tmp_path / 'run'}", name="run"))
    assert resumed["resumed_from"] == 2 and resumed["digest"] == full["digest"]


@pytest.mark.parametrize("overrides,message", [
    (("experiment=cyclegan_mnist", "task.pool_size=-1"), "task.pool_size must be >= 0"),
    (("experiment=srgan_mnist", "task.pretrain_steps=600"), "leaves no adversarial training"),
    (("experiment=pix2pix_mnist_edges", "+task.pretrain_steps=10"), "task=pix2pix has none"),
    (("experiment=pix2pix_mnist_edges", "+task.pool_size=50"), "task.pool_size is CycleGAN's"),
    (("optim.g.decay=1.5",), "optim.g.decay is the fraction"),
    (("experiment=pix2pix_mnist_edges", "model.dropout=1.0"), "model.dropout must be in [0, 1)"),
    (("experiment=pix2pix_mnist_edges", "model.g_depth=1"), "model.dropout needs a U-Net decoder"),
    (("+model.dropout=0.5",), "model=dcgan has none"),
    (("+task.pool_size=50",), "task=gan has none"),
])
def test_bad_schedule_and_noise_settings_fail_in_config(tiny, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        load(tiny(*overrides))
