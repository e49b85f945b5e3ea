"""Orbax checkpoints of everything a run needs to continue exactly, and never a bad one.

Each checkpoint step holds three items: ``state`` (the GANState pytree, restored straight into its
sharded layout from an abstract target), ``data`` (the grain iterator position, one file per
process) and ``meta`` (JSON: W&B run id, wall time so far, the config key, and an integrity
record). Saves are asynchronous and atomic (Orbax writes a temporary directory and renames it when
complete); keep-N is Orbax's ``max_to_keep``.

Integrity: before a save, one jitted pass over the state checks that every value is finite (a
non-finite state is never written) and computes two 32-bit sums per leaf of its raw bits (a plain
and a position-weighted one, so any flipped bit or zeroed block changes them). Restore recomputes
them; a checkpoint that fails to read or does not match is reported, moved aside to
``checkpoints-damaged/`` (nothing is deleted) and the previous one is tried. Orbax has no content
check of its own, hence this one. A checkpoint that reads but holds arrays of other names or shapes
than the run's config builds is a config error, not damage: it is reported and left in place.

A save that cannot be written (disk full, quota, read-only file system) surfaces when Orbax's
asynchronous write is waited for (the next save, ``wait`` or ``close``): its temporary directory
is removed, the earlier checkpoints are untouched, and ``WriteFailed`` names the file and the
cause. With ``on_write_error="warn"`` a failed periodic save is one warning and the next save
tries again; the last save of a run (``close``) must succeed either way. Orbax's own tracebacks
of such a failure (logged from its threads), and Python's warnings about the writes it abandoned
(once a save has failed), are left out: gaxp reports it once, in one line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from gaxp import distributed
from gaxp.errors import ConfigError, WriteFailed
from gaxp.files import cause, failed_file, is_write_error

log = logging.getLogger("gaxp")


def abstract_like(state: Any, sharding) -> Any:
    """ShapeDtypeStructs with ``sharding`` for every leaf of an abstract (eval_shape) state."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


# State fields saved under another name: a task's own state is saved as "pool", the name it had
# when CycleGAN's image pool was the only one, so those checkpoints still restore.
_SAVED_AS = {"task_state": "pool"}


def _written(state: Any) -> Any:
    """What Orbax writes for ``state``: a dataclass state (``GANState``) as a dict of its fields,
    leaving out those that are None (optional parts such as CycleGAN's image pool). A run without
    such a part keeps the checkpoint layout it had before the field existed, so checkpoints of
    earlier versions still restore."""
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        values = {_SAVED_AS.get(f.name, f.name): getattr(state, f.name) for f in dataclasses.fields(state)}
        return {k: v for k, v in values.items() if v is not None}
    return state


def _read(tree: Any, abstract: Any) -> Any:
    """The inverse of ``_written``: the restored dict back into ``abstract``'s dataclass."""
    if dataclasses.is_dataclass(abstract) and not isinstance(abstract, type):
        fields = {v: k for k, v in _SAVED_AS.items()}
        return dataclasses.replace(abstract, **{fields.get(k, k): v for k, v in tree.items()})
    return tree


def _bits(x: jax.Array) -> jax.Array:
    """The raw bits of ``x`` as a flat uint32 vector (dtype-preserving for 8/16/32/64-bit types)."""
    x = jnp.ravel(x)
    if x.dtype == jnp.bool_ or x.dtype.itemsize == 1:
        return x.astype(jnp.uint32)
    if x.dtype.itemsize == 2:
        return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    return jnp.ravel(jax.lax.bitcast_convert_type(x, jnp.uint32))


@jax.jit
def _integrity(state) -> tuple[jax.Array, jax.Array]:
    leaves = jax.tree.leaves(state)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves
                                if jnp.issubdtype(x.dtype, jnp.inexact)]))
    sums = []
    for x in leaves:
        b = _bits(x)
        weights = jnp.arange(1, b.size + 1, dtype=jnp.uint32)
        sums.append(jnp.stack([jnp.sum(b, dtype=jnp.uint32), jnp.sum(b * weights, dtype=jnp.uint32)]))
    return finite, jnp.stack(sums)


def integrity(state: Any) -> tuple[bool, str]:
    """(every float value finite, hex checksum of the state's bits), computed on device."""
    finite, sums = jax.device_get(_integrity(state))
    return bool(finite), np.asarray(sums, np.uint32).tobytes().hex()


