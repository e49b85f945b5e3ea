"""Progressive growing (model=progan, gaxp.models.growth): fade-in of G, of D's input path and of the real
images, equalized learning rate, pixel norm, the schedule, one compile per stage, exact resume
mid-stage, the drift term, and the one-line errors for sizes that do not fit the schedule."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compose
from flax import nnx

from gaxp import regularizers
from gaxp.models import growth as grow
from gaxp.config import check_for_data, load
from gaxp.errors import ConfigError
from gaxp.models import ARCHS
from gaxp.models.blocks import lrelu
from gaxp.models.progan import EqConv, EqDense, downsample, pixel_norm, upsample
from gaxp.api import run as train

SMALL = ("model=progan", "model.z_dim=16", "model.grow.resolutions=[4,8,16]",
         "model.grow.g_widths=[16,8,8]", "model.grow.d_widths=[16,8,8]", "data.image_size=16")


def _config(*overrides):
    return load(compose(*SMALL, *overrides))


def _nets(*overrides, shape=(16, 16, 1)):
    c = _config(*overrides)
    g, d = ARCHS["progan"].build(c.model, shape, True, nnx.Rngs(params=0))
    return c, g, d


def _images(n=8, size=16, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 1), minval=-1.0, maxval=1.0)


def test_generator_fade_in_interpolates_between_resolutions():
    _, g, _ = _nets()
    z = jax.random.normal(jax.random.key(0), (8, 16))
    low = g(z, train=False, stage=1, alpha=1.0)  # the 8 px image
    at0, at1 = g(z, train=False, stage=2, alpha=0.0), g(z, train=False, stage=2, alpha=1.0)
    mid = g(z, train=False, stage=2, alpha=0.3)
    assert low.shape == (8, 8, 8, 1) and at0.shape == at1.shape == (8, 16, 16, 1)
    np.testing.assert_array_equal(at0, upsample(low, 2))  # alpha 0: the previous resolution
    new = g.to_rgb[2](g.features(z, 2)[2])
    np.testing.assert_array_equal(at1, new)  # alpha 1: the new resolution's toRGB alone
    np.testing.assert_allclose(mid, 0.7 * at0 + 0.3 * at1, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(at1 - at0))) > 1e-3  # the two ends differ: not a vacuous blend


def test_discriminator_input_path_fades_in():
    _, _, d = _nets()
    x = _images()
    low = lrelu(d.from_rgb[1](downsample(x, 2)))
    high = d.blocks[1](lrelu(d.from_rgb[2](x)))
    np.testing.assert_array_equal(d.input_features(x, 2, jnp.float32(0.0)), low)
    np.testing.assert_array_equal(d.input_features(x, 2, jnp.float32(1.0)), high)
    np.testing.assert_allclose(d.input_features(x, 2, jnp.float32(0.25)), 0.75 * low + 0.25 * high,
                               rtol=1e-5, atol=1e-6)
    # alpha 0 at 16 px is the 8 px discriminator on the pooled images; no stage: read from the size
    np.testing.assert_allclose(d(x, train=True, stage=2, alpha=0.0),
                               d(downsample(x, 2), train=True, stage=1, alpha=1.0), rtol=1e-5)
    np.testing.assert_array_equal(d(x, train=True), d(x, train=True, stage=2, alpha=1.0))


def test_sampling_draws_the_last_trained_stage_at_full_size():
    _, g, _ = _nets()
    z = jax.random.normal(jax.random.key(3), (4, 16))
    assert int(g.stage[...]) == 0  # a fresh G samples its 4 px image, upsampled
    np.testing.assert_allclose(g(z, train=False), upsample(g(z, train=False, stage=0), 4),
                               atol=1e-6)
    g(z, train=True, stage=1, alpha=jnp.float32(0.4))  # a training call records stage and alpha
    assert int(g.stage[...]) == 1 and float(g.alpha[...]) == pytest.approx(0.4)
    np.testing.assert_allclose(g(z, train=False),
                               upsample(g(z, train=False, stage=1, alpha=0.4), 2), atol=1e-5)


def test_real_images_are_pooled_to_the_stage_and_faded():
    c = _config("data.batch_size=16", "model.grow.fade_kimg=0.16", "model.grow.stable_kimg=0.16")
    sched = grow.growth(c)
    assert sched.starts == (0, 10, 30) and sched.fades == (0, 10, 10)  # 0.16 kimg = 10 steps of 16
    x = _images(size=16)
    at = lambda step: dataclasses.replace(sched, stage=sched.stage_at(step))  # noqa: E731
    s2 = at(30)  # stage 2 from step 30, fading in until step 40
    np.testing.assert_array_equal(s2.real(x, jnp.int32(40)), x)
    np.testing.assert_allclose(s2.real(x, jnp.int32(30)), upsample(downsample(x, 2), 2), atol=1e-6)
    np.testing.assert_allclose(s2.real(x, jnp.int32(34)),
                               0.6 * upsample(downsample(x, 2), 2) + 0.4 * x, atol=1e-6)
    s0 = at(5)
    assert s0.stage == 0 and s0.real(x, jnp.int32(5)).shape == (8, 4, 4, 1)
    np.testing.assert_allclose(s0.real(x, jnp.int32(5))[0, 0, 0, 0], jnp.mean(x[0, :4, :4, 0]),
                               rtol=1e-6)
    assert [float(at(t).alpha(jnp.int32(t))) for t in (9, 10, 15, 20, 29)] == [1, 0, 0.5, 1, 1]


def test_equalized_learning_rate_scales_weights_to_he_std():
    rngs = nnx.Rngs(params=0)
    conv, dense = EqConv(256, 128, 3, rngs=rngs), EqDense(1024, 512, gain=1.0, rngs=rngs)
    for layer, he in ((conv, np.sqrt(2 / (9 * 256))), (dense, np.sqrt(1 / 1024))):
        stored, runtime = np.asarray(layer.kernel[...]), np.asarray(layer.weight())
        np.testing.assert_allclose(stored.std(), 1.0, rtol=0.02)  # stored N(0, 1)
        np.testing.assert_allclose(runtime.std(), he, rtol=0.02)  # used: He's std
        np.testing.assert_allclose(runtime, stored * he, rtol=1e-6)


def test_pixel_norm_is_scale_invariant_with_unit_mean_square():
    x = jax.random.normal(jax.random.key(0), (4, 5, 5, 32)) * 3.0 + 1.0
    y = pixel_norm(x)
    np.testing.assert_allclose(jnp.mean(jnp.square(y), axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(pixel_norm(7.5 * x), y, rtol=1e-5, atol=1e-6)


def test_drift_term_adds_epsilon_times_mean_square_of_real_scores():
    r, f = jnp.array([1.0, -2.0, 3.0]), jnp.zeros(3)
    regs = load(compose("regularizer=[drift]")).regularizer
    total, metrics = regularizers.d_terms(regs, "wgan", None, None, None, r, f,
                                          jax.random.key(0), 0)
    np.testing.assert_allclose(metrics["train/drift"], 14.0 / 3, rtol=1e-6)
    np.testing.assert_allclose(total, 0.001 * 14.0 / 3, rtol=1e-6)


RUN = (*SMALL, "loss=ns", "data.batch_size=16", "trainer.devices=2",
       "model.grow.fade_kimg=0.064", "model.grow.stable_kimg=0.032",  # 4 + 2 steps per stage
       "trainer.log_every=1", "trainer.ckpt_every=5", "trainer.sample_every=100")


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_each_stage_compiles_once_and_resume_mid_fade_is_exact(tiny, tmp_path):
    # stages: 4 px steps 0-1, 8 px from step 2 (fade-in until step 6), 16 px from step 8
    straight = train(tiny(*RUN, "trainer.steps=11", name="straight"))
    assert straight["step_traces"] == 3  # one program per stage, each compiled once
    assert [(s["phase"], s["value"], s["from_step"], s["steps"]) for s in straight["phases"]] == \
        [("stage 0 (4 px)", [0], 0, 2), ("stage 1 (8 px)", [1], 2, 6), ("stage 2 (16 px)", [2], 8, 3)]
    rows = _rows(tmp_path / "straight")
    assert [r["grow/resolution"] for r in rows] == [4] * 2 + [8] * 6 + [16] * 3
    np.testing.assert_allclose([r["grow/alpha"] for r in rows],
                               [1, 1, 0, .25, .5, .75, 1, 1, 0, .25, .5])
    first = train(tiny(*RUN, "trainer.steps=5", name="split"))  # stops at step 5, mid fade-in
    resumed = train(tiny(*RUN, "trainer.steps=11", "trainer.resume=true", name="split"))
    assert first["step_traces"] == 2 and resumed["resumed_from"] == 5
    assert resumed["step_traces"] == 2  # 8 px (resumed mid-stage) and 16 px
    assert resumed["digest"] == straight["digest"]
    np.testing.assert_array_equal([r["train/d_loss"] for r in _rows(tmp_path / "split")],
                                  [r["train/d_loss"] for r in rows])
    assert (tmp_path / "straight" / "samples" / "step_0000011.png").exists()


@pytest.mark.parametrize("overrides,message", [
    (("data.image_size=null",), "model=progan cannot grow to 28x28 px images"),
    (("data.image_size=32",), "model.grow.resolutions=[4, 8, 16] ends at 16 px but the images are "
                              "32x32 px; end the schedule at the data size "
                              "(model.grow.resolutions=[4, 8, 16, 32]"),
    (("model.grow.resolutions=[4,12,24]", "data.image_size=24"), "must start at 4 and double"),
    (("model.grow.g_widths=[8,8]",), "model.grow.g_widths needs one positive width per resolution"),
    (("model.grow.fade_kimg=[1,2]",), "model.grow.fade_kimg must be one number or one per"),
    (("regularizer=[spectral_norm]",), "model=progan uses an equalized learning rate"),
])
def test_schedules_that_do_not_fit_give_one_line(overrides, message):
    c = _config(*overrides)
    with pytest.raises(ConfigError) as e:
        check_for_data(c, (c.data.image_size or 28,) * 2 + (1,), True)
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="model=progan needs image data"):
        check_for_data(_config(), (2,), False)


def test_grow_schedule_on_another_model_is_refused():
    from gaxp.specs import GrowSpec

    c = load(compose())
    c = dataclasses.replace(c, model=dataclasses.replace(c.model, grow=GrowSpec()))
    with pytest.raises(ConfigError, match="model.grow is the progressive-growing schedule"):
        grow.growth(c)


@pytest.mark.parametrize("cin,cout", [(6, 5), (4, 1)])  # the custom-VJP path and the lax path
def test_fused_upsample_conv_equals_upsample_then_conv(cin, cout):
    from gaxp.models.progan import conv_upsampled
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, cin))
    w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout))

    def ref(x, w):
        return jax.lax.conv_general_dilated(upsample(x, 2), w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    np.testing.assert_allclose(conv_upsampled(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
    for a, b in zip(jax.grad(loss(conv_upsampled), (0, 1))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
