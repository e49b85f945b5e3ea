"""GANState: the whole training state as one pytree, and ``init_state`` to create it.

No random key is stored: the step derives ``fold_in(base_key, step)`` so resume is exact. The
static halves of the networks (NNX graphdefs) and the optax transformations live in ``Nets``,
which is hashable and passed to the step as a static argument."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from gaxp import optim, phases
from gaxp.specs import Config
from gaxp.models import ARCHS, adapter
from gaxp.registry import TASKS
from gaxp.regularizers import lazy_optimizer


@struct.dataclass
class GANState:
    step: jax.Array
    g_params: Any
    g_stats: Any
    d_params: Any
    d_stats: Any
    g_opt: Any
    d_opt: Any
    g_ema: Any  # EMA of g_params; sampled with g_stats
    lr_scale: jax.Array  # multiplies both networks' updates (lowered by divergence rollbacks)
    rollbacks: jax.Array  # divergence rollbacks so far; folded into the step's random key
    task_state: Any = None  # the task's own state, as its entry declares it (register.task(state=)); None: none


@dataclass(frozen=True)
class Nets:
    g_def: nnx.GraphDef
    d_def: nnx.GraphDef
    g_opt: optax.GradientTransformation
    d_opt: optax.GradientTransformation


def _modules(config: Config, shape: tuple, image: bool, key: jax.Array):
    return ARCHS[config.model.name].build(config.model, tuple(shape), image, nnx.Rngs(params=key))


def make_nets(config: Config, shape: tuple, image: bool) -> Nets:
    """Graphdefs from an abstract build (no parameters are allocated) and both optimizers (D's
    rescaled for lazy penalties, see ``regularizers.lazy_optimizer``)."""
    g, d = nnx.eval_shape(lambda: _modules(config, shape, image, jax.random.key(0)))
    d_opt = lazy_optimizer(config.optim.d, config.regularizer.lazy_interval)
    guard = config.trainer.guard.enabled
    return Nets(adapter.split(g)[0], adapter.split(d)[0],
                optim.build(config.optim.g, guard=guard, updates=phases.updates(config, "g")),
                optim.build(d_opt, guard=guard, updates=phases.updates(config, "d")))


def _task_state(config: Config, shape: tuple):
    hook = TASKS.entry(config.task.name).state
    return None if hook is None else hook(config, shape)


def init_state(config: Config, nets: Nets, shape: tuple, image: bool, key: jax.Array) -> GANState:
    """Fresh state from ``key``; pure, so it works under ``jax.jit`` and ``jax.eval_shape``."""
    g, d = _modules(config, shape, image, key)
    _, g_params, g_stats = adapter.split(g)
    _, d_params, d_stats = adapter.split(d)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params, g_stats=g_stats, d_params=d_params, d_stats=d_stats,
        g_opt=nets.g_opt.init(g_params), d_opt=nets.d_opt.init(d_params),
        g_ema=jax.tree.map(jnp.copy, g_params),
        lr_scale=jnp.ones((), jnp.float32), rollbacks=jnp.zeros((), jnp.int32),
        task_state=_task_state(config, shape),
    )
