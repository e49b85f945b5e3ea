"""Mesh and shardings: one ``data`` axis over every device of every process. State is
replicated, batches are sharded on their batch axis; host-local batches become global arrays with
``jax.make_array_from_process_local_data`` (no pmap, no device_put_sharded)."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from gaxp.errors import ConfigError


def make_mesh(devices: int | None = None) -> Mesh:
    """A 1-D ``data`` mesh over all devices, or over the first ``devices`` (single process)."""
    all_devices = jax.devices()
    if devices is not None:
        if jax.process_count() > 1 and devices != len(all_devices):
            raise ConfigError("trainer.devices must be null (all devices) in a multi-process run")
        if devices > len(all_devices):
            raise ConfigError(
                f"trainer.devices={devices} but only {len(all_devices)} devices are visible; "
                "set trainer.devices=null to use all"
            )
        all_devices = all_devices[:devices]
    return Mesh(np.array(all_devices), ("data",), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Shard axis ``batch_axis`` over ``data``; the axes before it are replicated."""
    return NamedSharding(mesh, P(*([None] * batch_axis), "data"))


def check_batch(global_batch: int, mesh: Mesh) -> int:
    """Per-process batch for a global batch; a clear error when the devices cannot share it
    evenly (a per-device batch of zero, or a remainder)."""
    n = mesh.devices.size
    if global_batch < n:
        raise ConfigError(
            f"data.batch_size={global_batch} over {n} devices is a per-device batch of 0; use "
            f"data.batch_size >= {n} (a multiple of {n}) or fewer devices (trainer.devices)"
        )
    if global_batch % n:
        raise ConfigError(
            f"data.batch_size={global_batch} is not divisible by the {n} devices (a per-device "
            f"batch of {global_batch / n:.3g}); use a multiple of {n} (e.g. {n * (global_batch // n)})"
        )
    return global_batch // jax.process_count()


def to_global(local: dict, sharding: NamedSharding, global_batch: int, batch_axis: int) -> dict:
    """Assemble each process's rows into one global array sharded over the mesh."""
    out = {}
    for k, v in local.items():
        shape = list(v.shape)
        shape[batch_axis] = global_batch
        out[k] = jax.make_array_from_process_local_data(sharding, v, tuple(shape))
    return out


def feed(local: dict, sharding: NamedSharding, global_batch: int, batch_axis: int) -> dict:
    """``local`` as an argument of a step compiled for ``to_global``'s arrays: in a single
    process the host arrays themselves, which the compiled step's own input sharding places on
    the mesh (jax's C++ dispatch: about 2-3x less host time than building the global arrays in
    Python, which matters when host work shares the cores with the step, see docs/speed.md);
    across processes the global arrays, which no single process can build from its rows alone."""
    if jax.process_count() > 1:
        return to_global(local, sharding, global_batch, batch_axis)
    return local
