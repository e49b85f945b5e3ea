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

import copy
import dataclasses
import functools
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from gaxp import run_dir, sharding
from gaxp.checkpoint import Checkpointer, abstract_like
from gaxp.config import Config, PopulationSpec
from gaxp.errors import ConfigError, unknown
from gaxp.logging.writers import Progress
from gaxp.loop import Loop, step_of
from gaxp.preempt import StopRequests
from gaxp.state import init_state
from gaxp.step import train_step

log = logging.getLogger("gaxp")

VARY = {
    "seed": "trainer.seed (default: trainer.seed + member index)",
    "g_lr": "optim.g.lr",
    "d_lr": "optim.d.lr",
    "gp_weight": "the weight of the run's gradient penalty (loss.penalty_weight or regularizer.<penalty>.weight)",
    "ema_kimg": "trainer.ema.halflife_kimg",
}
SHARDS = ("auto", "members", "batch")


# ----------------------------------------------------------------------------- config


def _penalty(config: Config) -> str:
    names = [n for n, _ in config.regularizer.penalties]
    if len(names) != 1:
        have = f"it has {', '.join(names)}" if names else "it has none"
        raise ConfigError("population.vary.gp_weight needs exactly one gradient penalty in the run "
                          f"({have}); e.g. loss=wgan_gp or regularizer=r1")
    return names[0]


def population_spec(config: Config, node) -> PopulationSpec:
    """Validate the ``population`` node against ``trainer.population`` (called by config.load)."""
    node = node or {}
    if not isinstance(node, dict):
        raise ConfigError(f"population must be a mapping with keys vary, shard (got {node!r})")
    extra = sorted(set(node) - {"vary", "shard"})
    if extra:
        raise ConfigError(f"unknown key population.{extra[0]}; valid keys: shard, vary")
    n = config.trainer.population
    if isinstance(n, bool) or n < 1:
        raise ConfigError(f"trainer.population must be >= 1 (got {n})")
    shard = node.get("shard") or "auto"
    if shard not in SHARDS:
        raise unknown("population.shard", shard, SHARDS)
    vary = node.get("vary") or {}
    if not isinstance(vary, dict):
        raise ConfigError("population.vary must map names to lists, e.g. population.vary.g_lr=[1e-4,2e-4]")
    entries = []
    for name, values in sorted(vary.items()):
        if name not in VARY:
            raise unknown("population.vary key", name, VARY)
        if values is None:
            continue
        where = f"population.vary.{name}"
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"{where} must be a list with one value per member, e.g. {where}=[1,2] "
                              f"(got {values!r})")
        if n == 1:
            raise ConfigError(f"{where} has {len(values)} values but trainer.population=1; set "
                              f"trainer.population={len(values)}")
        if len(values) != n:
            raise ConfigError(f"{where} has {len(values)} values but trainer.population={n}; give "
                              "one value per member")
        if name == "seed":
            if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
                raise ConfigError(f"{where} must be a list of integers (got {list(values)})")
            if len(set(values)) != n:
                raise ConfigError(f"{where} repeats a seed ({list(values)}); members would be identical")
        else:
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                   or v <= 0 for v in values):
                raise ConfigError(f"{where} must be a list of numbers > 0 (got {list(values)})")
            values = [float(v) for v in values]
        if name == "gp_weight":
            _penalty(config)
        entries.append((name, tuple(values)))
    if n > 1 and config.trainer.guard.inject_nan:
        raise ConfigError("trainer.guard.inject_nan is a single-run debug hook; unset it with "
                          "trainer.population > 1")
    return PopulationSpec(tuple(entries), shard)


def seeds(config: Config) -> list[int]:
    n, given = config.trainer.population, config.population.get("seed")
    return list(given) if given else [config.trainer.seed + i for i in range(n)]


