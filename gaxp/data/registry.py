"""`make_dataset(source, name, ...)`: the one entry point from configs to data pipelines.

Every dataset it returns has `kind` ("image" or "points"), `shape` (per example), `num_classes`
(int or None), `num_examples`, `iterator(batch_size)` and `examples(n, split=None)`; point datasets
also have `modes` [K, 2] and `sigma`.

`iterator(batch_size)` takes the per-process batch size and returns an infinite grain
`DatasetIterator` of `dict(x=..., y=...)` (`y` only when labeled). Its state is JSON and resumes
exactly. Save and restore it beside the train state with Orbax:

    import grain, orbax.checkpoint as ocp
    it = ds.iterator(batch_size)
    mngr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=3))
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    # later, in a fresh process: build `it` the same way, then
    restored = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(it)))
    # `it` (also `restored.data`) now yields the batch that followed the save

`state` holds jax.Arrays (StandardSave rejects NumPy scalars). The saved position counts the
batches taken with `next`: save right after the step that consumed the last one taken, and resume
with the same batch size, seed and process layout. grain writes one `process_<i>-of-<n>.json` per
process (from `jax.process_index()`), so each process restores its own shard position.
"""

from __future__ import annotations

from gaxp.data import images, paired, toy2d
from gaxp.errors import ConfigError
from gaxp.registry import SOURCES, register

Dataset = images.ImageDataset | toy2d.PointDataset


def make_dataset(source: str, name: str, *, split: str = "train", image_size: int | None = None,
                 data_dir: str | None = None, seed: int = 0, process_index: int = 0,
                 process_count: int = 1, labeled: bool = False) -> Dataset:
    """Build dataset `name` of `source` (a key of SOURCES); this process reads its own shard.
    `labeled`: toy 2D points carry their mode index as label (image sets carry their labels
    whenever the data have them)."""
    entry = SOURCES.entry(source)
    if not 0 <= seed < 2**32:
        raise ConfigError(f"data seed must be in [0, 2**32), got {seed}")
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ConfigError(f"need 0 <= process_index < process_count, got {process_index} "
                          f"and {process_count}")
    extra = {"labeled": True} if labeled and entry.labeled else {}
    return entry.build(name, split=split, image_size=image_size, data_dir=data_dir, seed=seed,
                           process_index=process_index, process_count=process_count, **extra)


# The built-in sources register exactly as a plugin's do (gaxp.register.source).
register.source("toy2d", labeled=True)(toy2d.build)
register.source("mnist")(images.build_mnist)
register.source("fashion_mnist")(images.build_fashion_mnist)  # IDX files or TFDS (gaxp.data.idx)
register.source("tfds")(images.build_tfds)
register.source("mnist_pairs")(paired.build_mnist_pairs)  # image-to-image pairs (gaxp.tasks)
register.source("folder")(paired.build_folder)
register.source("tfds_domains")(paired.build_tfds_domains)  # cycle_gan/* trainA/trainB as domains
