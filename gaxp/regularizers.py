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

Each is an entry of ``gaxp.registry.REGULARIZERS`` holding its own hooks (``penalty``,
``d_term``, ``view``, ``check``), registered here exactly as a plugin registers its own.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from gaxp import augment
from gaxp import specs as C
from gaxp.errors import ConfigError
from gaxp.registry import REGULARIZERS, register

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


def wgan_gp(d_fn: DFn, real: Array, fake: Array, key: Array, p=None) -> Array:
    """Two-sided gradient penalty of WGAN-GP (Gulrajani et al. 2017, Algorithm 1):
    ``E[(||grad D(x_hat)|| - 1)^2]`` at ``x_hat = eps * x + (1 - eps) * G(z)``, eps ~ U[0, 1]."""
    del p
    return jnp.mean(jnp.square(_norms(d_fn, _interpolate(d_fn, real, fake, key)) - 1.0))


def one_sided_gp(d_fn: DFn, real: Array, fake: Array, key: Array, p=None) -> Array:
    """One-sided penalty (WGAN-LP, Petzka et al. 2018, "On the regularization of Wasserstein
    GANs"): ``E[max(0, ||grad D(x_hat)|| - 1)^2]``, only gradients steeper than 1 are penalized."""
    del p
    norms = _norms(d_fn, _interpolate(d_fn, real, fake, key))
    return jnp.mean(jnp.square(jax.nn.relu(norms - 1.0)))


def r1(d_fn: DFn, real: Array, fake: Array, key: Array, p=None) -> Array:
    """R1 (Mescheder et al. 2018, "Which training methods for GANs do actually converge?"):
    ``E_real[||grad D(x)||^2]``; the paper's ``gamma / 2`` is the configured weight."""
    del fake, key, p
    return jnp.mean(jnp.sum(jnp.square(_grads(d_fn, real)), axis=1))


def r2(d_fn: DFn, real: Array, fake: Array, key: Array, p=None) -> Array:
    """R2 (Mescheder et al. 2018): the squared gradient norm of D on generated samples."""
    del real, key, p
    return jnp.mean(jnp.sum(jnp.square(_grads(d_fn, fake)), axis=1))


