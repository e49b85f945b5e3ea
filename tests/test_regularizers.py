"""Each stabilizer's defining property, on tiny inputs; their config checks; one short run that
exercises lazy R1 and D pre-training through the compiled step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compose
from flax import nnx

from gaxp import augment, phases, regularizers as R
from gaxp.config import NoiseParams, OptSpec, check_for_data, load
from gaxp.data import make_dataset
from gaxp.errors import ConfigError
from gaxp.losses import get as _get_loss
from gaxp.specs import LossSpec
from gaxp.models import ARCHS, Arch, adapter
from gaxp.models.blocks import minibatch_std, pack
from gaxp.step import TRACES
from gaxp.loop import compile_step
from gaxp.training import prepare

W = jax.random.normal(jax.random.key(0), (6, 3))


def d_smooth(x):
    """A small smooth non-linear D: [n, 2, 3] -> [n]."""
    h = jnp.tanh(x.reshape(x.shape[0], -1) @ W)
    return jnp.sum(h * h, axis=1) + x.reshape(x.shape[0], -1).sum(1)


def _fd_sq_norms(fn, x, eps=1e-3):
    """Per-sample squared gradient norm by central finite differences."""
    x = np.asarray(x, np.float64)
    out = np.zeros(x.shape[0])
    for idx in np.ndindex(x.shape[1:]):
        dx = np.zeros_like(x)
        dx[(slice(None),) + idx] = eps
        g = (np.asarray(fn(jnp.asarray(x + dx, jnp.float32)), np.float64)
             - np.asarray(fn(jnp.asarray(x - dx, jnp.float32)), np.float64)) / (2 * eps)
        out += g ** 2
    return out


def test_r1_and_r2_are_squared_gradient_norms_by_finite_differences():
    real = jax.random.normal(jax.random.key(1), (5, 2, 3))
    fake = jax.random.normal(jax.random.key(2), (5, 2, 3))
    key = jax.random.key(3)
    np.testing.assert_allclose(R.r1(d_smooth, real, fake, key),
                               _fd_sq_norms(d_smooth, real).mean(), rtol=2e-3)
    np.testing.assert_allclose(R.r2(d_smooth, real, fake, key),
                               _fd_sq_norms(d_smooth, fake).mean(), rtol=2e-3)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_norm_penalties_of_a_linear_critic(scale):
    """D(x) = w.x has ||grad|| = ||w|| everywhere: two-sided (||w|| - 1)^2, one-sided only above 1."""
    w = jnp.array([0.6, 0.8]) * scale  # ||w|| = scale
    d = lambda x: x @ w  # noqa: E731
    real, fake = jnp.ones((8, 2)), -jnp.ones((8, 2))
    key = jax.random.key(0)
    two_sided = (scale - 1.0) ** 2
    np.testing.assert_allclose(R.wgan_gp(d, real, fake, key), two_sided, rtol=1e-5)
    np.testing.assert_allclose(R.dragan(d, real, fake, key), two_sided, rtol=1e-5)
    np.testing.assert_allclose(R.one_sided_gp(d, real, fake, key), two_sided if scale > 1 else 0.0,
                               rtol=1e-5, atol=1e-7)


def test_gradient_norm_of_a_packed_d_is_taken_over_the_pack():
    d = lambda x: pack(x, 2).sum(axis=1)  # noqa: E731  packed sum: grad is ones over the pack
    x = jnp.zeros((6, 2))
    np.testing.assert_allclose(R.r1(d, x, x, jax.random.key(0)), 4.0)  # 2 samples x 2 dims


def test_lazy_applies_the_penalty_every_k_steps_with_weight_times_k():
    from gaxp.config import PenaltyParams, RegSpec

    regs = RegSpec((("r1", PenaltyParams(weight=0.5, every=4)),))
    real = jax.random.normal(jax.random.key(1), (5, 2, 3))
    value = R.r1(d_smooth, real, real, None)
    for i in range(8):
        total, m = R.d_terms(regs, "ns", d_smooth, real, real, None, None,
                             jax.random.key(0), jnp.int32(i))
        expected = value if i % 4 == 0 else 0.0
        np.testing.assert_allclose(m["train/r1"], expected, rtol=1e-6)
        np.testing.assert_allclose(total, 0.5 * 4 * expected, rtol=1e-6)


def test_lazy_optimizer_rescales_lr_and_betas_by_k_over_k_plus_1():
    o = R.lazy_optimizer(OptSpec(lr=0.002, b1=0.0, b2=0.99), 16)
    c = 16 / 17
    np.testing.assert_allclose([o.lr, o.b1, o.b2], [0.002 * c, 0.0, 0.99 ** c])
    assert R.lazy_optimizer(OptSpec(), 1) == OptSpec()


@pytest.mark.parametrize("name", ["minimax", "ns", "lsgan"])
def test_label_smoothing_moves_only_the_real_target_to_0_9(name):
    r, f = jnp.array([-2.0, 0.3, 4.0]), jnp.array([1.0, -0.5, 2.5])
    smoothed = _get_loss(LossSpec(name)).d(r, f) + R.label_smoothing(name, r, 0.9)
    if name == "lsgan":
        expected = 0.5 * np.mean((r - 0.9) ** 2) + 0.5 * np.mean(f ** 2)
    else:
        p_r, p_f = jax.nn.sigmoid(r), jax.nn.sigmoid(f)
        expected = (-np.mean(0.9 * np.log(p_r) + 0.1 * np.log(1 - p_r))
                    - np.mean(np.log(1 - p_f)))
    np.testing.assert_allclose(smoothed, expected, rtol=1e-5)
    # It is a function of D's real logits only: fakes (and so G's loss) are untouched.
    assert float(jax.grad(lambda ff: R.label_smoothing(name, r, 0.9) + 0 * ff.sum())(f).sum()) == 0


def test_diffaugment_is_differentiable_and_keeps_shapes():
    x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3), minval=-1, maxval=1)
    key = jax.random.key(1)
    for op in augment.POLICIES:
        assert augment.POLICIES[op](x, key).shape == x.shape
    g = jax.grad(lambda x: jnp.sum(augment.diff_augment(x, "color,translation,cutout", key) ** 2))(x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0


def test_translation_shifts_and_cutout_zeroes_a_half_size_square():
    x = jnp.zeros((64, 16, 16, 1)).at[:, 8, 8, 0].set(1.0)
    y = augment.translation(x, jax.random.key(0))
    pos = np.argwhere(np.asarray(y[..., 0]) == 1.0)
    assert len(pos) == 64 and np.abs(pos[:, 1:] - 8).max() <= 2  # every dot moved by <= 16/8 px
    assert len({tuple(p) for p in pos[:, 1:]}) > 1
    c = augment.cutout(jnp.ones((64, 16, 16, 1)), jax.random.key(1))
    zeros = (np.asarray(c) == 0).sum(axis=(1, 2, 3))
    assert zeros.max() == 64 and zeros.min() >= 0  # an 8x8 square, clipped at the border


def test_bcr_is_zero_for_an_invariant_d_and_matches_its_formula():
    p = R.C.BcrParams(real_weight=2.0, fake_weight=3.0, policy=("translation",))
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    key = jax.random.key(5)
    mean_d = lambda v: v.mean(axis=(1, 2, 3)) * 0 + 1.0  # noqa: E731
    assert float(R.bcr(mean_d, x, x, mean_d(x), mean_d(x), key, p)[0]) == 0.0
    d = lambda v: v[:, 2:6, 2:6].sum(axis=(1, 2, 3))  # noqa: E731  sees the centre only
    total, m = R.bcr(d, x, 2 * x, d(x), d(2 * x), key, p)
    k_r, k_f = jax.random.split(key)
    cr_r = np.mean((d(augment.diff_augment(x, "translation", k_r)) - d(x)) ** 2)
    cr_f = np.mean((d(augment.diff_augment(2 * x, "translation", k_f)) - d(2 * x)) ** 2)
    np.testing.assert_allclose([m["train/bcr_real"], m["train/bcr_fake"], total],
                               [cr_r, cr_f, 2 * cr_r + 3 * cr_f], rtol=1e-5)


def test_instance_noise_anneals_linearly_to_zero():
    p = NoiseParams(sigma=0.2, anneal_steps=10)
    np.testing.assert_allclose([R.noise_sigma(p, jnp.int32(s)) for s in (0, 5, 10, 20)],
                               [0.2, 0.1, 0.0, 0.0], atol=1e-7)
    regs = R.C.RegSpec((("instance_noise", NoiseParams(sigma=0.5)),))
    (y,), m = R.d_inputs(regs, (jnp.zeros((100, 50)),), jax.random.key(0), jnp.int32(0))
    np.testing.assert_allclose([np.std(y), m["train/instance_noise"]], [0.5, 0.5], rtol=0.03)


def test_minibatch_std_appends_the_group_std_as_one_feature():
    h = jax.random.normal(jax.random.key(0), (6, 4, 4, 3))
    out = minibatch_std(h, 2)
    assert out.shape == (6, 4, 4, 4)
    hn = np.asarray(h)
    for i in range(6):  # groups of samples strided by 6 / 2 = 3: {0, 3}, {1, 4}, {2, 5}
        j = i % 3
        expected = np.sqrt(np.var(hn[[j, j + 3]], axis=0) + 1e-8).mean()
        np.testing.assert_allclose(out[i, ..., -1], expected, rtol=1e-5)


@pytest.mark.parametrize("model,shape", [("mlp", (2,)), ("dcgan", (28, 28, 1)),
                                         ("resnet", (32, 32, 3))])
def test_a_packed_d_receives_m_times_wide_input(model, shape):
    config = load(compose(f"model={model}", "regularizer=[pacgan,mbstd]", "regularizer.pacgan.pack=4",
                          "model.g_width=8", "model.d_width=8", "model.z_dim=4"))
    _, d = ARCHS[model].build(config.model, shape, len(shape) == 3, nnx.Rngs(0))
    d_def, params, stats = adapter.split(d)
    kernels = [k for k in jax.tree.leaves(params) if k.ndim >= 2]
    fan_in = {"mlp": 4 * 2, "dcgan": 4 * 1, "resnet": 4 * 3}[model]
    assert kernels[0].shape[-2] == fan_in or any(k.shape[-2] == fan_in for k in kernels)
    out = jax.eval_shape(lambda x: adapter.apply(d_def, params, stats, x, train=True)[0],
                         jnp.zeros((16,) + shape))
    assert out.shape == (4,)


def test_pack_concatenates_consecutive_samples_on_channels():
    x = jnp.arange(4 * 2 * 2 * 3.0).reshape(4, 2, 2, 3)
    p = pack(x, 2)
    assert p.shape == (2, 2, 2, 6)
    np.testing.assert_array_equal(p[1, ..., :3], x[2])
    np.testing.assert_array_equal(p[1, ..., 3:], x[3])


@pytest.mark.parametrize("pack,batch,samples", [(1, "samples", 100), (4, "samples", 100),
                                                (1, "packs", 100), (3, "packs", 300)])
def test_pacgan_batch_counts_samples_or_packs(pack, batch, samples):
    """``batch=packs`` (Lin et al.'s code): D scores data.batch_size packs of m samples, so a step
    draws batch_size * m samples; ``batch=samples``: batch_size samples make batch_size/m packs.
    pack=1 is the plain GAN (PacGAN's m=1 row)."""
    config = load(compose("model=mlp", "data=ring", "data.batch_size=100", "regularizer=pacgan",
                          f"regularizer.pacgan.pack={pack}", f"regularizer.pacgan.batch={batch}",
                          "model.g_width=8", "model.d_width=8", "model.z_dim=2"))
    assert config.data.batch_size == samples and config.model.d_pack == pack
    _, d = ARCHS["mlp"].build(config.model, (2,), False, nnx.Rngs(0))
    d_def, params, stats = adapter.split(d)
    out = jax.eval_shape(lambda x: adapter.apply(d_def, params, stats, x, train=True)[0],
                         jnp.zeros((samples, 2)))
    assert out.shape == (samples // pack,)
    assert [k.shape[0] for k in jax.tree.leaves(params) if k.ndim == 2][0] == 2 * pack


@pytest.mark.parametrize("overrides,message", [
    (("+regularizer.r3.weight=1",), "unknown regularizer 'r3'; valid: bcr,"),
    (("regularizer=pacgan", "regularizer.pacgan.pack=0"), "regularizer.pacgan.pack must be >= 1 (got 0"),
    (("regularizer=pacgan", "regularizer.pacgan.batch=pairs"), "pacgan.batch must be samples or packs (got 'pairs')"),
    (("regularizer=mbstd", "regularizer.mbstd.group=1"), "regularizer.mbstd.group must be >= 2 (got 1)"),
    (("regularizer=pacgan", "regularizer.pacgan.pack=3"), "data.batch_size=64 is not divisible by the PacGAN pack size 3"),
    (("regularizer=[pacgan,mbstd]", "regularizer.mbstd.group=5"), "minibatch-stddev group 5"),
    (("regularizer=label_smoothing", "loss=hinge"), "applies to loss lsgan, minimax, ns"),
    (("regularizer=[r1,r2]", "regularizer.r1.every=16", "regularizer.r2.every=4"), "share one interval"),
    (("regularizer=wgan_gp", "loss=wgan_gp"), "wgan_gp is set twice"),
    (("loss.penalty=bcr", "loss.penalty_weight=1"), "loss.penalty must be a gradient penalty"),
    (("regularizer=diffaugment", "regularizer.diffaugment.policy=[color,flip]"), "must be a non-empty list of: color"),
    (("regularizer=r1", "regularizer.r1.weight=0"), "regularizer.r1.weight must be > 0"),
    (("regularizer=r1", "+regularizer.r1.gamma=1"), "unknown key regularizer.r1.gamma"),
])
def test_bad_regularizer_settings_give_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        load(compose(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_setups_a_stabilizer_does_not_apply_to_are_refused(monkeypatch):
    config = load(compose("model=mlp", "regularizer=[diffaugment,pacgan]"))
    with pytest.raises(ConfigError, match="needs image data"):
        check_for_data(config, (2,), False)
    monkeypatch.setitem(ARCHS, "mlp", Arch(ARCHS["mlp"].build, ARCHS["mlp"].check, frozenset()))
    with pytest.raises(ConfigError, match="model=mlp does not support pack"):
        check_for_data(config, (28, 28, 1), True)


def test_loss_wgan_gp_is_the_wgan_gp_regularizer():
    a = load(compose("loss=wgan_gp")).regularizer
    b = load(compose("loss=wgan", "loss.clip=0", "regularizer=wgan_gp")).regularizer
    assert a == b and a.penalties[0][1].weight == 10.0


def test_lazy_r1_and_d_pretraining_in_the_compiled_step(tiny):
    """regularizer=d_pretrain is a phase that trains D alone (G, its EMA and G's optimizer held),
    compiled on its own; lazy R1 keeps its clock of D updates across the two programs."""
    config = load(tiny("model=mlp", "data=ring", "data.batch_size=16", "model.g_width=16",
                       "model.d_width=16", "regularizer=[r1,d_pretrain]", "regularizer.r1.every=2",
                       "regularizer.d_pretrain.steps=2"))
    run, batches, _, state, _ = prepare(config)
    assert [[(p.name, p.start, p.trains) for p in line] for line in run.phases] == \
        [[("d_pretrain", 0, "d"), ("adversarial", 2, "both")]]
    steps = config.trainer.steps  # G updates after the pre-training, D's at every step
    assert (phases.updates(config, "g"), phases.updates(config, "d")) == (steps - 2, steps)
    key = jax.random.key(0)
    traces, programs = TRACES["train_step"], {}
    host = lambda tree: jax.tree.leaves(jax.device_get(tree))  # noqa: E731
    changed = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(a, b))  # noqa: E731
    rows = []
    for step in range(4):
        active = phases.active(run.phases, step)
        if active not in programs:
            batch = next(batches)
            programs[active] = compile_step(run, state, batch, key, phases.bind(run.spec, active))[0]
        before = [host(getattr(state, k)) for k in ("g_params", "g_ema", "g_opt", "d_params")]
        state, m = programs[active](state, next(batches), key)
        after = [host(getattr(state, k)) for k in ("g_params", "g_ema", "g_opt", "d_params")]
        rows.append((float(m["train/r1"]) > 0, "train/g_loss" in m,
                     *[changed(a, b) for a, b in zip(before, after)]))
    # r1 > 0 at D updates 0 and 2 (every=2); G, its EMA and its optimizer move from step 2; D always
    assert rows == [(True, False, False, False, False, True), (False, False, False, False, False, True),
                    (True, True, True, True, True, True), (False, True, True, True, True, True)]
    assert TRACES["train_step"] - traces == 2 and int(state.step) == 4


@pytest.mark.parametrize("name,modes,sigma", [("ring", 8, 0.01), ("grid", 25, 0.05)])
def test_toy_experiments_are_the_pacgan_setup(name, modes, sigma):
    """experiment=toy_ring/toy_grid give Lin et al.'s Table 1 setup (and their code's details)."""
    c = load(compose(f"experiment=toy_{name}", "regularizer=pacgan", "regularizer.pacgan.pack=4",
                     "regularizer.pacgan.batch=packs"))
    m, g, d = c.model, c.optim.g, c.optim.d
    assert (m.z_dim, m.g_width, m.g_depth, m.g_norm) == (2, 400, 4, "batch")
    assert (m.d_width, m.d_depth, m.maxout, m.d_norm, m.d_pack) == (200, 3, 5, "none", 4)
    assert (m.init, m.bn_momentum, c.loss.name, c.data.name) == ("dcgan", 0.95, "ns", name)
    assert all((o.name, o.lr, o.b1, o.b2, o.eps) == ("adam", 1e-4, 0.8, 0.999, 1e-8) for o in (g, d))
    assert c.data.batch_size == 400  # 100 packs of 4
    assert (c.metrics.names, c.metrics.n_fake, c.metrics.mode_min_count) == (("modes",), 2500, 1)
    assert c.trainer.ema.halflife_kimg * 1000 < 1e-2  # EMA decay 0.5^(400/1e-3) = 0: G itself
    _, dm = ARCHS["mlp"].build(m, (2,), False, nnx.Rngs(0))
    kernels = [k for k in jax.tree.leaves(adapter.split(dm)[1]) if k.ndim == 2]
    assert [k.shape for k in kernels] == [(8, 1000), (200, 1000), (200, 1000), (200, 1)]
    assert abs(float(np.std(kernels[1])) - 0.02) < 0.001
    ds = make_dataset("toy2d", name)
    assert len(ds.modes) == modes and ds.sigma == sigma


@pytest.mark.parametrize("overrides, warned", [
    (("loss=wgan_gp",), "wgan_gp"),                             # DCGAN's D has BatchNorm
    (("regularizer=[r1,dragan]",), "dragan, r1"),
    (("loss=wgan_gp", "model.d_norm=layer"), None),             # the paper's critic
    (("loss=hinge",), None),                                    # no penalty
    (("model=mlp", "data=ring", "loss=wgan_gp"), None),         # mlp D: no norm by default
])
def test_penalty_with_batchnorm_in_d_is_advised_against(overrides, warned):
    advice = R.advice(load(compose(*overrides)))
    if warned is None:
        assert advice == []
    else:
        assert len(advice) == 1 and advice[0].startswith(f"gradient penalty {warned} with BatchNorm")


def test_phases_that_train_different_networks_alone_are_refused_and_each_run_says_its_phases():
    """D pre-training next to a task whose first phase trains G alone cannot run: one line names
    both phases, before anything compiles. The start-up line lists every timeline's phases."""
    import dataclasses

    from gaxp.registry import TASKS, register
    from gaxp.specs import Phase
    from gaxp.step import train_step

    register.task("test_g_first", archs=(), needs_paired=False, batch_keys=("x",),
                  phases=lambda c: (Phase("g_warmup", 0, trains="g"), Phase("both", 5)))(train_step)
    assert "test_g_first" in TASKS
    config = load(compose("model=mlp", "data=ring", "regularizer=d_pretrain",
                          "regularizer.d_pretrain.steps=3", "trainer.steps=10"))
    assert phases.describe(phases.of(config), 10) == \
        "phases: d_pretrain (trains D only) from step 0; adversarial from step 3"
    assert phases.describe(phases.of(config), 2) == \
        "phases: d_pretrain (trains D only) from step 0 (trainer.steps=2 ends before adversarial)"
    clash = dataclasses.replace(config, task=dataclasses.replace(config.task, name="test_g_first"))
    with pytest.raises(ConfigError, match=r"^phases that train different networks alone overlap at "
                       r"step 0: task=test_g_first 'g_warmup' trains G only, regularizer=d_pretrain "
                       r"'d_pretrain' trains D only; change one"):
        phases.of(clash)
    late = dataclasses.replace(config, regularizer=dataclasses.replace(
        config.regularizer, entries=(("d_pretrain", dataclasses.replace(
            config.regularizer.get("d_pretrain"), steps=0)),)))
    assert phases.of(late)  # steps=0 is refused by the config; here: no overlap once D's ends at 0
    after = dataclasses.replace(clash, regularizer=late.regularizer)
    assert [p.name for p in phases.active(phases.of(after), 0)] == ["g_warmup", "adversarial"]
    assert (phases.updates(after, "g"), phases.updates(after, "d")) == (10, 5)
