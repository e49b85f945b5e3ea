"""What a run trains: ``task=gan`` (noise -> image, ``gaxp.step.train_step``) or an image-to-image
task whose step lives in ``gaxp.tasks.steps``.

Every task goes through the same loop, configs, checkpoints, guard, logging and metrics; a task
adds only its train step, the batch keys it reads (``x`` = target, ``c`` = source image), the
model shape it builds (``(target_shape, source_shape)`` for the image-to-image archs), its sample
grid and its evaluator (``gaxp.tasks.evaluate``). ``TASKS`` is the registry; ``task=<name>``
selects an entry.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from gaxp.errors import ConfigError
from gaxp.registry import TASKS, register
from gaxp.specs import Phase
from gaxp.tasks import pool, steps
from gaxp.tasks.evaluate import Grid, TranslationEvaluator


def _perceptual(config) -> dict:
    """SRGAN's feature network as a constant of its step (``task.perceptual``)."""
    if config.task.perceptual is None:
        return {}
    return {"features": steps.load_features(config.task.perceptual)}


def _srgan_phases(config) -> tuple:
    """SRGAN's phases: G alone on pixel MSE for ``task.pretrain_steps``, then adversarial."""
    n = config.task.pretrain_steps
    return (Phase("pretrain", 0, "g"), Phase("adversarial", n)) if n else ()


def _cyclegan_state(config, shape) -> dict | None:
    """CycleGAN's empty history pool (``gaxp.tasks.pool``; None for pool_size 0)."""
    target, source = shape
    return pool.init(config.task.pool_size, source, target)


def _evaluator(config, dataset, mesh, spec):
    return TranslationEvaluator(config, dataset, mesh, spec)


# The image-to-image tasks register exactly as a plugin's do; task=gan registers in gaxp.step.
_I2I = dict(grid=Grid, evaluator=_evaluator)
register.task("pix2pix", archs=("pix2pix",), **_I2I)(steps.pix2pix_step)
register.task("srgan", archs=("srgan",), extras=_perceptual, phases=_srgan_phases,
              **_I2I)(steps.srgan_step)
register.task("cyclegan", archs=("cyclegan",), needs_paired=False, state=_cyclegan_state,
              **_I2I)(steps.cyclegan_step)

ALLOWED_REGULARIZERS = ("spectral_norm",)  # what the image-to-image steps support


def is_translation(config) -> bool:
    """An image-to-image task: its batches carry source images (``c``)."""
    return "c" in TASKS.entry(config.task.name).batch_keys


def check_config(config, regularizer_node) -> None:
    """Task settings that need no data (called by ``gaxp.config.load``)."""
    t = config.task
    TASKS.entry(t.name)
    _check_phases(config)
    if not is_translation(config):
        return
    if config.trainer.population > 1:
        raise ConfigError(f"task={t.name} trains one model per run; populations "
                          "(trainer.population > 1) are for task=gan, whose step is the one "
                          "vmapped over members; compare its seeds as a sweep "
                          "instead (gaxp-train -m ... trainer.seed=0,1,2)")
    if config.loss.n_critic != 1 or config.loss.clip or config.loss.penalty:
        raise ConfigError(f"task={t.name} makes one D and one G update per step without weight "
                          "clipping or loss.penalty; set loss.n_critic=1 and drop loss.clip/penalty")
    extra = sorted(set(regularizer_node or {}) - set(ALLOWED_REGULARIZERS))
    if extra:
        raise ConfigError(f"task={t.name} supports regularizer={','.join(ALLOWED_REGULARIZERS)} "
                          f"only (got {extra[0]})")
    for key in ("l1_weight", "adv_weight", "pixel_weight", "perceptual_weight", "cycle_weight",
                "identity_weight"):
        if getattr(t, key) < 0:
            raise ConfigError(f"task.{key} must be >= 0 (got {getattr(t, key)})")
    if t.perceptual is not None:
        if t.name != "srgan":
            raise ConfigError(f"task.perceptual is SRGAN's feature loss; task={t.name} has none")
        if not (Path(t.perceptual).expanduser() / "meta.json").exists():
            raise ConfigError(f"task.perceptual={t.perceptual}: no feature network there (a "
                              "classifier directory with meta.json, made by "
                              "scripts/train_classifier.py)")
    names = config.metrics.names
    if names and names != ("auto",):
        raise ConfigError(f"task={t.name} computes its own metrics (L1, PSNR, SSIM, Frechet "
                          "distance); use metrics=default (metrics.names=[auto]) or metrics=none")


