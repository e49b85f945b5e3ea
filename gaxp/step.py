"""The training step as pure functions of pytrees.

``train_step(state, batch, key, hp, *, spec)`` runs ``n_critic`` discriminator updates (each on its
own real micro-batch and fresh fakes, G held fixed) and then one generator update (D held fixed),
then the EMA of G. It is jitted once over the whole mesh by the train loop; nothing here knows
about devices beyond an optional sharding constraint on the latent batch. The stabilizers of
``spec.regs`` enter through ``gaxp.regularizers``: ``d_inputs`` (what D sees, in both steps) and
``d_terms`` (what is added to D's loss). The active phases (``gaxp.phases``) reach the step as
``spec.trains`` (a phase that trains D or G alone: D pre-training, a plugin's warm-up) and
``spec.schedule`` (an arch phase's view of the step, ``gaxp.specs.Schedule``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from gaxp import conditional, regularizers
from gaxp.specs import EmaSpec, LossSpec, RegSpec, TaskSpec
from gaxp import losses as losses_

from gaxp.optim import guard_counts, last_finite
from gaxp.nets import discriminate, generate, sample_images  # noqa: F401 - sample_images re-exported
from gaxp.pixels import to_float
from gaxp.registry import register
from gaxp.state import GANState, Nets

TRACES = {"train_step": 0}  # incremented at trace time only: tests assert one compile per run


@dataclass(frozen=True)
class StepSpec:
    """Everything static the step needs; hashable so it can be a jit static argument."""

    nets: Nets
    loss: LossSpec
    ema: EmaSpec
    z_dim: int
    batch: int  # global batch of one D or G update
    z_sharding: Optional[NamedSharding] = None
    inject_nan: tuple = ()  # debug: steps (1-based) whose gradients are NaN on the first attempt
    regs: RegSpec = RegSpec()  # stabilizers (regularizer group + loss.penalty)
    precision: str = "fp32"  # fp32 | bf16: the networks' compute type (adapter.PRECISIONS)
    schedule: Optional[Any] = None  # the active arch phase's gaxp.specs.Schedule (None: none)
    cond: Optional[conditional.CondSpec] = None  # class-conditional G and D (None: unconditional)
    task: TaskSpec = TaskSpec()  # image-to-image tasks' loss weights (gaxp.tasks.steps)
    phase: Optional[str] = None  # the name of the task's active phase (gaxp.phases)
    trains: str = "both"  # what the active phases train: both, d (G and its EMA held) or g (D held)
    pixels: str = "signed"  # the arch's pixel range (gaxp.pixels): D's real images, G's output


def sample_z(spec: StepSpec, key: jax.Array, n: Optional[int] = None) -> jax.Array:
    z = jax.random.normal(key, (n or spec.batch, spec.z_dim), jnp.float32)
    if spec.z_sharding is not None and n is None:
        z = jax.lax.with_sharding_constraint(z, spec.z_sharding)
    return z


def _apply(spec: StepSpec, state: GANState, grads, tx, opt_state, params, new_stats, old_stats,
           lr_scale=None):
    """Optimizer update scaled by ``state.lr_scale`` (and by a population member's ``lr_scale``:
    its learning rate over the configured one). When the guard skipped the update (non-finite
    gradients), the batch statistics of that forward pass are dropped too."""
    if spec.inject_nan:  # debug hook: a divergence at chosen steps, gone after a rollback
        bad = jnp.isin(state.step + 1, jnp.asarray(spec.inject_nan)) & (state.rollbacks == 0)
        grads = jax.tree.map(lambda g: jnp.where(bad, jnp.nan, g), grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    scale = state.lr_scale if lr_scale is None else state.lr_scale * lr_scale
    updates = jax.tree.map(lambda u: u * scale, updates)
    ok = last_finite(opt_state)
    stats = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_stats, old_stats)
    return optax.apply_updates(params, updates), opt_state, stats


def d_step(spec: StepSpec, state: GANState, real: jax.Array, key: jax.Array, d_index, hp: dict,
           y=None):
    """One discriminator update on ``real`` and fresh fakes; G is held fixed. ``d_index`` counts
    D updates since the start (the clock of lazy penalties); ``hp``: a population member's traced
    hyperparameters (``gaxp.population.VARY``). Conditional: ``y`` labels ``real``, and the fakes
    are requested with the same labels (``gaxp.conditional``)."""
    k_z, k_pen = jax.random.split(key)
    t = state.step
    fake, _ = generate(spec, state.g_params, state.g_stats, sample_z(spec, k_z), y, train=True, step=t)
    fake = jax.lax.stop_gradient(fake)
    (real, fake), view_metrics = regularizers.d_inputs(
        spec.regs, (real, fake), jax.random.fold_in(key, 2), state.step)
    loss, cfg = losses_.get(spec.loss), spec.loss

    def loss_fn(d_params):
        r, stats = discriminate(spec, d_params, state.d_stats, real, y, train=True, step=t)
        f, stats = discriminate(spec, d_params, stats, fake, y, train=True, step=t)
        ac_loss = None
        if spec.cond is not None:  # AC-GAN's class-head terms (projection adds none)
            r, f, ac_loss, ac_metrics = conditional.d_split(spec.cond, r, f, y, y)
        d_loss = loss.d(r, f)
        metrics = {"train/d_loss": d_loss, "train/d_real": jnp.mean(r), "train/d_fake": jnp.mean(f)}
        d_fn = lambda x: conditional.adversarial(  # noqa: E731 - D of x, labels held fixed
            discriminate(spec, d_params, stats, x, y, train=True, step=t)[0])
        reg, reg_metrics = regularizers.d_terms(spec.regs, cfg.name, d_fn, real, fake, r, f,
                                                k_pen, d_index, hp.get("gp_weight"))
        if ac_loss is not None:
            reg, reg_metrics = reg + ac_loss, reg_metrics | ac_metrics
        return d_loss + reg, (stats, metrics | reg_metrics | view_metrics)

    grads, (d_stats, metrics) = jax.grad(loss_fn, has_aux=True)(state.d_params)
    d_params, d_opt, d_stats = _apply(spec, state, grads, spec.nets.d_opt, state.d_opt,
                                      state.d_params, d_stats, state.d_stats, hp.get("d_lr_scale"))
    if cfg.clip:
        d_params = jax.tree.map(lambda p: jnp.clip(p, -cfg.clip, cfg.clip), d_params)
    return state.replace(d_params=d_params, d_stats=d_stats, d_opt=d_opt), metrics


def g_step(spec: StepSpec, state: GANState, real: jax.Array, key: jax.Array, hp: dict, y=None):
    """One generator update; D's parameters and statistics are held fixed. D sees the fakes
    (and reals) through the same ``d_inputs`` view as in the D step (DiffAugment, noise).
    Conditional: ``y`` labels ``real``; the fakes ask for uniformly drawn labels."""
    z = sample_z(spec, key)
    y_fake = None
    if spec.cond is not None:
        y_fake = conditional.fake_labels(spec.cond, jax.random.fold_in(key, 3), spec.batch,
                                         spec.z_sharding)  # P("data"): shards y's only axis
    k_view = jax.random.fold_in(key, 2)
    loss = losses_.get(spec.loss)
    if loss.g_needs_real:
        (real,), _ = regularizers.d_inputs(spec.regs, (real,), jax.random.fold_in(k_view, 1),
                                           state.step)
        r, _ = discriminate(spec, state.d_params, state.d_stats, real, y, train=True, step=state.step)
        r = conditional.adversarial(r)
    else:
        r = jnp.zeros((real.shape[0],), jnp.float32)  # unused by these losses

    def loss_fn(g_params):
        fake, g_stats = generate(spec, g_params, state.g_stats, z, y_fake, train=True, step=state.step)
        (fake,), _ = regularizers.d_inputs(spec.regs, (fake,), k_view, state.step)
        f, _ = discriminate(spec, state.d_params, state.d_stats, fake, y_fake, train=True,
                            step=state.step)
        if spec.cond is None:
            g_loss = loss.g(r, f)
            return g_loss, (g_stats, {"train/g_loss": g_loss})
        f, ac, ac_metrics = conditional.g_split(spec.cond, f, y_fake)
        g_loss = loss.g(r, f)
        return g_loss + ac, (g_stats, {"train/g_loss": g_loss} | ac_metrics)

    grads, (g_stats, metrics) = jax.grad(loss_fn, has_aux=True)(state.g_params)
    g_params, g_opt, g_stats = _apply(spec, state, grads, spec.nets.g_opt, state.g_opt,
                                      state.g_params, g_stats, state.g_stats, hp.get("g_lr_scale"))
    return state.replace(g_params=g_params, g_stats=g_stats, g_opt=g_opt), metrics


def ema_beta(ema: EmaSpec, batch: int, step: jax.Array, halflife_kimg=None) -> jax.Array:
    """Per-step EMA decay for a half-life in kimg, with StyleGAN's ramp-up (Karras et al. 2020):
    the half-life is capped at ``rampup`` times the images seen so far. ``halflife_kimg``: a
    traced value replacing ``ema.halflife_kimg`` (a population member's)."""
    kimg = ema.halflife_kimg if halflife_kimg is None else halflife_kimg
    halflife = jnp.float32(kimg * 1000.0)
    if ema.rampup:
        halflife = jnp.minimum(halflife, (step + 1).astype(jnp.float32) * batch * ema.rampup)
    return 0.5 ** (batch / jnp.maximum(halflife, 1e-8))


def step_key(key: jax.Array, state: GANState) -> jax.Array:
    """The step's own key: the run's key folded with the step and the rollback count (no key is
    stored in the state, so a resumed run draws exactly what an uninterrupted one does)."""
    return jax.random.fold_in(jax.random.fold_in(key, state.step), state.rollbacks)


def train_step(state: GANState, batch: dict, key: jax.Array, hp: dict, *, spec: StepSpec):
    """``n_critic`` D updates on ``batch['x'][i]``, one G update, EMA of G. Returns (state, metrics).
    ``hp``: traced hyperparameters of a population member (``gaxp.members.hparams``), ``{}`` for
    a single run, whose program then has no argument for them. In a phase that trains D alone
    (``spec.trains == "d"``), G and its EMA are left as they are; in one that trains G alone, D."""
    TRACES["train_step"] += 1
    k_d, k_g = jax.random.split(step_key(key, state))
    x = to_float(batch["x"], spec.pixels)  # [n_critic, batch, ...], in the arch's pixel range
    if spec.schedule is not None:  # the reals as the arch phase's D sees them
        x = spec.schedule.real(x, state.step)
    y = batch.get("y") if spec.cond is not None else None  # labels [n_critic, batch] (conditional)

    # n_critic > 1: a loop over the D updates (lax.scan), compiled once. It ran 5x slower than a
    # Python loop unrolled at trace time while XLA:CPU ran the convolutions' gradients with its
    # generic kernels inside loop bodies (gaxp.models.layers.kernel_grad); now it runs as fast
    # and compiles in half the time (DCGAN-28 WGAN-GP, 5 D updates: docs/speed.md).
    # n_critic = 1 keeps the straight-line program.
    n = x.shape[0]

    def critic(state, i):
        return d_step(spec, state, x[i], jax.random.fold_in(k_d, i), state.step * n + i, hp,
                      None if y is None else y[i])

    metrics = {}
    if spec.trains != "g":
        if n == 1:
            state, d_metrics = critic(state, 0)
            d_metrics = jax.tree.map(lambda a: a[None], d_metrics)
        else:
            state, d_metrics = jax.lax.scan(critic, state, jnp.arange(n))
        metrics = {k: jnp.mean(v, axis=0) for k, v in d_metrics.items()}
    if spec.trains != "d":
        state, g_metrics = g_step(spec, state, x[-1], k_g, hp, None if y is None else y[-1])
        beta = ema_beta(spec.ema, spec.batch, state.step, hp.get("ema_kimg"))
        state = state.replace(g_ema=optax.incremental_update(state.g_params, state.g_ema, 1.0 - beta))
        metrics |= g_metrics
    if spec.schedule is not None:
        metrics |= spec.schedule.metrics(state.step)
    return state.replace(step=state.step + 1), metrics | guard_metrics(state, n)


# task=gan: noise -> sample, registered exactly as a plugin's task is (gaxp.tasks has the others)
register.task("gan", archs=(), needs_paired=False, batch_keys=("x",))(train_step)


def guard_metrics(state: GANState, n_critic: int) -> dict:
    """Skipped (non-finite) updates so far, and consecutive bad train steps: a step is bad when its
    G update or all of its D updates were skipped."""
    d, g = guard_counts(state.d_opt), guard_counts(state.g_opt)
    if d is None or g is None:
        return {}
    return {"guard/skipped_d": d[1], "guard/skipped_g": g[1],
            "guard/consecutive": jnp.maximum(g[0], d[0] // n_critic)}
