"""Train steps of the image-to-image tasks: pure functions of (state, batch, key).

Each step makes one D update (G held fixed) then one G update (D held fixed), then the EMA of G,
exactly like ``gaxp.step.train_step``, and reuses its pieces: ``_apply`` (optimizer update scaled
by ``lr_scale``, the non-finite guard, the NaN-injection debug hook), ``ema_beta`` and
``guard_metrics``. The adversarial terms are the configured ``loss`` (``gaxp.losses.get``). Batches hold
``x`` (targets, domain B) and ``c`` (sources, domain A) as [1, batch, ...] uint8 or float arrays.

* Pix2Pix (Isola et al. 2017): D(c, x) vs D(c, G(c)), D's loss halved as in the paper;
  G: adv_weight * adversarial + l1_weight * |G(c) - x|. G's noise is the U-Net's dropout, one
  mask per step (the same G(c) feeds the D and the G update, as in the paper's code).
* SRGAN (Ledig et al. 2017): D(x) vs D(G(c)); G: pixel_weight * MSE + perceptual_weight * MSE of
  a feature network's features (only with ``task.perceptual``) + adv_weight * adversarial. The
  first ``task.pretrain_steps`` steps train the SRResNet on pixel MSE alone, D untouched: a
  separate program (``spec.phase == "pretrain"``: the entry's phases, bound by ``gaxp.phases``).
* CycleGAN (Zhu et al. 2017): D_A, D_B (halved losses); G: adversarial of both directions +
  cycle_weight * (cycle L1 + identity_weight * identity L1), ``cycle_terms``. With
  ``task.pool_size``, D sees fakes through the history pool of ``gaxp.tasks.pool``.

Randomness (dropout masks, pool draws) comes from ``gaxp.step.step_key``, as in
``gaxp.step.train_step``, so a resumed run matches an uninterrupted one bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gaxp import losses as losses_
from gaxp.models import adapter
from gaxp.pixels import to_float
from gaxp.step import TRACES, StepSpec, _apply, ema_beta, guard_metrics, step_key
from gaxp.tasks.pool import query_both
from gaxp.metrics import classifier


def _net(spec: StepSpec, which: str):
    graphdef = spec.nets.g_def if which == "g" else spec.nets.d_def
    dtype = adapter.PRECISIONS[spec.precision]

    def run(params, stats, *args, **kwargs):
        return adapter.apply(graphdef, params, stats, *args, compute_dtype=dtype, **kwargs)
    return run


def _pair(batch: dict) -> tuple[jax.Array, jax.Array]:
    return to_float(batch["c"][0]), to_float(batch["x"][0])


def _update(spec, state, net: str, loss_fn):
    """One optimizer update of G or D from ``loss_fn(params) -> (loss, (stats, metrics))``."""
    params, stats, opt = (getattr(state, f"{net}_{k}") for k in ("params", "stats", "opt"))
    tx = spec.nets.g_opt if net == "g" else spec.nets.d_opt
    grads, (new_stats, metrics) = jax.grad(loss_fn, has_aux=True)(params)
    params, opt, new_stats = _apply(spec, state, grads, tx, opt, params, new_stats, stats)
    return state.replace(**{f"{net}_params": params, f"{net}_stats": new_stats,
                            f"{net}_opt": opt}), metrics


def _finish(spec: StepSpec, state, metrics: dict):
    beta = ema_beta(spec.ema, spec.batch, state.step)
    g_ema = optax.incremental_update(state.g_params, state.g_ema, 1.0 - beta)
    return state.replace(step=state.step + 1, g_ema=g_ema), metrics | guard_metrics(state, 1)


def _real_logits(spec, state, d_input, loss, **kwargs):
    """D's logits on real data for losses whose G term needs them (relativistic), else zeros."""
    D = _net(spec, "d")
    if loss.g_needs_real:
        return jax.lax.stop_gradient(D(state.d_params, state.d_stats, d_input, train=True,
                                       **kwargs)[0])
    return jnp.zeros(())


def pix2pix_loss(adv: jax.Array, fake: jax.Array, target: jax.Array, *, adv_weight: float,
                 l1_weight: float) -> tuple[jax.Array, dict]:
    """Pix2Pix's G objective: adv_weight * adversarial + l1_weight * mean |G(c) - x|."""
    l1 = jnp.mean(jnp.abs(fake - target))
    return adv_weight * adv + l1_weight * l1, {"train/g_adv": adv, "train/l1": l1}


