"""Populations: ``trainer.population=N`` trains N independent GANs in one jitted, vmapped step.

Every leaf of the state gets a leading member axis; member ``i`` is exactly the run a user would
get from ``gaxp-train`` with that member's seed and varied values (``population.vary.<name>``),
up to float rounding: its own initialization, data order, step keys and fixed sample noise all
come from its own seed. Hyperparameters that vary enter the step as traced per-member values
(``hparams``), so the whole population is one program, compiled once:

* ``g_lr``, ``d_lr``: the member's update is scaled by its learning rate over the configured one
  (Adam, RMSProp and SGD updates are linear in the learning rate);
* ``gp_weight``: the weight of the run's one gradient penalty;
* ``ema_kimg``: the half-life of G's EMA.

The member axis is sharded over the devices (``population.shard=members``: members never talk to
each other, so no collective runs) or every member's batch is (``batch``, like a single run).

Each member writes a complete run directory, ``<run>/members/<i>``: ``metrics.jsonl``,
``samples/``, ``checkpoints/``, ``summary.json`` and ``run.json`` holding the member's own config,
so ``gaxp-eval``, ``gaxp-sample`` and ``gaxp-train trainer.resume=<member dir>`` (alone, as a
single run) work on it; each member is its own W&B run, the population is their W&B group. The
population directory holds ``population.json`` and a ``summary.json`` over the members.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from gaxp import run_dir, sharding, tasks, xla
from gaxp.models import layers
from gaxp.checkpoint import Checkpointer, abstract_like
from gaxp.members import (  # noqa: F401 - the population's config, re-exported
    SHARDS, VARY, hparams, member_config, member_source, population_spec, seeds, shard_mode,
    unrolled)
from gaxp.specs import Config
from gaxp.logging.writers import Progress
from gaxp.loop import Loop, step_of
from gaxp.preempt import StopRequests
from gaxp.randomness import gaxp_draws
from gaxp.state import init_state
from gaxp import training as T

log = logging.getLogger("gaxp")

# ----------------------------------------------------------------------------- layout


def member_slice(tree, i: int):
    return jax.tree.map(lambda x: x[i], tree)


def stack(trees: list):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class PopBatches:
    """Each member's own data stream (its seed's order), stacked: [N, n_critic, batch, ...]."""

    def __init__(self, members: list, mode: str, mesh, n: int, batch: int):
        self.members = members  # gaxp.training.Batches, one per member
        self.iterator = [b.iterator for b in members]
        if mode == "members":
            self.sharding, self.axis, self.glob = NamedSharding(mesh, P("data")), 0, n
        else:
            self.sharding, self.axis, self.glob = NamedSharding(mesh, P(None, None, "data")), 2, batch

    def _host(self) -> dict:
        hosts = [b.host() for b in self.members]
        return {k: np.stack([h[k] for h in hosts]) for k in hosts[0]}

    def __next__(self) -> dict:
        return sharding.to_global(self._host(), self.sharding, self.glob, batch_axis=self.axis)

    def take(self) -> dict:
        return sharding.feed(self._host(), self.sharding, self.glob, batch_axis=self.axis)


class PopCheckpointer:
    """One Orbax checkpointer per member directory; saves and restores the members together."""

    def __init__(self, ckpts: list[Checkpointer], member_abstract, state_sharding):
        self.ckpts, self.abstract, self.state_sharding = ckpts, member_abstract, state_sharding
        self.wandb_ids: list = [None] * len(ckpts)

    def latest_step(self) -> int | None:
        steps = [c.latest_step() for c in self.ckpts]
        return None if any(s is None for s in steps) else min(steps)

    def save(self, step: int, state, iterators: list, meta: dict) -> bool:
        ok = True
        for i, (c, it) in enumerate(zip(self.ckpts, iterators)):
            ok = c.save(step, member_slice(state, i), it, meta | {"wandb_id": self.wandb_ids[i]}) and ok
        return ok

    def restore_latest_good(self, abstract, iterators: list):
        """Every member's latest intact checkpoint; all members at the earliest such step."""
        del abstract  # the population's; members are restored one by one
        got = [c.restore_latest_good(self.abstract, it) for c, it in zip(self.ckpts, iterators)]
        steps = [int(jax.device_get(s.step)) for s, _ in got]
        for i, (c, it) in enumerate(zip(self.ckpts, iterators)):
            if steps[i] != min(steps):
                got[i] = c.restore(min(steps), self.abstract, it)
        state = jax.device_put(stack([s for s, _ in got]), self.state_sharding)
        metas = [m for _, m in got]
        self.wandb_ids = [m.get("wandb_id") for m in metas]
        return state, metas[0] | {"wandb_ids": self.wandb_ids}

    def wait(self) -> None:
        for c in self.ckpts:
            c.wait()

    def close(self) -> None:
        for c in self.ckpts:
            c.close()


