"""Optax optimizers per network. G and D each get their own chain and learning rate (TTUR,
Heusel et al. 2017, is just ``optim.d.lr`` != ``optim.g.lr``)."""

from __future__ import annotations

import optax

from gaxp.config import OptSpec


def _adam(o: OptSpec) -> optax.GradientTransformation:
    if o.weight_decay:
        return optax.adamw(o.lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
    return optax.adam(o.lr, b1=o.b1, b2=o.b2, eps=o.eps)


def _rmsprop(o: OptSpec) -> optax.GradientTransformation:
    """RMSProp as in WGAN (Arjovsky et al. 2017, Algorithm 1); ``b2`` is the decay."""
    return optax.rmsprop(o.lr, decay=o.b2, eps=o.eps)


def _sgd(o: OptSpec) -> optax.GradientTransformation:
    """SGD with momentum ``b1`` (0 = plain SGD, as in Goodfellow et al. 2014 with momentum)."""
    return optax.sgd(o.lr, momentum=o.b1 or None)


def build(o: OptSpec) -> optax.GradientTransformation:
    """The optimizer named by ``o.name``, after optional global-norm gradient clipping."""
    opt = OPTIMIZERS[o.name](o)
    if o.grad_clip:
        opt = optax.chain(optax.clip_by_global_norm(o.grad_clip), opt)
    return opt


OPTIMIZERS = {
    "adam": _adam,
    "rmsprop": _rmsprop,
    "sgd": _sgd,
}
