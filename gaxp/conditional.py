"""Conditional GANs in the one training step: labels, class-loss terms and fixed sample inputs.

The networks (``gaxp.models.conditional``) take the labels as a second argument; this module holds
what the step, the loop and the tools need around them:

* ``with_classes(config, dataset)``: the checks that need the dataset (labels present, class
  count) and ``model.num_classes`` filled in, before anything is built or compiled;
* ``CondSpec``: the static part the step sees (``StepSpec.cond``; None for unconditional runs, so
  their step is the same program as before);
* label choice in the step: the D step requests its fakes with the labels of its real micro-batch
  (so every real/fake pair shares a label, and gradient penalties, bCR and the other D terms see D
  as a function of x with one fixed label vector); the G step requests labels drawn uniformly over
  the classes (``fake_labels``);
* AC-GAN's auxiliary terms (Odena et al. 2017): D minimizes the cross-entropy of its class head on
  real examples (true labels) and on fakes (requested labels); G minimizes it on its fakes. Both
  are weighted by ``model.ac_weight``;
* ``grid_inputs``: one row per class with the same noise in each column.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from gaxp.errors import ConfigError


@dataclass(frozen=True)
class CondSpec:
    kind: str  # projection | acgan
    num_classes: int
    ac_weight: float = 1.0


def with_classes(config, dataset):
    """``config`` with ``model.num_classes`` from the dataset; ConfigError when a conditional model
    meets an unlabeled dataset (or a PacGAN D, which scores packs of differently labeled samples)."""
    m = config.model
    if m.cond == "none":
        return config
    k = dataset.num_classes
    if not k:
        hint = ("add data.labeled=true (each point labeled by its mode)" if dataset.kind == "points"
                else "use a labeled dataset (mnist, or a TFDS set with a 'label' feature)")
        raise ConfigError(f"model.cond={m.cond} needs class labels, but {dataset.name} is "
                          f"unlabeled; {hint}, or set model.cond=none")
    if m.num_classes is not None and m.num_classes != k:
        raise ConfigError(f"model.num_classes={m.num_classes} but {dataset.name} has {k} classes; "
                          "leave model.num_classes unset (it comes from the dataset)")
    if k < 2:
        raise ConfigError(f"model.cond={m.cond} needs at least 2 classes ({dataset.name} has {k})")
    if m.d_pack > 1:
        raise ConfigError(f"model.cond={m.cond} cannot be combined with PacGAN packing "
                          f"(pack={m.d_pack}): a pack mixes labels; drop regularizer=pacgan")
    return dataclasses.replace(config, model=dataclasses.replace(m, num_classes=k))


def cond_spec(model) -> Optional[CondSpec]:
    if model.cond == "none":
        return None
    return CondSpec(model.cond, model.num_classes, model.ac_weight)


def fake_labels(cond: CondSpec, key: jax.Array, n: int, sharding=None) -> jax.Array:
    """Requested labels of a G step: uniform over the classes."""
    y = jax.random.randint(key, (n,), 0, cond.num_classes, jnp.int32)
    return y if sharding is None else jax.lax.with_sharding_constraint(y, sharding)


def class_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of class logits [B, K] against labels [B] (float32)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), y))


def d_split(cond: Optional[CondSpec], r, f, y_real, y_fake):
    """D's outputs on real and fake -> (adversarial logits r, f; AC-GAN's D term; metrics)."""
    if cond is None or cond.kind != "acgan":
        return r, f, jnp.zeros((), jnp.float32), {}
    (r, r_cls), (f, f_cls) = r, f
    real, fake = class_loss(r_cls, y_real), class_loss(f_cls, y_fake)
    acc = jnp.mean((jnp.argmax(r_cls, -1) == y_real).astype(jnp.float32))
    metrics = {"train/ac_real": real, "train/ac_fake": fake, "train/ac_real_acc": acc}
    return r, f, cond.ac_weight * (real + fake), metrics


def g_split(cond: Optional[CondSpec], f, y_fake):
    """D's output on G's fakes -> (adversarial logits, AC-GAN's G term, metrics)."""
    if cond is None or cond.kind != "acgan":
        return f, jnp.zeros((), jnp.float32), {}
    f, f_cls = f
    term = class_loss(f_cls, y_fake)
    return f, cond.ac_weight * term, {"train/g_ac": term}


def adversarial(out):
    """The adversarial logits of a D output (AC-GAN's D returns them with class logits)."""
    return out[0] if isinstance(out, tuple) else out


def grid_inputs(key: jax.Array, num_classes: int, cols: int, z_dim: int):
    """(z [K*cols, z_dim], y [K*cols]): row k asks for class k, column j uses noise j."""
    z = jax.random.normal(key, (cols, z_dim))
    return jnp.tile(z, (num_classes, 1)), jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), cols)


def balanced_labels(start, n: int, num_classes: int) -> jax.Array:
    """Labels ``(start + i) % K`` for i < n: sample i of an evaluation asks for class i mod K."""
    return ((start + jnp.arange(n, dtype=jnp.int32)) % num_classes).astype(jnp.int32)


def sample_inputs(key: jax.Array, num_classes: int, n: int, z_dim: int, kind: str):
    """(z, y, columns) of a conditional run's sample picture: images, one row per class with the
    same noise in each column (n // K columns); points, n samples asking for class i mod K."""
    if kind == "points":
        return jax.random.normal(key, (n, z_dim)), balanced_labels(0, n, num_classes), None
    cols = max(1, n // num_classes)
    return (*grid_inputs(key, num_classes, cols, z_dim), cols)
