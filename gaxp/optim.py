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


# apply_if_finite would apply a non-finite update after this many in a row; gaxp never wants that
# (the loop rolls back or stops long before), so the bound is effectively infinite.
_NEVER = 2**30


def build(o: OptSpec, *, guard: bool = True) -> optax.GradientTransformation:
    """The optimizer named by ``o.name``, after optional global-norm gradient clipping. With
    ``guard``, updates whose gradients hold a NaN or Inf are skipped (optax ``apply_if_finite``;
    its state counts them) and the inner optimizer state is left untouched."""
    opt = OPTIMIZERS[o.name](o)
    if o.grad_clip:
        opt = optax.chain(optax.clip_by_global_norm(o.grad_clip), opt)
    if guard:
        opt = optax.apply_if_finite(opt, max_consecutive_errors=_NEVER)
    return opt


def guard_counts(opt_state) -> tuple | None:
    """(consecutive, total) skipped updates of an ``apply_if_finite`` state, else None."""
    if isinstance(opt_state, optax.ApplyIfFiniteState):
        return opt_state.notfinite_count, opt_state.total_notfinite
    return None


def last_finite(opt_state):
    """Whether the latest update was applied (True when unguarded)."""
    return opt_state.last_finite if isinstance(opt_state, optax.ApplyIfFiniteState) else True


OPTIMIZERS = {
    "adam": _adam,
    "rmsprop": _rmsprop,
    "sgd": _sgd,
}