def pix2pix_step(state, batch: dict, key: jax.Array, hp: dict, *, spec: StepSpec):
    TRACES["train_step"] += 1
    c, x = _pair(batch)
    G, D, loss, t = _net(spec, "g"), _net(spec, "d"), losses_.get(spec.loss), spec.task
    noise = jax.random.fold_in(step_key(key, state), 1)  # the U-Net's dropout masks
    fake = jax.lax.stop_gradient(G(state.g_params, state.g_stats, c, train=True, noise=noise)[0])

    def d_loss(d_params):
        r, stats = D(d_params, state.d_stats, (c, x), train=True)
        f, stats = D(d_params, stats, (c, fake), train=True)
        value = 0.5 * loss.d(r, f)  # "we divide the objective by 2 while optimizing D"
        return value, (stats, {"train/d_loss": value, "train/d_real": jnp.mean(r),
                               "train/d_fake": jnp.mean(f)})

    state, d_metrics = _update(spec, state, "d", d_loss)
    r = _real_logits(spec, state, (c, x), loss)

    def g_loss(g_params):
        out, stats = G(g_params, state.g_stats, c, train=True, noise=noise)
        f, _ = D(state.d_params, state.d_stats, (c, out), train=True)
        value, m = pix2pix_loss(loss.g(r, f), out, x, adv_weight=t.adv_weight,
                                l1_weight=t.l1_weight)
        return value, (stats, m | {"train/g_loss": value})

    state, g_metrics = _update(spec, state, "g", g_loss)
    return _finish(spec, state, d_metrics | g_metrics)


def load_features(directory: str):
    """(params, fn) of a classifier saved by scripts/train_classifier.py: fn(params, images in
    [-1, 1]) -> its penultimate features (SRGAN's perceptual loss)."""

    params, meta = classifier.load_dir(directory)
    model = classifier.model_of(meta)
    return params, lambda p, x: model.apply({"params": p}, x)[0]


def srgan_content(out, x, t, features=None) -> tuple[jax.Array, dict]:
    """SRGAN's content loss: pixel MSE (and the feature MSE with a feature network)."""
    mse = jnp.mean(jnp.square(out - x))
    value, m = t.pixel_weight * mse, {"train/mse": mse}
    if features is not None:
        params, fn = features
        feat = jnp.mean(jnp.square(fn(params, out) - jax.lax.stop_gradient(fn(params, x))))
        value, m = value + t.perceptual_weight * feat, m | {"train/perceptual": feat}
    return value, m


def srgan_pretrain(spec: StepSpec, state, c: jax.Array, x: jax.Array):
    """SRGAN's first phase: the SRResNet on pixel MSE alone (Ledig et al. 2017 train it so and
    start the GAN from it); D, its statistics and its optimizer are left untouched."""
    G = _net(spec, "g")

    def g_loss(g_params):
        out, stats = G(g_params, state.g_stats, c, train=True)
        mse = jnp.mean(jnp.square(out - x))
        return mse, (stats, {"train/mse": mse, "train/g_loss": mse})

    state, metrics = _update(spec, state, "g", g_loss)
    return _finish(spec, state, metrics | {"train/pretrain": jnp.float32(1.0)})


def srgan_step(state, batch: dict, key: jax.Array, hp: dict, *, spec: StepSpec, features=None):
    TRACES["train_step"] += 1
    c, x = _pair(batch)
    if spec.phase == "pretrain":
        return srgan_pretrain(spec, state, c, x)
    G, D, loss, t = _net(spec, "g"), _net(spec, "d"), losses_.get(spec.loss), spec.task
    fake = jax.lax.stop_gradient(G(state.g_params, state.g_stats, c, train=True)[0])

    def d_loss(d_params):
        r, stats = D(d_params, state.d_stats, x, train=True)
        f, stats = D(d_params, stats, fake, train=True)
        value = loss.d(r, f)
        return value, (stats, {"train/d_loss": value, "train/d_real": jnp.mean(r),
                               "train/d_fake": jnp.mean(f)})

    state, d_metrics = _update(spec, state, "d", d_loss)
    r = _real_logits(spec, state, x, loss)

    def g_loss(g_params):
        out, stats = G(g_params, state.g_stats, c, train=True)
        f, _ = D(state.d_params, state.d_stats, out, train=True)
        adv = loss.g(r, f)
        content, m = srgan_content(out, x, t, features)
        value = content + t.adv_weight * adv
        return value, (stats, m | {"train/g_adv": adv, "train/g_loss": value})

    state, g_metrics = _update(spec, state, "g", g_loss)
    phase = {"train/pretrain": jnp.float32(0.0)} if t.pretrain_steps else {}
    return _finish(spec, state, d_metrics | g_metrics | phase)