def _member_value(v, i: int):
    a = np.asarray(v)
    return float(a[i]) if a.ndim else float(a)


class PopOutputs:
    """Each member's own Outputs (metrics.jsonl, W&B run, sample grids), one progress bar."""

    def __init__(self, run, outs: list, start: int):
        self.members = outs
        t = run.config.trainer
        self.progress = Progress(t.steps, start, enabled=t.progress and run.is_main)

    @staticmethod
    def to_host(m: dict) -> dict:
        return {k: np.asarray(v) for k, v in jax.device_get(m).items()}

    def show(self, step: int, metrics: dict) -> None:
        mean = {k: float(np.mean(v)) for k, v in metrics.items()}
        self.progress.update(step - self.progress.bar.n, mean)

    def log(self, step: int, metrics: dict) -> None:
        for i, out in enumerate(self.members):
            out.log(step, {k: _member_value(v, i) for k, v in metrics.items()})

    def samples_png(self, step: int, state) -> None:
        for i, out in enumerate(self.members):
            out.samples_png(step, member_slice(state, i))

    def rewind(self, step: int, note: dict) -> None:
        for out in self.members:
            out.rewind(step, note)
        self.progress.bar.reset(self.progress.bar.total)
        self.progress.update(step)

    def close(self) -> None:
        self.progress.close()
        for out in self.members:
            out.close()


class PopEvaluator:
    """The run's evaluator (reference statistics computed once) applied to every member."""

    def __init__(self, evaluator, n: int):
        self.evaluator, self.n = evaluator, n
        self.protocol, self.last = evaluator.protocol, [{} for _ in range(n)]

    def due(self, step: int, steps: int) -> bool:
        return self.evaluator.due(step, steps)

    def __call__(self, step, g_ema, g_stats, echo=None) -> dict:
        rows = []
        for i in range(self.n):
            say = None if echo is None else (lambda line, i=i: echo(f"member {i}: {line}"))
            rows.append(self.evaluator(step, member_slice(g_ema, i), member_slice(g_stats, i), say))
            self.last[i] = dict(self.evaluator.last)
        return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


# ----------------------------------------------------------------------------- training


def _member_summaries(run, runs, members, result, meta, start, state, evaluator, protocol, vary,
                      traces, out) -> list:
    """Each member's summary.json (and W&B summary); the rows of the population's summary."""

    rows = []
    for i, (r, mc) in enumerate(zip(runs, members)):
        final = {k: _member_value(v, i) for k, v in result["final"].items()}
        summary = T.run_summary(mc, result, meta, start, traces, member_slice(state, i), r.dir, final,
                                evaluator and evaluator.last[i], protocol)
        summary["population"] = {"dir": str(run.dir), "member": i}
        rows.append({"member": i, "dir": str(r.dir), "seed": mc.trainer.seed,
                     **{name: values[i] for name, values in vary.items() if name != "seed"},
                     "digest": summary["digest"], "final": final,
                     **({"eval": summary["eval"]} if "eval" in summary else {})})
        if run.is_main:
            run_dir.write_json_atomic(r.dir / "summary.json", summary)
            if out.members[i].wandb:
                out.members[i].wandb.summarize(summary)
    return rows


