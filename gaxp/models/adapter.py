"""The one place the core meets Flax NNX: split a module once, call it as a pure function.

``split`` turns a module into a static ``graphdef`` plus two pytrees of plain arrays: trainable
``params`` (``nnx.Param``) and non-trainable ``stats`` (``nnx.BatchStat``: BatchNorm running
moments, spectral-norm power-iteration vectors). ``apply`` merges them inside a traced function,
runs the module and returns its output and the updated stats. Plain arrays (``nnx.as_pure``) keep
mutation of batch statistics legal inside ``jax.grad`` and ``jax.vmap``.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

Params = Any
Stats = Any


def split(module: nnx.Module) -> tuple[nnx.GraphDef, Params, Stats]:
    """Split ``module`` into (graphdef, params, stats); every variable must be a Param or BatchStat."""
    graphdef, params, stats = nnx.split(module, nnx.Param, nnx.BatchStat)
    return graphdef, nnx.as_pure(params), nnx.as_pure(stats)


def apply(graphdef: nnx.GraphDef, params: Params, stats: Stats, *args, **kwargs) -> tuple[jax.Array, Stats]:
    """Run the module given by ``graphdef`` with ``params`` and ``stats``; returns (out, new stats)."""
    module = nnx.merge(graphdef, params, stats)
    out = module(*args, **kwargs)
    return out, nnx.as_pure(nnx.state(module, nnx.BatchStat))