def cycle_terms(g_ab, g_ba, a: jax.Array, b: jax.Array, identity: bool = True) -> dict:
    """CycleGAN's terms for generator functions ``g_ab`` (A -> B) and ``g_ba`` (B -> A):
    translations, cycle L1 |G_BA(G_AB(a)) - a| + |G_AB(G_BA(b)) - b| and identity L1
    |G_BA(a) - a| + |G_AB(b) - b|. Identity generators give exactly zero cycle and identity."""
    fake_b, fake_a = g_ab(a), g_ba(b)
    cycle_a = jnp.mean(jnp.abs(g_ba(fake_b) - a))
    cycle_b = jnp.mean(jnp.abs(g_ab(fake_a) - b))
    out = {"fake_a": fake_a, "fake_b": fake_b, "cycle_a": cycle_a, "cycle_b": cycle_b,
           "cycle": cycle_a + cycle_b, "identity": jnp.zeros(())}
    if identity:
        out["identity"] = jnp.mean(jnp.abs(g_ba(a) - a)) + jnp.mean(jnp.abs(g_ab(b) - b))
    return out


def cyclegan_step(state, batch: dict, key: jax.Array, hp: dict, *, spec: StepSpec):
    TRACES["train_step"] += 1
    a, b = _pair(batch)  # c: domain A, x: domain B
    G, D, loss, t = _net(spec, "g"), _net(spec, "d"), losses_.get(spec.loss), spec.task
    fake_b = jax.lax.stop_gradient(G(state.g_params, state.g_stats, a, train=True, direction="ab")[0])
    fake_a = jax.lax.stop_gradient(G(state.g_params, state.g_stats, b, train=True, direction="ba")[0])
    pool_metrics = {}
    if state.task_state is not None:  # D sees the history pool's mix of new and older fakes
        fake_a, fake_b, history, used = query_both(state.task_state, fake_a, fake_b,
                                                        step_key(key, state))
        state, pool_metrics = state.replace(task_state=history), {"train/pool_fraction": used}

    def d_loss(d_params):
        r_b, stats = D(d_params, state.d_stats, b, train=True, domain="b")
        f_b, stats = D(d_params, stats, fake_b, train=True, domain="b")
        r_a, stats = D(d_params, stats, a, train=True, domain="a")
        f_a, stats = D(d_params, stats, fake_a, train=True, domain="a")
        d_a, d_b = 0.5 * loss.d(r_a, f_a), 0.5 * loss.d(r_b, f_b)
        return d_a + d_b, (stats, {"train/d_loss": d_a + d_b, "train/d_a": d_a, "train/d_b": d_b,
                                   "train/d_real": 0.5 * (jnp.mean(r_a) + jnp.mean(r_b)),
                                   "train/d_fake": 0.5 * (jnp.mean(f_a) + jnp.mean(f_b))})

    state, d_metrics = _update(spec, state, "d", d_loss)
    r_a = _real_logits(spec, state, a, loss, domain="a")
    r_b = _real_logits(spec, state, b, loss, domain="b")

    def g_loss(g_params):
        box = [state.g_stats]  # BatchNorm statistics threaded through the six G calls

        def gen(direction):
            def f(img):
                out, box[0] = G(g_params, box[0], img, train=True, direction=direction)
                return out
            return f

        terms = cycle_terms(gen("ab"), gen("ba"), a, b, identity=t.identity_weight > 0)
        adv_b = loss.g(r_b, D(state.d_params, state.d_stats, terms["fake_b"], train=True,
                              domain="b")[0])
        adv_a = loss.g(r_a, D(state.d_params, state.d_stats, terms["fake_a"], train=True,
                              domain="a")[0])
        value = (t.adv_weight * (adv_a + adv_b)
                 + t.cycle_weight * (terms["cycle"] + t.identity_weight * terms["identity"]))
        return value, (box[0], {"train/g_loss": value, "train/g_adv_a": adv_a,
                                "train/g_adv_b": adv_b, "train/cycle_a": terms["cycle_a"],
                                "train/cycle_b": terms["cycle_b"],
                                "train/identity": terms["identity"]})

    state, g_metrics = _update(spec, state, "g", g_loss)
    return _finish(spec, state, d_metrics | g_metrics | pool_metrics)
