"""``train(cfg) -> summary``: the one training loop.

Validate the config, build the mesh and data, create (or restore) the sharded state, compile the
step once ahead of time, then alternate steps with logging, sample grids and checkpoints. Every
check of user input happens before anything is compiled.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import jax
import numpy as np

from gaxp import xla
from gaxp import conditional, distributed, phases, regularizers, run_dir, sharding
from gaxp.checkpoint import Checkpointer, abstract_like
from gaxp.config import Config, load, plain
from gaxp.errors import ConfigError
from gaxp.members import shard_mode as population_shard, spread_over_cores
from gaxp.preempt import StopRequests
from gaxp.logging.grids import save_image_grid, save_scatter
from gaxp.logging.writers import JsonlWriter, Progress, WandbWriter
from gaxp.loop import Loop, step_of
from gaxp.run import Run, assemble, make_spec, open_dataset  # noqa: F401 - re-exported
from gaxp.state import GANState, init_state
from gaxp.nets import sample_images
from gaxp.step import TRACES, ema_beta
from gaxp import tasks
from gaxp.randomness import gaxp_draws
from gaxp.metrics.evaluator import Evaluator

log = logging.getLogger("gaxp")


def param_digest(state: GANState) -> str:
    """SHA-256 of the G and D parameters (names, shapes, dtypes and bytes), host-side."""
    h = hashlib.sha256()
    for name in ("g_params", "d_params"):
        leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(getattr(state, name)))[0]
        for path, leaf in leaves:
            arr = np.ascontiguousarray(leaf)
            h.update(f"{name}{jax.tree_util.keystr(path)}{arr.shape}{arr.dtype}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def _quiet_libraries() -> None:
    """Orbax and grain log every save at INFO through absl; keep the console for the run."""
    import absl.logging

    absl.logging.set_verbosity(absl.logging.WARNING)
    for name in ("absl", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)


def setup(config: Config) -> Run:
    """Everything that can fail on user input, before any compilation."""
    _quiet_libraries()
    multi = distributed.initialize(config.trainer)
    cpus = spread_over_cores(config, multi)  # before JAX's CPU backend starts
    if jax.default_backend() == "cpu":
        xla.tune_host_allocator()  # keeps the step's large buffers mapped between steps
    else:
        cpus = None
    if cpus and cpus > 1:
        log.info("gaxp: population of %d over %d CPU devices, one per core (population.cpu_devices)",
                 config.trainer.population, cpus)
    mesh = sharding.make_mesh(cpus or config.trainer.devices)
    if config.trainer.population > 1 and population_shard(config, mesh) == "members":
        local_batch = config.data.batch_size  # each member's batch stays on its member's device
    else:
        local_batch = sharding.check_batch(config.data.batch_size, mesh)
    run = assemble(config, mesh, local_batch=local_batch)  # every check of the data, then the nets
    # the run's key and directory are those of the config as given (before model.num_classes)
    directory, restore = run_dir.resolve_everywhere(config)
    run = replace(run, dir=directory, restore=restore)
    if run.is_main:
        for line in regularizers.advice(run.config):
            log.warning("gaxp: %s", line)
        if run.phases:
            log.info("gaxp: %s", phases.describe(run.phases, config.trainer.steps))
    return run


def _init(run: Run, checkpointer: Checkpointer, data_iter) -> tuple[GANState, dict]:
    """A fresh replicated state, or the latest checkpoint restored into the same layout."""
    c = run.config
    make = functools.partial(init_state, c, run.spec.nets, run.shape, run.image)
    key = jax.random.fold_in(jax.random.key(c.trainer.seed), 0)
    replicated = sharding.replicated(run.mesh)
    if run.restore and checkpointer.latest_step() is not None:
        abstract = abstract_like(jax.eval_shape(make, key), replicated)
        return checkpointer.restore_latest_good(abstract, data_iter)
    return jax.jit(make, out_shardings=replicated)(key), {}


class Batches:
    """Host batches of ``n_critic`` micro-batches -> one global array [n_critic, batch, ...]."""

    def __init__(self, run: Run):
        self.n_critic = run.config.loss.n_critic
        self.local, self.glob = run.local_batch, run.config.data.batch_size
        self.iterator = run.dataset.iterator(self.local * self.n_critic)
        self.sharding = sharding.batch_sharding(run.mesh, batch_axis=1)
        # ("x",), ("x", "c") for image-to-image tasks; conditional models add their labels "y"
        self.keys = tasks.batch_keys(run.config) + (("y",) if run.spec.cond is not None else ())

    def host(self) -> dict:
        """The next host-local batch, {key: [n_critic, local batch, ...]} for ``self.keys``."""
        b = next(self.iterator)
        return {k: b[k].reshape((self.n_critic, self.local) + b[k].shape[1:]) for k in self.keys}

    def __next__(self) -> dict:
        """The next batch as global arrays on the mesh (what a step is lowered with)."""
        return sharding.to_global(self.host(), self.sharding, self.glob, batch_axis=1)

    def take(self) -> dict:
        """The next batch as the compiled step takes it (``sharding.feed``)."""
        return sharding.feed(self.host(), self.sharding, self.glob, batch_axis=1)


class Outputs:
    """Writers of one run (process 0 only): metrics.jsonl, W&B, progress bar, sample pictures."""

    def __init__(self, run: Run, start: int, wandb_id: str | None, name: str | None = None):
        t, self.run = run.config.trainer, run
        self.samples = run.dir / "samples"
        self.jsonl = wandb = None
        if run.is_main:
            self.samples.mkdir(exist_ok=True)
            self.jsonl = JsonlWriter(run.dir / "metrics.jsonl", start) if run.config.logger.jsonl else None
            if run.config.logger.wandb is not None:
                wandb = WandbWriter(run.config.logger.wandb, run.dir, asdict(run.config), wandb_id,
                                    name=name or run_name(run.config))
        self.wandb = wandb
        self.progress = Progress(t.steps, start, enabled=t.progress and run.is_main)
        z_key = jax.random.fold_in(jax.random.key(t.seed), 2)
        n = 2500 if run.dataset.kind == "points" else t.n_samples
        self.z, self.y, self.cols = jax.random.normal(z_key, (n, run.config.model.z_dim)), None, None
        if run.spec.cond is not None:  # one row per class, the same noise down each column
            self.z, self.y, self.cols = conditional.sample_inputs(
                z_key, run.spec.cond.num_classes, n, run.config.model.z_dim, run.dataset.kind)
        self._sample = xla.jit(lambda p, s, z, y: sample_images(run.spec, p, s, z, y))
        # what the samples show: the EMA of G, or G itself when the half-life makes the decay ~0
        decay = ema_beta(replace(t.ema, rampup=None), run.config.data.batch_size, 0)
        self.sampled = "EMA G" if float(decay) > 1e-6 else "G"
        # Image-to-image tasks draw source | output | target columns instead (gaxp.tasks).
        task = tasks.TASKS.entry(run.config.task.name)
        self.grid = task.grid(run) if task.grid is not None else None

    @property
    def wandb_id(self) -> str | None:
        return None if self.wandb is None else self.wandb.id

    @staticmethod
    def to_host(m: dict) -> dict:
        return {k: float(v) for k, v in jax.device_get(m).items()}

    def show(self, step: int, metrics: dict) -> None:
        self.progress.update(step - self.progress.bar.n, metrics)

    def log(self, step: int, metrics: dict) -> None:
        if self.jsonl:
            self.jsonl.log(step, metrics)
        if self.wandb:
            self.wandb.log(step, metrics)

    def samples_png(self, step: int, state: GANState) -> Path | None:
        path = self.samples / f"step_{step:07d}.png"
        if self.grid is not None:  # image-to-image tasks: source | output | target columns
            x = self.grid.draw(state.g_ema, state.g_stats)
        else:
            x = np.asarray(jax.device_get(self._sample(state.g_ema, state.g_stats, self.z, self.y)))
        if not self.run.is_main:
            return None
        labels = None if self.y is None else np.asarray(self.y)
        if self.grid is not None:
            self.grid.write(x, path)
        elif self.run.dataset.kind == "points":
            save_scatter(x, path, self.run.dataset.modes, title=f"step {step} ({self.sampled})",
                         labels=labels)
        else:
            save_image_grid(x, path, cols=self.cols)
        if self.wandb:
            self.wandb.log_image(step, "samples/ema", path)
        return path

    def rewind(self, step: int, note: dict) -> None:
        """After a rollback to ``step``: later metrics.jsonl rows move to metrics.rolled_back.jsonl."""
        if self.jsonl:
            self.jsonl.rewind(step)
        self.log(step, note)
        self.progress.bar.reset(self.progress.bar.total)
        self.progress.update(step)

    def close(self) -> None:
        self.progress.close()
        for w in (self.jsonl, self.wandb):
            if w is not None:
                w.close()


def run_name(config: Config, member: int | None = None) -> str:
    """What a run is, for W&B: ``<model>-<loss>[+<stabilizer>...][-<task>]-s<seed>`` (a
    population: ``-pop<n>``; its members ``-s<seed>-m<i>``), e.g. ``dcgan-ns-s0``."""
    parts = [config.model.name, config.loss.name + "".join(f"+{n}" for n in config.regularizer.names)]
    parts += [config.task.name] if config.task.name != "gan" else []
    n = config.trainer.population
    parts += [f"pop{n}"] if n > 1 and member is None else [f"s{config.trainer.seed}"]
    return "-".join(parts) + (f"-m{member:02d}" if member is not None else "")


def prior_wandb_id(directory: Path) -> str | None:
    """The W&B id of an earlier attempt of this run directory (so a restart continues that run)."""
    try:
        return json.loads((directory / "run.json").read_text()).get("wandb_id")
    except (OSError, ValueError):
        return None


@gaxp_draws
def prepare(config: Config) -> tuple[Run, Batches, Checkpointer, GANState, dict]:
    """Everything before compiling: validate and set up the run, open its data and checkpoints,
    and create the state (or restore it with the data position). Used by ``train`` and by
    scripts and tests that drive the compiled step themselves."""
    run = setup(config)
    batches = Batches(run)
    ckpt = Checkpointer(run.dir / "checkpoints", config.trainer.keep,
                        on_write_error=config.trainer.on_write_error)
    state, meta = _init(run, ckpt, batches.iterator)
    return run, batches, ckpt, state, meta


def make_evaluator(run: Run):
    """The run's in-loop evaluator (``gaxp.metrics``), or None when no metrics are configured."""
    if not run.config.metrics.names:
        return None
    task = tasks.TASKS.entry(run.config.task.name)
    if task.evaluator is not None:  # the task's own metrics (image-to-image: L1, PSNR, SSIM, FD)
        return task.evaluator(run.config, run.dataset, run.mesh, run.spec)

    sample = lambda p, s, z, y=None: sample_images(run.spec, p, s, z, y)  # noqa: E731
    return Evaluator(run.config, run.dataset, run.mesh, sample, run.config.model.z_dim,
                     num_classes=run.spec.cond and run.spec.cond.num_classes)