def _one_by_one_step(step, mesh, mode: str, n: int):
    """``step`` of one member, applied to each member of the stacked (state, batch, key, hp) in
    turn (``population.unroll``): a loop over the members (``lax.scan``) whose body is one
    member's step, so each convolution and matrix product is one member's, as in a single run, and
    the program compiles in one member's time whatever the count. With the member axis over
    several devices, each device runs its own members (``shard_map``)."""
    devices = mesh.devices.size if mode == "members" else 1

    def members(state, batch, key, hp):
        # Each member's new state is written into its row of the donated stacked state, and the
        # next member reads its row from there: XLA updates the rows in place. Stacking the new
        # states instead copied the whole state once more (8 DCGANs: ~11 ms a member of ~160).
        def one(state, xs):
            i, member = xs[0], xs[1:]
            row = jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), state)
            new, m = step(row, *member)
            return jax.tree.map(lambda a, v: lax.dynamic_update_index_in_dim(a, v, i, 0), state, new), m

        return lax.scan(one, state, (jnp.arange(n // devices), batch, key, hp))

    if devices == 1:
        return members
    return jax.shard_map(members, mesh=mesh, in_specs=(P("data"),) * 4, out_specs=P("data"))


def lower_members(step, mesh, mode: str, n: int, unroll: bool, out_sharding, *args):
    """One member's ``step`` as the population's program, jitted (state donated) and lowered on
    ``args``: members one by one (``_one_by_one_step``) or vmapped. Vmapped convolutions run one
    per member (``gaxp.models.layers.conv``), not as lax's grouped ones, unless a gradient
    penalty differentiates through them twice (JAX cannot linearize them): then lax's, with one
    line."""
    if unroll:
        fn = _one_by_one_step(step, mesh, mode, n)
    else:
        fn = jax.vmap(step, spmd_axis_name="data" if mode == "members" else None)
    fn = jax.jit(fn, donate_argnums=0, out_shardings=(out_sharding, out_sharding))
    try:
        with layers.member_batched(not unroll):
            return fn.lower(*args)
    except ValueError as e:
        if "Linearization failed" not in str(e):
            raise
        log.info("population: a gradient penalty differentiates through the convolutions "
                 "twice, so they run as lax's grouped convolutions (slower on CPU)")
        return fn.lower(*args)


@gaxp_draws
@run_dir.one_run  # the run and member directories locked for the call; write errors name the resume
def train(config: Config, source: dict) -> dict:
    """Train the population; returns the population summary (also ``<run>/summary.json``)."""

    run = T.setup(config)
    n = config.trainer.population
    mode = shard_mode(config, run.mesh)
    if mode == "members":  # members never share data: the batch of one member stays on its device
        run = dataclasses.replace(run, spec=dataclasses.replace(run.spec, z_sharding=None))
    state_sharding = NamedSharding(run.mesh, P("data")) if mode == "members" else sharding.replicated(run.mesh)
    members, runs = [], []
    for i in range(n):
        directory = run.dir / "members" / f"{i:02d}"
        if run.is_main:
            run_dir.hold(directory)  # one process per member directory too
        mc = member_config(config, i, directory)
        members.append(mc)
        runs.append(dataclasses.replace(run, config=mc, dir=directory, dataset=T.open_dataset(mc)))
    hp = jax.device_put(hparams(config, members), state_sharding)
    batches = PopBatches([T.Batches(r) for r in runs], mode, run.mesh, n, config.data.batch_size)
    # run.config: with model.num_classes read from the data (conditional GANs)
    make = functools.partial(init_state, run.config, run.spec.nets, run.shape, run.image)
    member_abstract = abstract_like(jax.eval_shape(make, jax.random.key(0)), sharding.replicated(run.mesh))
    ckpt = PopCheckpointer([Checkpointer(r.dir / "checkpoints", config.trainer.keep,
                                         on_write_error=config.trainer.on_write_error) for r in runs],
                           member_abstract, state_sharding)
    keys = lambda j: jnp.stack([jax.random.fold_in(jax.random.key(s), j) for s in seeds(config)])  # noqa: E731
    if run.restore and ckpt.latest_step() is not None:
        state, meta = ckpt.restore_latest_good(None, batches.iterator)
    else:
        state, meta = jax.jit(jax.vmap(make), out_shardings=state_sharding)(keys(0)), {}
    start = step_of(state)
    ids = meta.pop("wandb_ids", None) or [T.prior_wandb_id(r.dir) for r in runs]
    outs = []
    for i, r in enumerate(runs):
        wandb = r.config.logger.wandb
        if wandb is not None:  # one W&B group for the population, one run per member
            wandb = dataclasses.replace(wandb, group=wandb.group or run.dir.name)
            r = dataclasses.replace(r, config=dataclasses.replace(
                r.config, logger=dataclasses.replace(r.config.logger, wandb=wandb)))
        outs.append(T.Outputs(r, start, ids[i], name=T.run_name(r.config, member=i)))
    ckpt.wandb_ids = [o.wandb_id for o in outs]
    out = PopOutputs(run, outs, start)
    evaluator = T.make_evaluator(run)
    evaluator = PopEvaluator(evaluator, n) if evaluator is not None else None
    protocol = evaluator.protocol if evaluator else None
    meta = {"config_key": run_dir.config_key(config), **meta}
    vary = {name: list(values) for name, values in config.population.vary}
    if run.is_main:
        run_dir.write_json_atomic(run.dir / "run.json", {
            "config_key": meta["config_key"], "config": source, "eval_protocol": protocol,
            "population": n, "wandb_ids": ckpt.wandb_ids})
        run_dir.write_json_atomic(run.dir / "population.json", {
            "size": n, "shard": mode, "seeds": seeds(config), "vary": vary,
            "members": [str(r.dir) for r in runs]})
        for i, (r, mc) in enumerate(zip(runs, members)):
            run_dir.write_json_atomic(r.dir / "run.json", {
                "config_key": run_dir.config_key(mc), "wandb_id": ckpt.wandb_ids[i],
                "config": member_source(source, mc), "eval_protocol": protocol,
                "population": {"dir": str(run.dir), "member": i}})
    traces_before = T.TRACES["train_step"]

    unroll = unrolled(config, run.mesh, run.image)
    if unroll:
        log.info("population: %d members traced one by one, in a loop (population.unroll)", n)

    def compile_fn(state, batch, key, spec):  # spec: run.spec bound to its phases (gaxp.phases)
        t0 = time.perf_counter()
        lowered = lower_members(tasks.step_fn(config, spec), run.mesh, mode, n, unroll, state_sharding,
                                state, batch, key, hp)
        compiled = lowered.compile(compiler_options=xla.mesh_options(run.mesh))
        return (lambda s, b, k: compiled(s, b, k, hp)), time.perf_counter() - t0

    try:
        with StopRequests() as stop:
            loop = Loop(run, batches, out, ckpt, meta, evaluator, key=keys(1), compile_fn=compile_fn)
            result = loop.run_steps(state, stop)
        state = result.pop("state")
        rows = _member_summaries(run, runs, members, result, meta, start, state, evaluator,
                                 protocol, vary, T.TRACES["train_step"] - traces_before, out)
    finally:
        ckpt.close()
        out.close()
    steps = step_of(state)
    kimg = steps * config.data.batch_size * config.loss.n_critic / 1000
    traces = T.TRACES["train_step"] - traces_before
    summary = {"population": n, "shard": mode, "steps": steps, "kimg_per_member": kimg,
               "wall_time_s": meta.get("wall_time_s", 0.0) + result["run_s"],
               "compile_s": result["compile_s"], "images_per_s": result["images_per_s"] * n,
               "devices": result["devices"], "step_traces": traces, "resumed_from": start, "members": rows, "run_dir": str(run.dir),
               "final": {k: float(np.mean([r["final"][k] for r in rows])) for k in rows[0]["final"]}}
    if run.is_main:
        run_dir.write_json_atomic(run.dir / "summary.json", summary)
    return summary
