"""Conditional GANs: projection D math, AC-GAN terms, labeled toy data, the defining behaviour
(samples asked for class k land on class k), bad input, exact resume and class-wise sampling."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gaxp import conditional
from gaxp.config import ModelSpec
from gaxp.data import make_dataset
from gaxp.errors import ConfigError
from gaxp.metrics.conditional import class_accuracy, nearest_mode, point_metrics
from gaxp.models import ARCHS
from gaxp.api import run as train

RING = ("model=mlp", "data=ring", "data.labeled=true", "data.batch_size=32")


def _mlp_d(cond: str, **kw):
    spec = ModelSpec(name="mlp", z_dim=2, d_width=6, d_depth=1, d_norm="none", cond=cond,
                     num_classes=4, **kw)
    _, d = ARCHS["mlp"].build(spec, (3,), False, nnx.Rngs(params=jax.random.key(1)))
    return d


def test_projection_discriminator_matches_hand_computation():
    d = _mlp_d("projection")
    x = jax.random.normal(jax.random.key(2), (5, 3))
    y = jnp.array([0, 1, 2, 3, 1])
    out = d(x, y, train=False)
    w1, b1 = np.asarray(d.hidden[0].kernel[...]), np.asarray(d.hidden[0].bias[...])
    psi_w, psi_b = np.asarray(d.out.kernel[...]), np.asarray(d.out.bias[...])
    v = np.asarray(d.cond.layer.kernel[...])  # [classes, features]: row k embeds class k
    phi = np.asarray(jax.nn.leaky_relu(x @ w1 + b1, 0.2))
    expected = (phi @ psi_w + psi_b)[:, 0] + np.sum(v[np.asarray(y)] * phi, axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # only the projection term depends on the label: D(x, 2) - D(x, 0) = <v_2 - v_0, phi(x)>
    delta = d(x, jnp.full(5, 2), train=False) - d(x, jnp.zeros(5, jnp.int32), train=False)
    np.testing.assert_allclose(delta, phi @ (v[2] - v[0]), rtol=1e-5, atol=1e-6)


def test_projection_embedding_is_spectrally_normalized_with_d():
    d = _mlp_d("projection", spectral_norm=True)
    assert d.cond.layer.sn is not None  # V is normalized like every other layer of D
    eye = jax.nn.one_hot(jnp.arange(4), 4)
    raw = np.linalg.svd(np.asarray(d.cond.layer.kernel[...]), compute_uv=False)[0]
    for _ in range(50):  # training calls run the power iteration
        d.cond.layer(eye, train=True)
    v = np.asarray(d.cond.layer(eye, train=False))  # the normalized embedding table V
    assert abs(raw - 1.0) > 0.1
    np.testing.assert_allclose(np.linalg.svd(v, compute_uv=False)[0], 1.0, rtol=1e-3)


@pytest.mark.parametrize("arch,shape,g_norm", [("mlp", (2,), "none"), ("mlp", (2,), "batch"),
                                              ("dcgan", (8, 8, 1), "batch"),
                                              ("resnet", (8, 8, 1), "batch")])
def test_every_generator_takes_the_label(arch, shape, g_norm):
    spec = ModelSpec(name=arch, z_dim=4, g_width=8, d_width=8, g_depth=2, g_norm=g_norm,
                     cond="projection", num_classes=3)
    g, d = ARCHS[arch].build(spec, shape, arch != "mlp", nnx.Rngs(params=jax.random.key(0)))
    z = jax.random.normal(jax.random.key(1), (4, 4))
    # mixed labels in a batch (a one-class batch would have BatchNorm remove the class shift)
    a, b = (g(z, jnp.array(y), train=True) for y in ([0, 1, 2, 0], [1, 2, 0, 2]))
    assert a.shape == b.shape == (4, *shape)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3  # same z, another class: another sample
    names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        nnx.state(g, nnx.Param))[0]}
    assert any("gamma" in n for n in names) == (g_norm == "batch")  # conditional BatchNorm
    x = jnp.zeros((4, *shape))
    assert d(x, jnp.arange(4) % 3, train=False).shape == (4,)


@pytest.mark.parametrize("dim,std", [(None, 1.0), (3, 0.5), (0, 1.0)])
def test_class_embedding_at_gs_input_has_the_configured_size_and_scale(dim, std):
    spec = ModelSpec(name="dcgan", z_dim=6, g_width=8, d_width=8, cond="projection",
                     num_classes=40, cond_embed_dim=dim, cond_embed_std=std)
    g, _ = ARCHS["dcgan"].build(spec, (8, 8, 1), True, nnx.Rngs(params=jax.random.key(0)))
    width = 6 if dim is None else dim  # null: as wide as z
    assert g.fc.kernel[...].shape[0] == 6 + width  # G's first layer reads [z, e_y]
    if width == 0:
        assert g.embed is None  # conditional BatchNorm only
        return
    table = np.asarray(g.embed.table[...])
    assert table.shape == (40, width)
    assert abs(table.std() / std - 1.0) < 0.25  # N(0, std^2) at init
    z = jnp.ones((2, 6))
    h = np.asarray(g.embed(z, jnp.array([3, 7])))
    np.testing.assert_array_equal(h[:, :6], 1.0)
    np.testing.assert_array_equal(h[:, 6:], table[[3, 7]])


def test_acgan_terms_are_class_cross_entropies():
    d = _mlp_d("acgan")
    x = jax.random.normal(jax.random.key(3), (6, 3))
    logit, cls = d(x, None, train=False)
    assert logit.shape == (6,) and cls.shape == (6, 4)
    y_real, y_fake = jnp.array([0, 1, 2, 3, 0, 1]), jnp.array([3, 3, 2, 1, 0, 0])
    spec = conditional.CondSpec("acgan", 4, ac_weight=0.5)

    def ce(logits, y):
        logp = np.asarray(jax.nn.log_softmax(logits))
        return -logp[np.arange(len(y)), np.asarray(y)].mean()

    r, f, term, metrics = conditional.d_split(spec, (logit, cls), (logit + 1, cls * 2),
                                              y_real, y_fake)
    np.testing.assert_array_equal(r, logit)
    np.testing.assert_array_equal(f, logit + 1)
    np.testing.assert_allclose(metrics["train/ac_real"], ce(cls, y_real), rtol=1e-6)
    np.testing.assert_allclose(metrics["train/ac_fake"], ce(cls * 2, y_fake), rtol=1e-6)
    np.testing.assert_allclose(term, 0.5 * (ce(cls, y_real) + ce(cls * 2, y_fake)), rtol=1e-6)
    f_g, g_term, _ = conditional.g_split(spec, (logit, cls), y_fake)
    np.testing.assert_array_equal(f_g, logit)
    np.testing.assert_allclose(g_term, 0.5 * ce(cls, y_fake), rtol=1e-6)
    # projection adds no term, and its output passes through
    r, f, term, metrics = conditional.d_split(conditional.CondSpec("projection", 4), logit,
                                              logit, y_real, y_fake)
    assert float(term) == 0.0 and metrics == {}


def test_labeled_toy_data_label_each_point_with_its_mode():
    plain = make_dataset("toy2d", "ring", seed=3)
    labeled = make_dataset("toy2d", "ring", seed=3, labeled=True)
    assert plain.num_classes is None and labeled.num_classes == 8
    a, b = next(plain.iterator(256)), next(labeled.iterator(256))
    assert "y" not in a and b["y"].dtype == np.int32
    np.testing.assert_array_equal(a["x"], b["x"])  # the same points, now with labels
    np.testing.assert_array_equal(b["y"], nearest_mode(b["x"], labeled.modes))
    ex = labeled.examples(100, "test")
    np.testing.assert_array_equal(ex["y"], nearest_mode(ex["x"], labeled.modes))


def test_point_metrics_of_a_perfect_and_a_wrong_sampler():
    ds = make_dataset("toy2d", "ring", labeled=True)
    ex = ds.examples(4000)
    m = point_metrics(ex["x"], ex["y"], ds.modes, ds.sigma)
    assert m["cond_acc"] == 1.0 and m["fd_class_mean"] < 1e-3
    shifted = point_metrics(ex["x"], (ex["y"] + 1) % 8, ds.modes, ds.sigma)
    assert shifted["cond_acc"] == 0.0 and shifted["fd_class_mean"] > 0.5  # |m_k - m_k+1|^2 = 0.59
    acc = class_accuracy(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert acc == {"cond_acc": 0.75, "cond_acc/0": 1.0, "cond_acc/1": 1.0, "cond_acc/2": 0.5}


def test_conditioning_puts_each_class_on_its_mode(tiny, tmp_path):
    """The defining behaviour: after a short training on the labeled ring, samples asked for
    class k sit nearest mode k far above chance (1/8), for every k; the sample picture has them."""
    summary = train(tiny("experiment=cgan_ring", "trainer.steps=500", "trainer.devices=1",
                         "metrics.every=500", "trainer.sample_every=500", "trainer.ckpt_every=500"))
    ev = summary["eval"]
    per_class = [ev[f"eval/cond_acc/{k}"] for k in range(8)]
    assert min(per_class) > 0.6, per_class
    assert ev["eval/cond_acc"] > 0.8
    assert (tmp_path / "run" / "samples" / "step_0000500.png").exists()
    # gaxp-sample draws a requested class (and all classes); the npz records the labels
    from gaxp.sample import main as sample_main

    sample_main([str(tmp_path / "run"), "class=3", "n=200", f"out={tmp_path / 's3'}"])
    z = np.load(next((tmp_path / "s3").glob("*.npz")))
    assert (z["labels"] == 3).all()
    assert np.mean(nearest_mode(z["samples"], make_dataset("toy2d", "ring").modes) == 3) > 0.6


def test_unlabeled_data_is_refused_before_compiling(tiny, tmp_path):
    from gaxp.step import TRACES

    before = TRACES["train_step"]
    with pytest.raises(ConfigError, match=r"model.cond=projection needs class labels, but ring is "
                                          r"unlabeled; add data.labeled=true"):
        train(tiny("model=mlp", "data=ring", "data.batch_size=32", "model.cond=projection"))
    assert TRACES["train_step"] == before and not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="model.cond must be one of: none, projection, acgan"):
        train(tiny(*RING, "model.cond=proj"))
    with pytest.raises(ConfigError, match="PacGAN"):
        train(tiny(*RING, "model.cond=acgan", "regularizer=[pacgan]"))


def test_conditional_resume_matches_uninterrupted_run(tiny, tmp_path):
    """8 devices, AC-GAN: labels go through the sharded batch and the
    checkpointed data iterator, and resume is exact."""
    common = (*RING, "model.cond=acgan",
              "trainer.ckpt_every=3", "trainer.log_every=1")
    straight = train(tiny(*common, "trainer.steps=5", name="straight"))
    train(tiny(*common, "trainer.steps=3", name="split"))
    resumed = train(tiny(*common, "trainer.steps=5", "trainer.resume=true", name="split"))
    assert resumed["resumed_from"] == 3 and resumed["digest"] == straight["digest"]
    rows = [json.loads(r) for r in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert {"train/ac_real", "train/ac_fake", "train/g_ac"} <= set(rows[-1])