def member_config(config: Config, i: int, directory: Path) -> Config:
    """Member ``i`` as a single run: its seed and varied values, written to ``directory``."""
    v = {name: values[i] for name, values in config.population.vary}
    t, o = config.trainer, config.optim
    trainer = dataclasses.replace(t, seed=seeds(config)[i], population=1, progress=False,
                                  ema=dataclasses.replace(t.ema, halflife_kimg=v.get("ema_kimg", t.ema.halflife_kimg)))
    optim = dataclasses.replace(o, g=dataclasses.replace(o.g, lr=v.get("g_lr", o.g.lr)),
                                d=dataclasses.replace(o.d, lr=v.get("d_lr", o.d.lr)))
    loss, regs = config.loss, config.regularizer
    if "gp_weight" in v:
        name = _penalty(config)
        p = dataclasses.replace(regs.get(name), weight=v["gp_weight"])
        regs = dataclasses.replace(regs, entries=tuple((k, p if k == name else q) for k, q in regs.entries))
        if loss.penalty == name:
            loss = dataclasses.replace(loss, penalty_weight=v["gp_weight"])
    return dataclasses.replace(config, trainer=trainer, optim=optim, loss=loss, regularizer=regs,
                               population=PopulationSpec(), out_dir=str(directory))


def member_source(source: dict, member: Config) -> dict:
    """The member's composed config (for its run.json): ``gaxp-train`` of it is the same run."""
    node = copy.deepcopy(source)
    if not isinstance(node.get("trainer"), dict) or "optim" not in node:
        return asdict(member)
    t = node["trainer"]
    t.update(seed=member.trainer.seed, population=1)
    t.setdefault("ema", {})["halflife_kimg"] = member.trainer.ema.halflife_kimg
    node["optim"]["g"]["lr"], node["optim"]["d"]["lr"] = member.optim.g.lr, member.optim.d.lr
    penalties = member.regularizer.penalties
    if len(penalties) == 1:
        name, p = penalties[0]
        if node.get("loss", {}).get("penalty") == name:
            node["loss"]["penalty_weight"] = p.weight
        elif isinstance(node.get("regularizer"), dict):
            node["regularizer"][name] = dict(node["regularizer"].get(name) or {}, weight=p.weight)
    node["population"] = {"vary": {k: None for k in VARY}, "shard": "auto"}
    node["out_dir"] = member.out_dir
    return node


def hparams(config: Config, members: list[Config]) -> dict:
    """The traced per-member hyperparameters the step reads (``gaxp.step``), float32 [N]."""
    varied, hp = dict(config.population.vary), {}
    f32 = lambda xs: np.asarray(xs, np.float32)  # noqa: E731
    if "g_lr" in varied:
        hp["g_lr_scale"] = f32([m.optim.g.lr / config.optim.g.lr for m in members])
    if "d_lr" in varied:
        hp["d_lr_scale"] = f32([m.optim.d.lr / config.optim.d.lr for m in members])
    if "gp_weight" in varied:
        name = _penalty(config)
        hp["gp_weight"] = f32([m.regularizer.get(name).weight for m in members])
    if "ema_kimg" in varied:
        hp["ema_kimg"] = f32([m.trainer.ema.halflife_kimg for m in members])
    return hp


# ----------------------------------------------------------------------------- layout


def shard_mode(config: Config, mesh) -> str:
    n, d = config.trainer.population, mesh.devices.size
    mode = config.population.shard
    if mode == "auto":
        return "members" if n % d == 0 and jax.process_count() == 1 else "batch"
    if mode == "members":
        if jax.process_count() > 1:
            raise ConfigError("population.shard=members runs in a single process; use "
                              "population.shard=batch with several processes")
        if n % d:
            raise ConfigError(f"population.shard=members needs trainer.population ({n}) divisible by "
                              f"the {d} devices; use population.shard=batch or trainer.devices=<a divisor>")
    return mode


def member_slice(tree, i: int):
    return jax.tree.map(lambda x: x[i], tree)


