"""One run assembled once: its data, the task's checks of the data, the classes of a conditional
GAN, the networks and the step spec, and the numbers derived from them. Training
(``gaxp.training``), populations (``gaxp.population``), ``gaxp-eval``, ``gaxp-sample`` and the
Python API all build their run here, so they cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from gaxp import conditional, phases, sharding, tasks
from gaxp.config import Config, check_for_data
from gaxp.data import make_dataset
from gaxp.registry import ARCHS
from gaxp.state import make_nets
from gaxp.step import StepSpec


@dataclass
class Run:
    config: Config  # with model.num_classes from the data (conditional GANs)
    dir: Path | None
    restore: bool
    mesh: Any
    dataset: Any
    local_batch: int | None  # this process's batch (None where nothing is trained)
    spec: StepSpec
    is_main: bool
    shape: tuple  # what the arch is built for: the data shape, or (target, source) shapes
    image: bool
    phases: tuple = ()  # the task's and the arch's phases (gaxp.phases.of): one program each


def open_dataset(config: Config):
    """The run's data source as configured: this process's shard, shuffled with the run's seed
    (a population opens one per member with the member's config)."""
    d = config.data
    return make_dataset(d.source, d.name, split=d.split, image_size=d.image_size,
                        data_dir=d.data_dir, seed=config.trainer.seed,
                        process_index=jax.process_index(), process_count=jax.process_count(),
                        labeled=d.labeled)


def make_spec(config: Config, nets, mesh) -> StepSpec:
    """The static step spec of a validated config (with ``model.num_classes`` from the data):
    the one place it is assembled, for training, ``gaxp-eval``, ``gaxp-sample`` and the API."""
    return StepSpec(nets=nets, loss=config.loss, ema=config.trainer.ema, z_dim=config.model.z_dim,
                    batch=config.data.batch_size, z_sharding=sharding.batch_sharding(mesh),
                    inject_nan=config.trainer.guard.inject_nan, regs=config.regularizer,
                    precision=config.trainer.precision,
                    cond=conditional.cond_spec(config.model), task=config.task,
                    pixels=ARCHS[config.model.name].pixels)


def assemble(config: Config, mesh, *, directory: Path | None = None, restore: bool = False,
             local_batch: int | None = None) -> Run:
    """Open the data and check the config against it (the task's needs, the arch's and the
    stabilizers'), read the classes of a conditional GAN, build the networks and the step spec."""
    dataset = open_dataset(config)
    image = dataset.kind == "image"
    tasks.check_data(config, dataset)  # task=pix2pix/srgan/cyclegan: source/target pairs
    shape = tasks.model_shape(config, dataset)  # image-to-image archs: (target, source) shapes
    check_for_data(config, shape, image)
    config = conditional.with_classes(config, dataset)  # labels present, model.num_classes
    spec = make_spec(config, make_nets(config, shape, image), mesh)
    return Run(config, directory, restore, mesh, dataset, local_batch, spec,
               is_main=jax.process_index() == 0, shape=shape, image=image,
               phases=phases.of(config))
