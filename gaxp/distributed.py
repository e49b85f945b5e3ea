"""Multi-process runs: start ``jax.distributed`` before JAX touches a device, and agree on things
that only process 0 may decide (the run directory).

``trainer.distributed``:

* ``auto`` (default): initialize when a cluster is detected, else run as one process. Detected:
  SLURM with more than one task (``SLURM_NTASKS``/``SLURM_STEP_NUM_TASKS``; JAX reads the
  coordinator, process count and id from SLURM itself), a multi-host Cloud TPU slice
  (``TPU_WORKER_HOSTNAMES`` lists more than one host, or ``MEGASCALE_COORDINATOR_ADDRESS``), or an
  explicit environment: ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID``.
* ``manual``: ``trainer.coordinator`` (host:port of process 0), ``trainer.num_processes`` and
  ``trainer.process_id`` from the config.
* ``off``: never.

On CPU the processes exchange collectives through gloo. A coordinator that cannot be reached
within ``trainer.init_timeout`` seconds is a one-line ``ConfigError``, not a hang.
"""

from __future__ import annotations

import os
import socket
import time

import jax
import numpy as np

from gaxp.errors import ConfigError

_BUFFER = 4096  # bytes of a message broadcast from process 0


def _int_env(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return None


def detect() -> tuple[str, dict] | None:
    """(cluster name, initialize() arguments) of a multi-process environment, or None."""
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        n, i = _int_env("JAX_NUM_PROCESSES"), _int_env("JAX_PROCESS_ID")
        if n is None or i is None:
            raise ConfigError("JAX_COORDINATOR_ADDRESS is set but JAX_NUM_PROCESSES and "
                              "JAX_PROCESS_ID are not; set all three, or trainer.distributed=off")
        return "JAX_COORDINATOR_ADDRESS", {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
                               "num_processes": n, "process_id": i}
    tasks = _int_env("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
    if env.get("SLURM_JOB_ID") and tasks is not None and tasks > 1:
        return "SLURM", {}
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "Cloud TPU", {}
    return None


def initialize(trainer) -> bool:
    """Start ``jax.distributed`` as ``trainer`` (a TrainerSpec) says; True when it runs.

    Idempotent: a second call (e.g. the next job of an in-process sweep) does nothing."""
    if trainer.distributed == "off" or jax.distributed.is_initialized():
        return jax.distributed.is_initialized()
    if trainer.distributed == "manual":
        where = "trainer.distributed=manual"
        kwargs = {"coordinator_address": trainer.coordinator,
                  "num_processes": trainer.num_processes, "process_id": trainer.process_id}
    else:
        found = detect()
        if found is None:
            return False
        where, kwargs = found
    from jax._src import xla_bridge  # the public API has no "is the backend up" query

    if xla_bridge.backends_are_initialized():
        raise ConfigError("jax.distributed must start before JAX uses a device; call "
                          "gaxp.training.train(cfg) (or gaxp.distributed.initialize) first")
    if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):  # e.g. mpi, set by the user
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeout = max(1, int(round(trainer.init_timeout)))
    if kwargs.get("process_id"):
        start = time.monotonic()
        _wait_for_coordinator(kwargs["coordinator_address"], timeout, where)
        timeout = max(1, timeout - int(time.monotonic() - start))
    try:
        jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
    except Exception as e:  # noqa: BLE001 - XLA raises its own runtime error types
        address = kwargs.get("coordinator_address") or "the detected coordinator"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(f"could not join the {where} run through {address} within {timeout} s "
                          f"(trainer.init_timeout): {first}; check that every process started "
                          "and can reach process 0") from None
    return True


def _wait_for_coordinator(address: str, timeout: float, where: str) -> None:
    """Wait until process 0's coordinator accepts connections. XLA aborts the whole process
    (no Python exception) when it cannot reach the coordinator in time; this check turns the
    common case, a coordinator that is not there, into a one-line error first."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ConfigError(f"cannot reach the coordinator at {address} ({where}) within "
                                  f"{timeout:g} s (trainer.init_timeout): {e.strerror or e}; start "
                                  "process 0 first, or check trainer.coordinator") from None
            time.sleep(0.2)


def broadcast_text(text: str | None) -> str:
    """Process 0's ``text`` on every process (others pass anything)."""
    if jax.process_count() == 1:
        return text or ""
    from jax.experimental import multihost_utils

    data = (text or "").encode()
    if len(data) > _BUFFER - 4:
        raise ValueError(f"message of {len(data)} bytes is too long to broadcast")
    buf = np.zeros(_BUFFER, np.uint8)
    buf[:4] = np.frombuffer(np.uint32(len(data)).tobytes(), np.uint8)
    buf[4:4 + len(data)] = np.frombuffer(data, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    size = int(np.frombuffer(out[:4].tobytes(), np.uint32)[0])
    return out[4:4 + size].tobytes().decode()


def all_ok(ok: bool) -> bool:
    """True when ``ok`` holds on every process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