def stack(trees: list):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class PopBatches:
    """Each member's own data stream (its seed's order), stacked: [N, n_critic, batch, ...]."""

    def __init__(self, members: list, mode: str, mesh, n: int, batch: int):
        self.members = members  # gaxp.train.Batches, one per member
        self.iterator = [b.iterator for b in members]
        if mode == "members":
            self.sharding, self.axis, self.glob = NamedSharding(mesh, P("data")), 0, n
        else:
            self.sharding, self.axis, self.glob = NamedSharding(mesh, P(None, None, "data")), 2, batch

    def __next__(self) -> dict:
        hosts = [b.host() for b in self.members]
        local = {k: np.stack([h[k] for h in hosts]) for k in hosts[0]}
        return sharding.to_global(local, self.sharding, self.glob, batch_axis=self.axis)


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


def train(config: Config, source: dict) -> dict:
    """Train the population; returns the population summary (also ``<run>/summary.json``)."""
    from gaxp import train as T

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
    shape, image = tuple(run.dataset.shape), run.dataset.kind == "image"
    # run.config: with model.num_classes read from the data (conditional GANs)
    make = functools.partial(init_state, run.config, run.spec.nets, shape, image)
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
    ids = meta.pop("wandb_ids", None) or [T._prior_wandb_id(r.dir) for r in runs]
    outs = []
    for i, r in enumerate(runs):
        wandb = r.config.logger.wandb
        if wandb is not None:  # one W&B group for the population, one run per member
            wandb = dataclasses.replace(wandb, group=wandb.group or run.dir.name)
            r = dataclasses.replace(r, config=dataclasses.replace(
                r.config, logger=dataclasses.replace(r.config.logger, wandb=wandb)))
        outs.append(T.Outputs(r, start, ids[i], name=f"{run.dir.name}-m{i:02d}"))
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

    def compile_fn(state, batch, key, spec):  # spec: run.spec bound to a growth stage (gaxp.grow)
        t0 = time.perf_counter()
        step = jax.vmap(functools.partial(train_step, spec=spec),
                        spmd_axis_name="data" if mode == "members" else None)
        fn = jax.jit(step, donate_argnums=0, out_shardings=(state_sharding, state_sharding))
        compiled = fn.lower(state, batch, key, hp).compile()
        return (lambda s, b, k: compiled(s, b, k, hp)), time.perf_counter() - t0

    try:
        with StopRequests() as stop:
            loop = Loop(run, batches, out, ckpt, meta, evaluator, key=keys(1), compile_fn=compile_fn)
            result = loop.run_steps(state, stop)
    finally:
        ckpt.close()
        out.close()
    state = result.pop("state")
    steps = step_of(state)
    kimg = steps * config.data.batch_size * config.loss.n_critic / 1000
    traces = T.TRACES["train_step"] - traces_before
    rows = []
    for i, (r, mc) in enumerate(zip(runs, members)):
        final = {k: _member_value(v, i) for k, v in result["final"].items()}
        summary = T.run_summary(mc, result, meta, start, traces, member_slice(state, i), r.dir, final,
                                evaluator and evaluator.last[i], protocol)
        summary["population"] = {"dir": str(run.dir), "member": i}
        row = {"member": i, "dir": str(r.dir), "seed": mc.trainer.seed,
               **{name: values[i] for name, values in vary.items() if name != "seed"},
               "digest": summary["digest"], "final": final,
               **({"eval": summary["eval"]} if "eval" in summary else {})}
        if run.is_main:
            run_dir.write_json_atomic(r.dir / "summary.json", summary)
        rows.append(row)
    summary = {"population": n, "shard": mode, "steps": steps, "kimg_per_member": kimg,
               "wall_time_s": meta.get("wall_time_s", 0.0) + result["run_s"],
               "compile_s": result["compile_s"], "images_per_s": result["images_per_s"] * n,
               "step_traces": traces, "resumed_from": start, "members": rows, "run_dir": str(run.dir),
               "final": {k: float(np.mean([r["final"][k] for r in rows])) for k in rows[0]["final"]}}
    if run.is_main:
        run_dir.write_json_atomic(run.dir / "summary.json", summary)
    return summary
