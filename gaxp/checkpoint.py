"""Orbax checkpoints of everything a run needs to continue exactly.

Each checkpoint step holds three items: ``state`` (the GANState pytree, restored straight into its
sharded layout from an abstract target), ``data`` (the grain iterator position, one file per
process) and ``meta`` (JSON: W&B run id, wall time so far, the config key). Saves are
asynchronous; keep-N is Orbax's ``max_to_keep``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


def abstract_like(state: Any, sharding) -> Any:
    """ShapeDtypeStructs with ``sharding`` for every leaf of an abstract (eval_shape) state."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


class Checkpointer:
    def __init__(self, directory: Path, keep: int, *, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        )
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(), options=options, item_names=("state", "data", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: Any, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iter),
            meta=ocp.args.JsonSave(meta),
        ), force=True)

    def restore(self, step: int, abstract_state: Any, data_iter: Any) -> tuple[Any, dict]:
        """Restore ``step`` into the layout of ``abstract_state``; moves ``data_iter`` in place."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(data_iter),
            meta=ocp.args.JsonRestore(),
        ))
        return out.state, dict(out.meta)

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """Only the train state of ``step`` (for evaluation and sampling; no data iterator)."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        return out.state

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