def dragan(d_fn: DFn, real: Array, fake: Array, key: Array, p: C.DraganParams | None = None) -> Array:
    """DRAGAN (Kodali et al. 2017, "On convergence and stability of GANs"):
    ``E[(||grad D(x_hat)|| - 1)^2]`` around real data. ``noise=normal``: ``x_hat = x + delta``,
    ``delta ~ N(0, (c * std(x))^2)``; ``noise=uniform`` (compare_gan's, Lucic et al. 2018):
    ``x_hat = x + alpha * c * std(x) * u``, ``u ~ U[0, 1)`` per pixel, ``alpha ~ U[0, 1]`` per
    sample. ``of=sigmoid``: the gradient of sigmoid(D) instead of D's logit (compare_gan's)."""
    del fake
    p = p or C.DraganParams()
    for key_, value, valid in (("noise", p.noise, ("normal", "uniform")),
                               ("of", p.of, ("logits", "sigmoid"))):
        if value not in valid:
            raise ConfigError(f"regularizer.dragan.{key_} must be one of {', '.join(valid)}, got {value!r}")
    k_noise, k_alpha = jax.random.split(key)
    scale = p.c * jnp.std(real)
    if p.noise == "uniform":
        alpha = jax.random.uniform(k_alpha, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
        x_hat = real + alpha * scale * jax.random.uniform(k_noise, real.shape, real.dtype)
    else:
        x_hat = real + scale * jax.random.normal(key, real.shape, real.dtype)
    fn = (lambda x: jax.nn.sigmoid(d_fn(x))) if p.of == "sigmoid" else d_fn  # noqa: E731
    return jnp.mean(jnp.square(_norms(fn, x_hat) - 1.0))


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


class DTermContext(NamedTuple):
    """What a ``d_term`` hook sees: the loss name, D as a function of its input (parameters held
    by the caller), D's inputs and outputs on the real and fake batch, and its own key."""

    loss: str
    d_fn: DFn
    real: Array
    fake: Array
    r: Array
    f: Array
    key: Array


def _views(regs: C.RegSpec) -> list:
    """The active view hooks with their key slot (its place among every registered view)."""
    slots = sorted((e.order, n) for n, e in REGULARIZERS.items() if e.view is not None)
    slot = {n: i for i, (_, n) in enumerate(slots)}
    return [(slot[n], REGULARIZERS[n].view, p) for n, p in _ordered(regs, "view")]


def _ordered(regs: C.RegSpec, hook: str) -> list:
    """The run's entries that have ``hook``, in the order of their ``order`` (then name)."""
    have = [(REGULARIZERS[n].order, n, p) for n, p in regs.entries
            if getattr(REGULARIZERS[n], hook) is not None]
    return [(n, p) for _, n, p in sorted(have, key=lambda t: t[:2])]


def d_inputs(regs: C.RegSpec, xs: tuple, key: Array, step: Array) -> tuple[tuple, dict]:
    """What D sees of each batch in ``xs``: every ``view`` hook (DiffAugment, then instance noise;
    fresh draws per batch). Used for real and fake in the D step and for D's inputs in the G step."""
    views = _views(regs)
    out, metrics = [], {}
    for i, x in enumerate(xs):
        k = jax.random.fold_in(key, i)
        pair = jax.random.split(k)
        for slot, view, p in views:
            x, m = view(x, pair[slot] if slot < 2 else jax.random.fold_in(k, 1000 + slot), step, p)
            metrics |= m
        out.append(x)
    return tuple(out), metrics


def d_terms(regs: C.RegSpec, loss: str, d_fn: DFn, real: Array, fake: Array, r: Array,
            f: Array, key: Array, d_index: Array, penalty_weight=None) -> tuple[Array, dict]:
    """Everything added to D's loss by the stabilizers, and their metrics (``train/<name>``):
    the gradient penalties (lazily, every ``p.every`` D updates), then every ``d_term`` hook.
    ``penalty_weight``: a traced weight replacing the configured one of the (single) gradient
    penalty (a population member's ``gp_weight``)."""
    total, metrics = jnp.zeros((), jnp.float32), {}
    for i, (name, p) in enumerate(regs.penalties):
        k = jax.random.fold_in(key, i)
        fn = REGULARIZERS[name].penalty
        value = lazy(lambda fn=fn, k=k, p=p: fn(d_fn, real, fake, k, p), p.every, d_index)
        weight = p.weight if penalty_weight is None else penalty_weight
        total = total + (weight * p.every) * value
        metrics[f"train/{name}"] = value
    ctx = DTermContext(loss, d_fn, real, fake, r, f, key)
    for name, p in _ordered(regs, "d_term"):
        term, m = REGULARIZERS[name].d_term(ctx, p)
        total, metrics = total + term, metrics | m
    return total, metrics


# ----------------------------------------------------------------------------- the entries


def _positive(path: str, value, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{path} must be {'>= 0' if allow_zero else '> 0'} (got {value})")


for _name, _fn in (("wgan_gp", wgan_gp), ("one_sided_gp", one_sided_gp), ("r1", r1), ("r2", r2)):
    register.penalty(_name)(_fn)
register.penalty("dragan", params=C.DraganParams)(dragan)


def _check_policy(path: str, p, loss: str) -> None:
    augment.check_policy(f"{path}.policy", p.policy)


def _bcr_check(path: str, p: C.BcrParams, loss: str) -> None:
    _check_policy(path, p, loss)
    _positive(f"{path}.real_weight", p.real_weight, allow_zero=True)
    _positive(f"{path}.fake_weight", p.fake_weight, allow_zero=True)


register.regularizer(
    "bcr", params=C.BcrParams, order=10, check=_bcr_check,
    d_term=lambda c, p: bcr(c.d_fn, c.real, c.fake, c.r, c.f, jax.random.fold_in(c.key, 1000), p))


def _smoothing_check(path: str, p: C.SmoothingParams, loss: str) -> None:
    if loss not in SMOOTHABLE_LOSSES:
        raise ConfigError(f"{path} applies to loss {', '.join(SMOOTHABLE_LOSSES)} "
                          f"(targets of a classifier), not loss.name={loss}")
    if not 0.0 < p.real_target < 1.0:
        raise ConfigError(f"{path}.real_target must be in (0, 1) (got {p.real_target})")


register.regularizer("label_smoothing", params=C.SmoothingParams, order=20, check=_smoothing_check,
                     d_term=lambda c, p: (label_smoothing(c.loss, c.r, p.real_target), {}))


def _drift_term(c: DTermContext, p: C.DriftParams):
    value = drift(c.r)
    return p.weight * value, {"train/drift": value}


register.regularizer("drift", params=C.DriftParams, order=30, d_term=_drift_term,
                     check=lambda path, p, loss: _positive(f"{path}.weight", p.weight))
register.regularizer("diffaugment", params=C.AugmentParams, order=10, check=_check_policy,
                     view=lambda x, k, step, p: (augment.diff_augment(x, p.policy, k), {}))


def _noise_view(x: Array, key: Array, step: Array, p: C.NoiseParams):
    sigma = noise_sigma(p, step)
    return x + sigma * jax.random.normal(key, x.shape, x.dtype), {"train/instance_noise": sigma}


def _noise_check(path: str, p: C.NoiseParams, loss: str) -> None:
    _positive(f"{path}.sigma", p.sigma)
    _positive(f"{path}.anneal_steps", p.anneal_steps, allow_zero=True)


register.regularizer("instance_noise", params=C.NoiseParams, order=20, view=_noise_view,
                     check=_noise_check)


def _sn_check(path: str, p: C.SpectralNormParams, loss: str) -> None:
    if not (p.d or p.g):
        raise ConfigError(f"{path} needs d=true or g=true")


def _pack_check(path: str, p: C.PackParams, loss: str) -> None:
    if p.pack < 1:
        raise ConfigError(f"{path}.pack must be >= 1 (got {p.pack}; 1 is a plain GAN)")
    if p.batch not in ("samples", "packs"):
        raise ConfigError(f"{path}.batch must be samples or packs (got {p.batch!r})")


def _mbstd_check(path: str, p: C.MbstdParams, loss: str) -> None:
    if p.group < 2:
        raise ConfigError(f"{path}.group must be >= 2 (got {p.group})")


# Stabilizers that live in the networks: their ModelSpec fields (gaxp.config folds them in).
register.regularizer("spectral_norm", params=C.SpectralNormParams, check=_sn_check,
                     model=lambda m, p: {"spectral_norm": m.spectral_norm or p.d,
                                         "g_spectral_norm": m.g_spectral_norm or p.g})
register.regularizer("pacgan", params=C.PackParams, check=_pack_check,
                     model=lambda m, p: {"d_pack": p.pack})
register.regularizer("mbstd", params=C.MbstdParams, check=_mbstd_check,
                     model=lambda m, p: {"d_mbstd": p.group})
def _d_pretrain_phases(config: C.Config) -> tuple:
    """D pre-training's phases: D alone for ``steps`` steps (G and its EMA held), then both."""
    return (C.Phase("d_pretrain", 0, trains="d"),
            C.Phase("adversarial", config.regularizer.get("d_pretrain").steps))


# D pre-training: a phase of its own that trains D alone (gaxp.phases, the step's spec.trains)
register.regularizer("d_pretrain", params=C.PretrainParams, phases=_d_pretrain_phases,
                     check=lambda path, p, loss: _positive(f"{path}.steps", p.steps))


def check_entry(path: str, name: str, p, loss: str) -> None:
    """Validate one configured stabilizer's settings (called by ``gaxp.config``)."""
    entry = REGULARIZERS[name]
    if entry.penalty is not None:
        _positive(f"{path}.weight", p.weight)
        _positive(f"{path}.every", p.every)
    if entry.check is not None:
        entry.check(path, p, loss)


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
