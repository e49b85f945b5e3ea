"""Image-to-image tasks (gaxp.tasks): Pix2Pix, SRGAN, CycleGAN; their models, data and metrics."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from gaxp.config import ModelSpec, TaskSpec, load
from gaxp.data import make_dataset
from gaxp.data.paired import box_down, build_folder, edges
from gaxp.errors import ConfigError
from gaxp.models.srgan import pixel_shuffle, scale_stages
from gaxp.models.unet import UNet
from gaxp.tasks.evaluate import pixel_metrics
from gaxp.tasks.steps import cycle_terms, pix2pix_loss, srgan_content
from gaxp.api import run as train


def test_pixel_shuffle_matches_a_hand_computed_example():
    # Two output channels, r = 2: input channel c*4 + i*2 + j goes to pixel (i, j) of channel c.
    x = jnp.arange(8.0).reshape(1, 1, 1, 8)
    out = pixel_shuffle(x, 2)
    assert out.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(out[0, ..., 0], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(out[0, ..., 1], [[4, 5], [6, 7]])
    # Two input pixels wide, r = 3: each becomes its own 3x3 block, side by side.
    y = jnp.stack([jnp.arange(9.0), 10 + jnp.arange(9.0)]).reshape(1, 1, 2, 9)
    np.testing.assert_array_equal(pixel_shuffle(y, 3)[0, ..., 0],
                                  [[0, 1, 2, 10, 11, 12], [3, 4, 5, 13, 14, 15],
                                   [6, 7, 8, 16, 17, 18]])
    assert scale_stages(4) == [2, 2] and scale_stages(6) == [2, 3] and scale_stages(7) is None


def test_cycle_loss_is_exactly_zero_for_identity_generators():
    a = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1), minval=-1, maxval=1)
    b = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1), minval=-1, maxval=1)
    t = cycle_terms(lambda v: v, lambda v: v, a, b)
    assert float(t["cycle"]) == 0.0 and float(t["identity"]) == 0.0
    # A generator that is not the identity is penalized by both terms.
    t = cycle_terms(lambda v: 0.5 * v, lambda v: v, a, b)
    np.testing.assert_allclose(t["cycle_a"], 0.5 * jnp.mean(jnp.abs(a)), rtol=1e-6)
    np.testing.assert_allclose(t["identity"], 0.5 * jnp.mean(jnp.abs(b)), rtol=1e-6)


def test_pix2pix_loss_is_adversarial_plus_lambda_l1_on_known_values():
    fake = jnp.full((2, 4, 4, 1), 0.5)
    target = jnp.full((2, 4, 4, 1), 0.25)
    value, m = pix2pix_loss(jnp.float32(0.7), fake, target, adv_weight=1.0, l1_weight=100.0)
    np.testing.assert_allclose(m["train/l1"], 0.25)
    np.testing.assert_allclose(value, 0.7 + 100 * 0.25, rtol=1e-6)
    value, _ = pix2pix_loss(jnp.float32(0.7), fake, target, adv_weight=2.0, l1_weight=10.0)
    np.testing.assert_allclose(value, 1.4 + 2.5, rtol=1e-6)


def test_srgan_content_is_pixel_mse_without_a_feature_network():
    out, x = jnp.zeros((1, 2, 2, 1)), jnp.full((1, 2, 2, 1), 0.5)
    value, m = srgan_content(out, x, TaskSpec(name="srgan", pixel_weight=2.0))
    np.testing.assert_allclose(value, 2.0 * 0.25)
    np.testing.assert_allclose(m["train/mse"], 0.25)
    # With a feature network (here features = 3 * image): + perceptual_weight * feature MSE.
    features = (jnp.float32(3.0), lambda p, img: p * img.reshape(img.shape[0], -1))
    t = TaskSpec(name="srgan", pixel_weight=0.0, perceptual_weight=0.5)
    value, m = srgan_content(out, x, t, features)
    np.testing.assert_allclose(m["train/perceptual"], 9 * 0.25, rtol=1e-6)
    np.testing.assert_allclose(value, 0.5 * 9 * 0.25, rtol=1e-6)


def _unet(skips: bool):
    spec = ModelSpec(g_width=8, g_depth=2)
    net = UNet(spec, 1, 1, rngs=nnx.Rngs(params=0), skips=skips)
    # Cut the bottleneck: the deepest encoder level outputs a constant.
    net.downs[-1].kernel[...] = jnp.zeros_like(net.downs[-1].kernel[...])
    return net


def test_unet_output_shape_and_skip_connections():
    x1 = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1), minval=-1, maxval=1)
    x2 = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1), minval=-1, maxval=1)
    with_skips, without = _unet(True), _unet(False)
    assert with_skips(x1, train=False).shape == (2, 28, 28, 1)
    # Through the skip connections the output still depends on the input...
    assert float(jnp.max(jnp.abs(with_skips(x1, train=False) - with_skips(x2, train=False)))) > 1e-3
    # ...without them the cut bottleneck makes it constant.
    np.testing.assert_allclose(without(x1, train=False), without(x2, train=False), atol=1e-6)


def test_mnist_pairs_are_built_as_documented():
    ds = make_dataset("mnist_pairs", "lowres4")
    assert ds.shape == (28, 28, 1) and ds.source_shape == (7, 7, 1) and ds.paired
    batch = ds.records.gather(np.arange(3))
    np.testing.assert_array_equal(batch["c"], box_down(batch["x"], 4))
    e = make_dataset("mnist_pairs", "edges").records.gather(np.arange(3))
    np.testing.assert_array_equal(e["c"], edges(e["x"]))
    u = make_dataset("mnist_pairs", "thick_unpaired")
    assert not u.paired and len(u.records) == 2500


def test_mnist_pair_transforms_on_a_hand_built_image():
    """An independent reference: an 8x8 image whose 4x4 block means and stroke contour are known
    by construction, through the transforms the mnist_pairs datasets apply."""
    from gaxp.data.paired import mnist_transform

    x = np.zeros((1, 8, 8, 1), np.uint8)
    x[0, :4, :4] = 100                  # top-left block: mean 100
    x[0, 4:, 4:] = np.array([[0, 255, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])[..., None]
    x[0, :4, 4:] = 3                    # top-right: mean 3; bottom-left stays 0
    low, target = mnist_transform("lowres4", 8)[0](x)
    np.testing.assert_array_equal(low[0, ..., 0], [[100, 3], [0, 16]])  # 255 / 16 = 15.94 -> 16
    np.testing.assert_array_equal(target, x)
    src, _ = mnist_transform("edges", 8)[0](x)
    want = np.zeros((8, 8), np.uint8)   # the one ink pixel (> 127) at (4, 5): its 8 neighbours
    for r, c in [(3, 4), (3, 5), (3, 6), (4, 4), (4, 6), (5, 4), (5, 5), (5, 6)]:
        want[r, c] = 255
    np.testing.assert_array_equal(src[0, ..., 0], want)


def test_paired_folder_reads_pairs_and_refuses_unmatched_names(tmp_path):
    rng = np.random.default_rng(0)
    for side in ("A", "B"):
        (tmp_path / "train" / side).mkdir(parents=True)
        for name in ("cat", "dog", "eel"):
            Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).save(
                tmp_path / "train" / side / f"{name}.png")
    ds = build_folder("paired", data_dir=str(tmp_path))
    assert ds.shape == (16, 16, 1) and len(ds.records) == 3 and ds.paired
    a = np.asarray(Image.open(tmp_path / "train" / "A" / "dog.png"))
    np.testing.assert_array_equal(ds.records.c[1, ..., 0], a)
    (tmp_path / "train" / "B" / "eel.png").rename(tmp_path / "train" / "B" / "fox.png")
    with pytest.raises(ConfigError, match="eel has no partner in .*B/"):
        build_folder("paired", data_dir=str(tmp_path))
    assert not build_folder("unpaired", data_dir=str(tmp_path)).paired


def test_psnr_ssim_l1_are_measured_in_unit_range():
    x = jnp.zeros((2, 16, 16, 1))
    m = pixel_metrics(x + 0.2, x)  # [-1, 1] offset 0.2 = 0.1 in [0, 1]: MSE 0.01 -> 20 dB
    np.testing.assert_allclose(m["psnr"], 20.0, rtol=1e-5)
    np.testing.assert_allclose(m["l1"], 0.1, rtol=1e-5)
    np.testing.assert_allclose(pixel_metrics(x, x)["ssim"], 1.0, rtol=1e-5)


SR_SMALL = ("experiment=srgan_mnist", "model.g_width=16", "model.g_depth=2", "model.d_width=8",
            "model.d_depth=1", "data.batch_size=32", "metrics=translation", "metrics.split=train",
            "metrics.n_real=200", "trainer.log_every=50", "trainer.sample_every=1000",
            "trainer.ckpt_every=1000", "trainer.devices=2", "data.name=lowres2")


def test_srgan_beats_bicubic_after_short_training(tiny, tmp_path):
    summary = train(tiny(*SR_SMALL, "trainer.steps=100", "metrics.every=1000"))
    ev = summary["eval"]
    assert summary["step_traces"] == 1
    assert ev["eval/psnr"] > ev["eval/psnr_bicubic"] + 1.0, ev
    assert ev["eval/ssim"] > ev["eval/ssim_bicubic"], ev
    grid = Image.open(tmp_path / "run" / "samples" / "step_0000100.png")
    assert grid.width > grid.height  # source | bicubic | output | target columns
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 100 and "eval/psnr" in rows[-1]
    assert np.isfinite(rows[-2]["train/mse"]) and rows[-2]["step"] == 100


def test_pix2pix_resumes_exactly(tiny, tmp_path):
    # (every experiment config also runs in test_train.py::test_every_experiment_runs)
    # g_depth 2: one inner decoder level, where the U-Net's dropout (0.5) draws from the step key
    small = ("experiment=pix2pix_mnist_edges", "model.g_width=8", "model.d_width=8", "model.g_depth=2",
             "data.batch_size=16", "trainer.log_every=1", "trainer.ckpt_every=2",
             "trainer.sample_every=2", "trainer.devices=2")
    full = train(tiny(*small, "trainer.steps=4", name="full"))
    train(tiny(*small, "trainer.steps=2", name="part"))
    resumed = train(tiny(*small, "trainer.steps=4", f"trainer.resume={tmp_path / 'part'}",
                         name="part"))
    assert resumed["digest"] == full["digest"] and resumed["resumed_from"] == 2
    assert np.isfinite(full["final"]["train/g_loss"])


@pytest.mark.parametrize("overrides,message", [
    (("task=pix2pix", "model=pix2pix"), "task=pix2pix needs source/target images"),
    (("experiment=pix2pix_mnist_edges", "data.name=inverted_unpaired"), "needs paired images"),
    (("experiment=srgan_mnist", "data.name=lowres7"), "cannot produce x7 super-resolution"),
    (("experiment=cyclegan_mnist", "model.d_depth=3"), "do not fit model.d_depth=3"),
    (("experiment=srgan_mnist", "task.perceptual=/nonexistent"), "no feature network there"),
    (("experiment=pix2pix_mnist_edges", "regularizer=[r1]"), "supports regularizer=spectral_norm"),
])
def test_bad_translation_inputs_fail_before_compiling(tiny, overrides, message):
    from gaxp.training import setup

    with pytest.raises(ConfigError, match=message):
        setup(load(tiny(*overrides)))


def test_tfds_cycle_gan_domains_train_through_grain(tiny):
    """TFDS cycle_gan/* (trainA, trainB as domains) end to end on TFDS's mock data."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        summary = train(tiny("experiment=cyclegan_mnist", "data=tfds_cycle_gan",
                             "data.image_size=16", "data.batch_size=4", "model.g_width=4",
                             "model.d_width=4", "model.g_depth=1", "trainer.steps=2",
                             "trainer.log_every=1", "trainer.devices=2"))
    assert summary["steps"] == 2 and np.isfinite(summary["final"]["train/cycle_a"])


def test_srgan_perceptual_loss_trains_with_a_saved_feature_network(tiny, tmp_path):
    from gaxp.metrics import classifier

    params = classifier.LeNet(10).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    where = tmp_path / "nets" / "classifiers" / "mnist"
    classifier.save(where, params, name="mnist", dataset=make_dataset("mnist", "mnist"),
                    info={"accuracy": 0.0, "accuracy_split": "none (random weights)"})
    summary = train(tiny("experiment=srgan_mnist", f"task.perceptual={where}", "model.g_width=4",
                         "model.d_width=4", "model.g_depth=1", "model.d_depth=1",
                         "data.batch_size=8", "trainer.steps=2", "trainer.log_every=1",
                         "trainer.devices=2"))
    assert summary["final"]["train/perceptual"] > 0 and np.isfinite(summary["final"]["train/g_loss"])


def test_translation_metrics_with_a_saved_classifier_on_two_devices(tiny, tmp_path):
    """The Frechet distance in a cached classifier's features, on a 2-device run: the classifier's
    weights must sit on the run's mesh (they were on one device: incompatible-devices error)."""
    from gaxp.metrics import classifier

    params = classifier.LeNet(10).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    classifier.save(classifier.directory("mnist", (28, 28, 1), tmp_path / "nets"), params,
                    name="mnist", dataset=make_dataset("mnist", "mnist"),
                    info={"accuracy": 0.0, "accuracy_split": "none (random weights)",
                          "min_accuracy": 0.0})  # plumbing only: metrics refuse < 97% otherwise
    small = [o for o in SR_SMALL if not o.startswith("metrics.n_real")]
    summary = train(tiny(*small, "trainer.steps=2", "metrics.every=2", "metrics.n_real=16",
                         "metrics.batch_size=8", f"metrics.cache_dir={tmp_path / 'nets'}"))
    assert summary["steps"] == 2 and np.isfinite(summary["final"]["eval/fd_mnist"])
