"""Stabilizers of GAN training: gradient penalties, consistency, label smoothing, instance noise,
lazy regularization, and the registry of the ``regularizer`` config group.

A gradient penalty is a plain function ``penalty(d_fn, real, fake, key) -> scalar`` where
``d_fn`` maps a batch of D inputs to D's outputs with D's parameters held fixed by the caller (the
step differentiates the total loss with respect to them). Gradient norms are taken per D output:
with PacGAN packing one output scores a pack of m samples, and its gradient is over the pack.

Where each stabilizer acts:

* penalties and bCR are added to D's loss (``d_terms``); one-sided label smoothing too. They see
  D's inputs as D sees them: after DiffAugment and instance noise;
* DiffAugment and instance noise change what D sees, in the D and the G step (``d_inputs``);
* spectral norm, PacGAN packing and minibatch stddev live in the models (ModelSpec fields);
* D pre-training skips the G update for the first steps (``gaxp.step``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gaxp import augment
from gaxp import config as C

Array = jax.Array
DFn = Callable[[Array], Array]


def _grads(d_fn: DFn, x: Array) -> Array:
    """dD/dx, one row per D output: [n_outputs, -1] (a PacGAN pack is one row)."""
    out, vjp = jax.vjp(d_fn, x)
    (g,) = vjp(jnp.ones_like(out))
    return g.reshape(out.shape[0], -1).astype(jnp.float32)


def _norms(d_fn: DFn, x: Array) -> Array:
    """Per-output L2 norm of dD(x)/dx. Valid because D scores each sample independently
    (per-batch BatchNorm statistics would couple them; WGAN-GP recommends no BatchNorm in D)."""
    return jnp.sqrt(jnp.sum(jnp.square(_grads(d_fn, x)), axis=1) + 1e-12)


def _interpolate(d_fn: DFn, real: Array, fake: Array, key: Array) -> Array:
    """``eps * real + (1 - eps) * fake``, one eps ~ U[0, 1] per D output (per pack)."""
    n = jax.eval_shape(d_fn, real).shape[0]
    eps = jnp.repeat(jax.random.uniform(key, (n,), real.dtype), real.shape[0] // n)
    eps = eps.reshape((-1,) + (1,) * (real.ndim - 1))
    return eps * real + (1.0 - eps) * fake


def wgan_gp(d_fn: DFn, real: Array, fake: Array, key: Array) -> Array:
    """Two-sided gradient penalty of WGAN-GP (Gulrajani et al. 2017, Algorithm 1):
    ``E[(||grad D(x_hat)|| - 1)^2]`` at ``x_hat = eps * x + (1 - eps) * G(z)``, eps ~ U[0, 1]."""
    return jnp.mean(jnp.square(_norms(d_fn, _interpolate(d_fn, real, fake, key)) - 1.0))


def one_sided_gp(d_fn: DFn, real: Array, fake: Array, key: Array) -> Array:
    """One-sided penalty (WGAN-LP, Petzka et al. 2018, "On the regularization of Wasserstein
    GANs"): ``E[max(0, ||grad D(x_hat)|| - 1)^2]``, only gradients steeper than 1 are penalized."""
    norms = _norms(d_fn, _interpolate(d_fn, real, fake, key))
    return jnp.mean(jnp.square(jax.nn.relu(norms - 1.0)))


def r1(d_fn: DFn, real: Array, fake: Array, key: Array) -> Array:
    """R1 (Mescheder et al. 2018, "Which training methods for GANs do actually converge?"):
    ``E_real[||grad D(x)||^2]``; the paper's ``gamma / 2`` is the configured weight."""
    del fake, key
    return jnp.mean(jnp.sum(jnp.square(_grads(d_fn, real)), axis=1))


def r2(d_fn: DFn, real: Array, fake: Array, key: Array) -> Array:
    """R2 (Mescheder et al. 2018): the squared gradient norm of D on generated samples."""
    del real, key
    return jnp.mean(jnp.sum(jnp.square(_grads(d_fn, fake)), axis=1))


def dragan(d_fn: DFn, real: Array, fake: Array, key: Array, c: float = 0.5) -> Array:
    """DRAGAN (Kodali et al. 2017, "On convergence and stability of GANs"):
    ``E[(||grad D(x + delta)|| - 1)^2]`` with ``delta ~ N(0, (c * std(x))^2)`` around real data."""
    del fake
    x_hat = real + c * jnp.std(real) * jax.random.normal(key, real.shape, real.dtype)
    return jnp.mean(jnp.square(_norms(d_fn, x_hat) - 1.0))


def lazy(value_fn: Callable[[], Array], every: int, d_index: Array) -> Array:
    """Lazy regularization (Karras et al. 2020, StyleGAN2, section 3.1): ``value_fn()`` on the D
    updates whose index is a multiple of ``every``, else 0 (the caller scales the weight by
    ``every``). ``lax.cond`` skips the work on the other steps without a recompile."""
    if every == 1:
        return value_fn()
    return jax.lax.cond(d_index % every == 0, value_fn, lambda: jnp.zeros((), jnp.float32))


def lazy_optimizer(o: C.OptSpec, every: int) -> C.OptSpec:
    """StyleGAN2's correction for a penalty applied every k steps: lr and Adam's betas are
    rescaled by ``c = k / (k + 1)`` (``lr * c``, ``beta ** c``)."""
    if every <= 1:
        return o
    c = every / (every + 1)
    return dataclasses.replace(o, lr=o.lr * c, b1=o.b1 ** c, b2=o.b2 ** c)


def bcr(d_fn: DFn, real: Array, fake: Array, r: Array, f: Array, key: Array,
        p: C.BcrParams) -> tuple[Array, dict]:
    """Balanced consistency regularization (Zhao et al. 2021, "Improved consistency
    regularization for GANs"): ``l_real ||D(x) - D(T(x))||^2 + l_fake ||D(G(z)) - D(T(G(z)))||^2``
    with T from ``gaxp.augment``; it shapes D only."""
    k_r, k_f = jax.random.split(key)
    cr_real = jnp.mean(jnp.square(d_fn(augment.diff_augment(real, p.policy, k_r)) - r))
    cr_fake = jnp.mean(jnp.square(d_fn(augment.diff_augment(fake, p.policy, k_f)) - f))
    total = p.real_weight * cr_real + p.fake_weight * cr_fake
    return total, {"train/bcr_real": cr_real, "train/bcr_fake": cr_fake}


SMOOTHABLE_LOSSES = ("lsgan", "minimax", "ns")


def label_smoothing(loss: str, r: Array, target: float) -> Array:
    """One-sided label smoothing (Salimans et al. 2016, section 3.4): D's target for real data
    becomes ``target`` (0.9), fakes keep 0, G is unchanged. Returned as the term that turns the
    loss's real part into the smoothed one exactly: binary cross-entropy to t is
    ``softplus(-r) + (1 - t) r``; least squares ``(r - t)^2 / 2 = (r - 1)^2 / 2 + (1 - t)(r - (1 + t) / 2)``."""
    mean = jnp.mean(r.astype(jnp.float32))
    if loss == "lsgan":
        return (1.0 - target) * (mean - 0.5 * (1.0 + target))
    return (1.0 - target) * mean


def noise_sigma(p: C.NoiseParams, step: Array) -> Array:
    """Instance noise (Sonderby et al. 2017, "Amortised MAP inference for image
    super-resolution", and Arjovsky & Bottou 2017): Gaussian noise of std ``sigma`` on every D
    input, real and fake, decayed linearly to 0 over ``anneal_steps`` (0 = constant)."""
    if not p.anneal_steps:
        return jnp.float32(p.sigma)
    return p.sigma * jnp.maximum(0.0, 1.0 - step.astype(jnp.float32) / p.anneal_steps)


def drift(r: Array) -> Array:
    """ProGAN's drift term (Karras et al. 2018, appendix A.1): ``E[D(x)^2]`` over real data, added
    to D's loss times epsilon_drift (0.001) so the critic's output does not drift far from 0 (WGAN-GP
    fixes only its slope). Works with any loss."""
    return jnp.mean(jnp.square(r.astype(jnp.float32)))


def d_inputs(regs: C.RegSpec, xs: tuple, key: Array, step: Array) -> tuple[tuple, dict]:
    """What D sees of each batch in ``xs``: DiffAugment, then instance noise (fresh draws per
    batch). Used for real and fake in the D step and for D's inputs in the G step."""
    aug, noise = regs.get("diffaugment"), regs.get("instance_noise")
    out, metrics = [], {}
    for i, x in enumerate(xs):
        k_aug, k_noise = jax.random.split(jax.random.fold_in(key, i))
        if aug is not None:
            x = augment.diff_augment(x, aug.policy, k_aug)
        if noise is not None:
            sigma = noise_sigma(noise, step)
            x = x + sigma * jax.random.normal(k_noise, x.shape, x.dtype)
            metrics["train/instance_noise"] = sigma
        out.append(x)
    return tuple(out), metrics


def d_terms(regs: C.RegSpec, loss: str, d_fn: DFn, real: Array, fake: Array, r: Array,
            f: Array, key: Array, d_index: Array, penalty_weight=None) -> tuple[Array, dict]:
    """Everything added to D's loss by the stabilizers, and their metrics (``train/<name>``).
    ``penalty_weight``: a traced weight replacing the configured one of the (single) gradient
    penalty (a population member's ``gp_weight``)."""
    total, metrics = jnp.zeros((), jnp.float32), {}
    for i, (name, p) in enumerate(regs.penalties):
        k = jax.random.fold_in(key, i)
        fn = REGULARIZERS[name].penalty
        value = lazy(lambda fn=fn, k=k: fn(d_fn, real, fake, k), p.every, d_index)
        weight = p.weight if penalty_weight is None else penalty_weight
        total = total + (weight * p.every) * value
        metrics[f"train/{name}"] = value
    if (cr := regs.get("bcr")) is not None:
        term, m = bcr(d_fn, real, fake, r, f, jax.random.fold_in(key, 1000), cr)
        total, metrics = total + term, metrics | m
    if (ls := regs.get("label_smoothing")) is not None:
        total = total + label_smoothing(loss, r, ls.real_target)
    if (dr := regs.get("drift")) is not None:
        value = drift(r)
        total, metrics = total + dr.weight * value, metrics | {"train/drift": value}
    return total, metrics


class Regularizer(NamedTuple):
    params: type  # the frozen dataclass of its settings (gaxp.config)
    penalty: Optional[Callable] = None  # gradient penalties only


REGULARIZERS: dict[str, Regularizer] = {
    "wgan_gp": Regularizer(C.PenaltyParams, wgan_gp),
    "one_sided_gp": Regularizer(C.PenaltyParams, one_sided_gp),
    "r1": Regularizer(C.PenaltyParams, r1),
    "r2": Regularizer(C.PenaltyParams, r2),
    "dragan": Regularizer(C.PenaltyParams, dragan),
    "bcr": Regularizer(C.BcrParams),
    "diffaugment": Regularizer(C.AugmentParams),
    "label_smoothing": Regularizer(C.SmoothingParams),
    "instance_noise": Regularizer(C.NoiseParams),
    "spectral_norm": Regularizer(C.SpectralNormParams),
    "pacgan": Regularizer(C.PackParams),
    "mbstd": Regularizer(C.MbstdParams),
    "d_pretrain": Regularizer(C.PretrainParams),
    "drift": Regularizer(C.DriftParams),
}


def advice(config: C.Config) -> list[str]:
    """Settings that run but that the stabilizers' papers advise against, one line each (logged
    at start-up, never an error: a researcher may want exactly that ablation)."""
    penalties = [n for n, _ in config.regularizer.penalties]
    if penalties and config.model.d_norm == "batch":
        return [f"gradient penalty {', '.join(penalties)} with BatchNorm in D (model.d_norm=batch): "
                "the penalty's gradient then mixes the samples of a batch, so it is not the "
                "per-sample norm the method constrains (Gulrajani et al. 2017 leave BatchNorm out "
                "of the critic); model.d_norm=layer or none gives the intended penalty"]
    return []