class _NoWriteErrorTracebacks(logging.Filter):
    """Drops the ERROR records of a failed write that Orbax (through absl, from several threads)
    and asyncio ("exception was never retrieved", for each of the other writes of that save)
    log with tracebacks: gaxp reports the failure itself, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or (record.name == "absl" and "orbax" not in record.pathname):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not is_write_error(exc or Exception(record.getMessage()))


def _quiet_unraisable(previous):
    """When a save fails, TensorStore's other writes of that save finish after Orbax has closed
    the event loop that awaited them; each then reports ``RuntimeError: Event loop is closed``
    (raised in ``call_soon_threadsafe``) through ``sys.unraisablehook``: tens of tracebacks for
    one failure that gaxp reports itself. Those are dropped; anything else goes to ``previous``."""

    def hook(args):
        last = traceback.extract_tb(args.exc_traceback)[-1:] if args.exc_traceback else []
        if args.exc_type is RuntimeError and str(args.exc_value) == "Event loop is closed" \
                and last and last[0].name == "_check_closed":
            return
        previous(args)

    hook.gaxp = True
    return hook


_QUIET = _NoWriteErrorTracebacks()


def _quiet_abandoned_writes() -> None:
    """After a failed save, the writes of that save that had not started yet are dropped with
    Orbax's closed event loop; Python then warns, when they are collected (often at exit, as
    ``sys:1: RuntimeWarning: coroutine '...write_fragment' was never awaited``), once for each.
    gaxp has reported the failure itself, so those warnings are left out from then on."""
    warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited",
                            category=RuntimeWarning)


def _quiet_write_errors() -> None:
    for name in ("absl", "asyncio"):  # Orbax logs through absl
        logging.getLogger(name).addFilter(_QUIET)
    if not getattr(sys.unraisablehook, "gaxp", False):
        sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)


class Checkpointer:
    def __init__(self, directory: Path, keep: int, *, async_save: bool = True,
                 on_write_error: str = "stop"):
        self.directory = Path(directory).absolute()
        self.on_write_error = on_write_error
        self.pending: int | None = None  # the step whose asynchronous save is in flight
        self.failed: WriteFailed | None = None  # the latest save's failure (warn mode)
        _quiet_write_errors()
        self.options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # a save cut off by a crash leaves only a tmp dir
        )
        self.manager = self._manager()

    def _manager(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(self.directory, options=self.options,
                                     item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: Any, meta: dict) -> bool:
        """Start an async save of ``step``; returns False (writing nothing) if the state holds a
        non-finite value. The blocking part is the integrity pass and Orbax's device-to-host copy.
        A previous save that failed to write raises ``WriteFailed`` here (or warns, see above)."""
        finite, checksum = integrity(state)
        if not finite:
            log.warning("gaxp: step %d: the state holds NaN/Inf; no checkpoint written", step)
            return False
        self._settle(final=False)
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(_written(state)),
                data=grain.checkpoint.CheckpointSave(data_iter),
                meta=ocp.args.JsonSave(meta | {"integrity": checksum}),
            ), force=True)
        except Exception as e:  # noqa: BLE001 - a write error is reported, anything else re-raised
            self._failed(step, e, final=False)
            return True
        self.pending = step
        return True

    def _settle(self, final: bool) -> None:
        """Wait for the save in flight; a failed one is reported (``_failed``)."""
        step, self.pending = self.pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            self._failed(step, e, final)
            return
        if step is not None:
            self.failed = None
        if final and self.failed is not None:  # the last save of the run did not happen
            err, self.failed = self.failed, None
            raise err

    def _failed(self, step: int | None, e: Exception, final: bool) -> None:
        """A save that failed: remove what it left, then raise ``WriteFailed`` (or warn)."""
        if not is_write_error(e):
            raise e
        _quiet_abandoned_writes()
        if step is not None and jax.process_index() == 0:
            for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)
        self.manager.reload()  # forget the step Orbax had already listed
        err = WriteFailed(self._failed_path(step, e), cause(e),
                          f"checkpoint {step}" if step is not None else "a checkpoint")
        if self.on_write_error != "warn" or final:
            raise err from None
        self.failed = err
        # Orbax keeps the failed future of the save's metadata and raises it again at every
        # later wait: the next save starts from a fresh manager
        old, self.manager = self.manager, self._manager()
        try:
            old.close()
        except Exception as again:  # noqa: BLE001
            if not is_write_error(again):
                raise
        log.warning("gaxp: %s; training goes on and the next checkpoint tries again "
                    "(trainer.on_write_error=warn)", err)

    def _failed_path(self, step: int | None, e: Exception) -> str:
        """The path a failed save names: the checkpoint's own directory when the file that failed
        lay inside it (its temporary directory is gone by now, and which of its files hit the
        error first is chance), else the file that failed (a directory beside it, say)."""
        own = self.directory / str(step) if step is not None else self.directory
        found = Path(failed_file(e, own))
        if step is not None and found.is_relative_to(self.directory):
            first = found.relative_to(self.directory).parts[:1]  # "30" or "30.orbax-checkpoint-tmp-..."
            if first and first[0].split(".")[0] == str(step):
                return str(own)
        return str(found)

    def restore(self, step: int, abstract_state: Any, data_iter: Any) -> tuple[Any, dict]:
        """Restore ``step`` into the layout of ``abstract_state``; moves ``data_iter`` in place.
        Raises ``DamagedCheckpoint`` when the restored bits do not match those saved, and
        ConfigError when the checkpoint holds other networks than ``abstract_state``."""
        self._check_matches(step, abstract_state)
        items = {"state": ocp.args.StandardRestore(_written(abstract_state)),
                 "meta": ocp.args.JsonRestore()}
        if not self._other_layout(step, data_iter):
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        meta, state = dict(out.meta), _read(out.state, abstract_state)
        finite, checksum = integrity(state)
        if not finite or meta.get("integrity") != checksum:
            raise DamagedCheckpoint("its contents do not match the checksum saved with it")
        return state, meta

    def restore_latest_good(self, abstract_state: Any, data_iter: Any) -> tuple[Any, dict]:
        """The newest checkpoint that reads back intact; damaged ones are reported and moved to
        ``checkpoints-damaged/``. Raises ConfigError when none is left."""
        self.wait()
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return self.restore(step, abstract_state, data_iter)
            except ConfigError:
                raise  # other networks than the config builds: the config's fault, not damage
            except Exception as e:  # noqa: BLE001 - any read failure means this one is unusable
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                where = self._move_aside(step)
                log.warning("gaxp: checkpoint %d is damaged (%s); moved to %s, trying the "
                            "previous one", step, reason[:200], where)
        raise ConfigError(f"no intact checkpoint left in {self.directory} (damaged ones are in "
                          f"{self.directory.parent / 'checkpoints-damaged'}); start a new run")

    def _check_matches(self, step: int, abstract_state: Any) -> None:
        """Raise ConfigError when checkpoint ``step`` is intact but holds a state of another shape
        (the run is resumed with a config that builds other networks): that is the user's config,
        not damage, so nothing is moved aside. A step whose metadata cannot be read is left to
        the restore, which reports it as damaged."""
        try:
            saved = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
            saved = ocp.tree.to_flat_dict(getattr(saved, "tree", saved))
        except Exception:  # noqa: BLE001 - unreadable metadata: the restore reports the damage
            return
        wanted = ocp.tree.to_flat_dict(ocp.tree.serialize_tree(_written(abstract_state),
                                                               keep_empty_nodes=True))
        shape = lambda x: tuple(getattr(x, "shape", ()) or ())  # noqa: E731
        problems = [f"{'/'.join(k)} is missing from the checkpoint" for k in wanted if k not in saved]
        problems += [f"{'/'.join(k)} is in the checkpoint but not in this config's state"
                     for k in saved if k not in wanted]
        problems += [f"{'/'.join(k)} has shape {shape(saved[k])} there, {shape(v)} here"
                     for k, v in wanted.items() if k in saved and shape(saved[k]) != shape(v)]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ConfigError(
                f"checkpoint {step} in {self.directory} was written for other networks: "
                f"{problems[0]}{more}; resume with the config the run was started with (its "
                f"run.json) or start a new run")

    def _other_layout(self, step: int, data_iter: Any) -> bool:
        """True when ``step`` was saved by a different number of processes: then the data
        position (batches taken, the same on every process) is carried over from process 0's
        file, and this layout's data stream continues from there."""
        data = self.directory / str(step) / "data"
        mine = data / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if mine.exists() or not data.is_dir():
            return False
        saved = [p for p in data.glob("process_0-of-*.json")
                 if p.stem.rpartition("-of-")[2] != str(jax.process_count())]
        if not saved:
            return False  # same layout, file missing: the normal restore reports it
        data_iter.set_state(json.loads(saved[0].read_text()))
        if hasattr(data_iter, "start_prefetch"):
            data_iter.start_prefetch()
        log.warning("gaxp: checkpoint %d was written by %s processes, this run has %d; the data "
                    "position carries over, the batches come from this layout's stream", step,
                    saved[0].stem.rpartition("-of-")[2], jax.process_count())
        return True

    def _move_aside(self, step: int) -> Path:
        target = self.directory.parent / "checkpoints-damaged" / f"{step}-{int(time.time())}"
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), str(target))
        distributed.barrier(f"gaxp-move-aside-{step}")  # moved before any process reloads
        self.manager.reload()
        return target

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """Only the train state of ``step`` (for evaluation and sampling; no data iterator)."""
        self._check_matches(step, abstract_state)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_written(abstract_state))))
        return _read(out.state, abstract_state)

    def wait(self) -> None:
        self._settle(final=False)

    def close(self) -> None:
        """Wait for the last save, which must have been written (``WriteFailed`` if not)."""
        try:
            self._settle(final=True)
        finally:
            try:
                self.manager.close()
            except Exception as e:  # noqa: BLE001 - a failure already reported by _settle
                if not is_write_error(e):
                    raise


class DamagedCheckpoint(Exception):
    pass
