"""A population's configuration: which hyperparameters vary per member, and each member as the
single run a user would get from ``gaxp-train`` (``gaxp.population`` trains them together).

Validated by ``gaxp.config.load`` (``population_spec``); the traced per-member values the step
reads come from ``hparams``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import asdict
from pathlib import Path

import jax
import numpy as np

from gaxp.errors import ConfigError, unknown
from gaxp.specs import Config, PopulationSpec

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
        raise ConfigError(f"population must be a mapping with keys vary, shard, cpu_devices, unroll "
                          f"(got {node!r})")
    extra = sorted(set(node) - {"vary", "shard", "cpu_devices", "unroll"})
    if extra:
        raise ConfigError(f"unknown key population.{extra[0]}; valid keys: cpu_devices, shard, unroll, vary")
    n = config.trainer.population
    if isinstance(n, bool) or n < 1:
        raise ConfigError(f"trainer.population must be >= 1 (got {n})")
    shard = node.get("shard") or "auto"
    if shard not in SHARDS:
        raise unknown("population.shard", shard, SHARDS)
    cpus = node.get("cpu_devices", "auto")
    cpus = "auto" if cpus is None else cpus
    if cpus != "auto" and (isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1):
        raise ConfigError(f"population.cpu_devices must be auto or an integer >= 1 (got {cpus!r})")
    unroll = node.get("unroll", "auto")
    unroll = "auto" if unroll is None else unroll
    if unroll not in ("auto", True, False):
        raise ConfigError(f"population.unroll must be auto, true or false (got {unroll!r})")
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
    return PopulationSpec(tuple(entries), shard, cpus, unroll)


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


def unrolled(config: Config, mesh, image: bool) -> bool:
    """Whether the population's step runs its members one by one (``population.unroll``): a loop
    over the members whose body is one member's step, so each convolution and matrix product is
    one member's, as in a single run (``gaxp.population._one_by_one_step``). ``auto``: on CPU, for
    image models (convolutions). Measured on the 2-core CPU (``scripts/bench.py --population``):
    8 classic DCGAN-28s at batch 64 ran at 1.10x the throughput of 8 sequential runs one by one
    (members then unrolled at trace time), 0.98x vmapped (whose batched products and per-member
    convolutions copied ~20% of the step's time). As a loop they compile in 5.5 s instead of 47 s
    unrolled, at the unrolled program's speed (docs/populations.md); 10 PacGAN toys gained nothing
    one by one (0.77x vs 0.75x), so MLP populations stay vmapped."""
    want = config.population.unroll
    if want != "auto":
        return bool(want)
    return image and mesh.devices.flat[0].platform == "cpu"


_SPREAD_BY_GAXP = [0]  # the CPU device count spread_over_cores set in this process (0: none)


def _user_cpu_devices() -> bool:
    """Whether the user (not an earlier population of this process) chose how many CPU devices
    JAX has."""
    return ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
            or jax.config.jax_num_cpu_devices not in (-1, _SPREAD_BY_GAXP[0]))


def spread_over_cores(config: Config, distributed: bool) -> int | None:
    """Before JAX starts its CPU backend: give a population one CPU device per core
    (``population.cpu_devices``), so that ``population.shard=members`` runs its members' programs
    side by side on the cores. ``auto``: for MLP members (``model=mlp``), as many devices as divide
    the members, up to the usable cores, unless the user set a CPU device count (``XLA_FLAGS``,
    ``jax_num_cpu_devices``), chose ``trainer.devices`` or ``population.shard=batch``, or runs
    several processes. Returns the number of devices the run should use, or None (all).

    JAX's device count lasts for the process, so in an in-process sweep (Hydra's default
    launcher) the jobs after a population that set it would see its devices. They get what a
    fresh process would give them: a later population as many of those devices as it would have
    set, any other run (``trainer.devices`` unset) one device.

    Measured on the 2-core CPU (``scripts/bench.py --population``): one vmapped program of 10
    PacGAN toys kept the cores ~60% busy, 0.73x the throughput of 10 sequential runs; over 2
    devices 0.95x (1.30x the one-device program). Convolutional members already fill both cores:
    8 DCGANs fell from 1.10x to 1.00x unrolled over 2 devices (0.88x to 0.54x vmapped), so they
    stay on one device, as single runs do (a single run is faster on one device)."""
    from jax._src import xla_bridge  # the public API has no "is the backend up" query

    n, want, spread = config.trainer.population, config.population.cpu_devices, _SPREAD_BY_GAXP[0]
    fresh = 1 if spread and config.trainer.devices is None and not _user_cpu_devices() else None
    if n < 2 or want == 1:
        return fresh
    if want == "auto":
        if (config.model.name != "mlp" or distributed or _user_cpu_devices()
                or config.trainer.devices is not None or config.population.shard == "batch"
                or (xla_bridge.backends_are_initialized() and not spread)):
            return fresh
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        want = max(d for d in range(1, min(cores, n, spread or n) + 1) if n % d == 0)
        if spread:  # the devices are there already: as many as a fresh process would set
            return want
        if want == 1:
            return None
    elif xla_bridge.backends_are_initialized() or _user_cpu_devices():
        have = jax.local_device_count("cpu")
        if have == want:
            return None
        raise ConfigError(f"population.cpu_devices={want} but JAX already has {have} CPU devices (set "
                          "by XLA_FLAGS, jax_num_cpu_devices or an earlier run in this process); "
                          "set only one, or run gaxp-train in a new process")
    jax.config.update("jax_num_cpu_devices", want)
    _SPREAD_BY_GAXP[0] = want
    return want
