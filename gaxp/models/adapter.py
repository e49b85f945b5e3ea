"""The one place the core meets Flax NNX: split a module once, call it as a pure function.

``split`` turns a module into a static ``graphdef`` plus two pytrees of plain arrays: trainable
``params`` (``nnx.Param``) and non-trainable ``stats`` (``nnx.BatchStat``: BatchNorm running
moments, spectral-norm power-iteration vectors). ``apply`` merges them inside a traced function,
runs the module and returns its output and the updated stats. Plain arrays (``nnx.as_pure``) keep
mutation of batch statistics legal inside ``jax.grad`` and ``jax.vmap``.

Mixed precision lives here too: with ``compute_dtype`` (e.g. bfloat16) ``apply`` casts the float
parameters and inputs to it, so every matmul, conv and activation runs in that type, and casts the
output back to float32. The stored parameters (hence gradients and optimizer states) and the
statistics (BatchNorm moments, spectral-norm vectors) stay float32: gradients flow through the
casts, BatchNorm reduces in float32, and losses see float32 outputs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Params = Any
Stats = Any


def split(module: nnx.Module) -> tuple[nnx.GraphDef, Params, Stats]:
    """Split ``module`` into (graphdef, params, stats); every variable must be a Param or BatchStat."""
    graphdef, params, stats = nnx.split(module, nnx.Param, nnx.BatchStat)
    return graphdef, nnx.as_pure(params), nnx.as_pure(stats)


PRECISIONS = {"fp32": None, "bf16": jnp.bfloat16}  # trainer.precision -> compute dtype


def cast_floats(tree: Any, dtype) -> Any:
    """Every floating-point array of ``tree`` as ``dtype``; other leaves unchanged."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, tree)


def apply(graphdef: nnx.GraphDef, params: Params, stats: Stats, *args, compute_dtype=None,
          **kwargs) -> tuple[jax.Array, Stats]:
    """Run the module given by ``graphdef`` with ``params`` and ``stats``; returns (out, new stats).
    With ``compute_dtype`` the module computes in that type and returns a float32 output."""
    if compute_dtype is not None:
        params, args = cast_floats(params, compute_dtype), cast_floats(args, compute_dtype)
    module = nnx.merge(graphdef, params, stats)
    out = module(*args, **kwargs)
    if compute_dtype is not None:
        out = cast_floats(out, jnp.float32)
    return out, nnx.as_pure(nnx.state(module, nnx.BatchStat))