def run_summary(config: Config, result: dict, meta: dict, start: int, traces: int, state: GANState,
                directory: Path, final: dict, evals: dict | None = None, protocol=None) -> dict:
    """What ``summary.json`` holds for one run (or one population member's ``state``)."""
    steps = step_of(state)
    summary = {
        "steps": steps, "kimg": steps * config.data.batch_size * config.loss.n_critic / 1000,
        "wall_time_s": meta.get("wall_time_s", 0.0) + result["run_s"],
        "compile_s": result["compile_s"], "images_per_s": result["images_per_s"],
        "devices": result["devices"], "step_traces": traces, "resumed_from": start,
        "digest": param_digest(state), "final": final, "run_dir": str(directory),
        "rollbacks": int(np.max(jax.device_get(state.rollbacks))),
        **({"phases": result["phases"]} if "phases" in result else {}),  # gaxp.phases: per phase
    }
    if evals is not None:
        summary["eval"] = {"protocol": protocol, **evals}
    return summary


@gaxp_draws
@run_dir.one_run  # run directories locked for the call; write errors name the checkpoint to resume
def train(cfg) -> dict:
    """Train one GAN as configured; returns the summary also written to ``summary.json``."""
    config = cfg if isinstance(cfg, Config) else load(cfg)
    source = asdict(config) if isinstance(cfg, Config) else plain(cfg)  # load()-able when composed
    if config.trainer.population > 1:
        raise ConfigError("trainer.population > 1 is trained by gaxp.population.train (or "
                          "gaxp.train / gaxp-train, which choose it)")
    run, batches, ckpt, state, meta = prepare(config)
    evaluator = make_evaluator(run)
    protocol = evaluator.protocol if evaluator else None
    start = int(jax.device_get(state.step))
    meta = {"config_key": run_dir.config_key(config), **meta}
    out = Outputs(run, start, meta.get("wandb_id") or prior_wandb_id(run.dir))
    meta["wandb_id"] = out.wandb_id
    if run.is_main:
        run_dir.write_json_atomic(run.dir / "run.json", {
            "config_key": meta["config_key"], "wandb_id": out.wandb_id,
            "config": source, "eval_protocol": protocol})
        if out.wandb and protocol:
            out.wandb.update_config({"eval_protocol": protocol})
    traces_before = TRACES["train_step"]
    try:
        with StopRequests() as stop:
            result = Loop(run, batches, out, ckpt, meta, evaluator).run_steps(state, stop)
        state = result.pop("state")
        summary = run_summary(config, result, meta, start, TRACES["train_step"] - traces_before,
                              state, run.dir, result["final"], evaluator and evaluator.last, protocol)
        if run.is_main:
            run_dir.write_json_atomic(run.dir / "summary.json", summary)
            if out.wandb:
                out.wandb.summarize(summary)
    finally:
        ckpt.close()
        out.close()
    return summary