def _check_phases(config) -> None:
    """The history pool and SRGAN's pre-training fit the task and the run."""
    t, steps = config.task, config.trainer.steps
    for key in ("pool_size", "pretrain_steps"):
        if getattr(t, key) < 0:
            raise ConfigError(f"task.{key} must be >= 0 (got {getattr(t, key)})")
    if t.pool_size and t.name != "cyclegan":
        raise ConfigError(f"task.pool_size is CycleGAN's history of generated images; "
                          f"task={t.name} has none (set task.pool_size=0)")
    if t.pretrain_steps and t.name != "srgan":
        raise ConfigError(f"task.pretrain_steps is SRGAN's MSE pre-training of G; task={t.name} "
                          "has none (set task.pretrain_steps=0)")
    if t.pretrain_steps >= steps:
        raise ConfigError(f"task.pretrain_steps={t.pretrain_steps} leaves no adversarial training "
                          f"in trainer.steps={steps}; make it smaller than trainer.steps")


_EXPERIMENTS = {"pix2pix": "pix2pix_mnist_edges", "srgan": "srgan_mnist",
                "cyclegan": "cyclegan_mnist"}


def check_data(config, dataset) -> None:
    """The task's needs of the data (paired source/target images), before anything is built."""
    t, m = config.task, config.model.name
    task = TASKS[t.name]
    if not task.archs:  # noise -> sample: any arch that no other task claims
        owner = next((n for n, e in TASKS.items() if m in e.archs), None)
        if owner is not None:
            hint = f", e.g. experiment={_EXPERIMENTS[owner]}" if owner in _EXPERIMENTS else ""
            raise ConfigError(f"model={m} is an image-to-image model; add task={owner} (and its "
                              f"data{hint})")
        return
    if m not in task.archs:
        raise ConfigError(f"task={t.name} trains model={'/'.join(task.archs)}, not model={m}; "
                          f"add model={task.archs[0]}" + (f" (or use experiment={_EXPERIMENTS[t.name]})"
                                                        if t.name in _EXPERIMENTS else ""))
    if getattr(dataset, "source_shape", None) is None or dataset.kind != "image":
        raise ConfigError(f"task={t.name} needs source/target images; data={config.data.source} "
                          "has none: use data=mnist_edges, mnist_sr, mnist_unpaired or "
                          "paired_folder")
    if TASKS[t.name].needs_paired and not dataset.paired:
        raise ConfigError(f"task={t.name} needs paired images, but {dataset.name} is unpaired; "
                          "use paired data (data.name=edges, lowres4, thick, ...; for "
                          "paired_folder, data.name=paired) or task=cyclegan")
    if t.name == "cyclegan" and t.identity_weight and t.cycle_weight \
            and dataset.shape[-1] != dataset.source_shape[-1]:
        raise ConfigError(f"task.identity_weight needs domains with the same channels (A has "
                          f"{dataset.source_shape[-1]}, B {dataset.shape[-1]}); set "
                          "task.identity_weight=0")


def model_shape(config, dataset) -> tuple:
    """What the arch is built for: the data shape, or (target_shape, source_shape)."""
    if not is_translation(config):
        return tuple(dataset.shape)
    return (tuple(dataset.shape), tuple(dataset.source_shape))


def batch_keys(config) -> tuple:
    return TASKS[config.task.name].batch_keys


def step_fn(config, spec) -> Callable:
    """The task's train step with its static spec (and extra constants) bound."""
    task = TASKS.entry(config.task.name)
    extras = task.extras(config) if task.extras is not None else {}
    return functools.partial(task.step, spec=spec, **extras)
