"""``scripts/bench.py --population N``: a population's step against its members run one by one
(``bench_population``), and with ``--end-to-end STEPS`` the real ``gaxp-train`` processes
(``bench_population_end_to_end``). The programs are ``gaxp.population``'s: vmapped or unrolled as
``population.unroll=auto`` chooses.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench_common import MODELS, ROOT, gaxp_step, jax_copy, time_jax


def population_step(run, state, batch, key, n: int, devices: int, compiler_options=None, unroll=None):
    """The step of ``n`` members (``gaxp.population``'s program: vmapped or unrolled as
    ``population.unroll=auto`` chooses unless ``unroll`` is given, the member axis sharded over
    ``devices``, per-member learning rates as traced values) compiled, and its inputs."""
    import dataclasses
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from gaxp import xla
    from gaxp import phases
    from gaxp.members import unrolled
    from gaxp.population import lower_members
    from gaxp.step import train_step

    mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))
    sh = NamedSharding(mesh, P("data"))
    # the program of the phases the state is in (ProGAN: its stage), as gaxp.population compiles them
    spec = phases.bind(run.spec, phases.active(run.phases, int(jax.device_get(state.step))))
    spec = dataclasses.replace(spec, z_sharding=None)
    grow = lambda x: jax.device_put(jnp.broadcast_to(x, (n,) + x.shape), sh)  # noqa: E731
    pop_state, pop_batch = jax.tree.map(grow, state), jax.tree.map(grow, batch)
    keys = jax.device_put(jax.random.split(key, n), sh)
    hp = jax.device_put({"g_lr_scale": np.linspace(0.5, 2, n, dtype=np.float32),
                         "d_lr_scale": np.linspace(0.5, 2, n, dtype=np.float32)}, sh)
    unroll = unrolled(run.config, mesh, run.image) if unroll is None else unroll
    t = time.perf_counter()
    lowered = lower_members(functools.partial(train_step, spec=spec), mesh, "members", n, unroll, sh,
                            pop_state, pop_batch, keys, hp)
    compiled = lowered.compile(compiler_options=xla.mesh_options(run.mesh, compiler_options))
    compile_s = time.perf_counter() - t
    return (lambda st, b, k: compiled(st, b, k, hp)), pop_state, pop_batch, keys, compile_s, compiled, unroll


def _memory_mb(compiled) -> float:
    """XLA's own account of a program's device memory: arguments + outputs + temporaries."""
    m = compiled.memory_analysis()
    if m is None:
        return float("nan")
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes) / 2**20


def bench_population(model: str, batch: int, args) -> dict:
    """A population of N against N sequential runs of the same step: interleaved rounds of one
    member's step (x N) and the population's step; throughput ratio = N * t_one / t_population.
    Also the compile times and XLA's peak-memory account of both programs. With --xla-option,
    both programs compiled with those options too, timed in the same rounds."""
    from gaxp.loop import compile_step

    n = args.population
    with tempfile.TemporaryDirectory() as tmp:
        compiled, state, device_batch, key, _, compile_s, _, run, _ = gaxp_step(
            model, batch, tmp, 1, tuple(getattr(args, "overrides", ())), full=True)
        variants = {"": [compiled, state, device_batch, key]}
        pop = population_step(run, state, device_batch, key, n, args.host_devices)
        pops = {"": list(pop[:4])}
        if args.xla_options:
            one_opt = compile_step(run, state, device_batch, key, compiler_options=args.xla_options)[0]
            variants["opt_"] = [one_opt, jax_copy(state), device_batch, key]
            pops["opt_"] = list(population_step(run, state, device_batch, key, n, args.host_devices,
                                                args.xla_options)[:4])
        times = {f"{v}{k}": [] for v in variants for k in ("one_ms", "population_ms")}
        for r in range(args.rounds + 1):  # round 0 warms up (2 steps) and is not recorded
            for v in variants:
                for k, prog in (("one_ms", variants[v]), ("population_ms", pops[v])):
                    ms, prog[1] = time_jax(*prog, args.steps if r else 2)
                    if r:
                        times[f"{v}{k}"].append(ms)
    row = {"model": model, "batch": batch, "members": n, "devices": args.host_devices, "unrolled": pop[6]}
    for v in variants:
        one, pop_ms = statistics.median(times[f"{v}one_ms"]), statistics.median(times[f"{v}population_ms"])
        row.update({f"{v}one_ms": one, f"{v}population_ms": pop_ms,
                    f"{v}throughput_vs_sequential": n * one / pop_ms})
    return row | {"compile_one_s": compile_s, "compile_population_s": pop[4],
                  "memory_one_mb": _memory_mb(compiled), "memory_population_mb": _memory_mb(pop[5])}


def bench_population_end_to_end(model: str, batch: int, args) -> dict:
    """What a user waits for: ``gaxp-train trainer.population=N`` against N ``gaxp-train`` runs one
    after another (seeds 0..N-1), each a real process from start to exit (start-up, data, compile,
    the step loop, final checkpoint; no metrics, samples or W&B). Rounds alternate the two; the
    ratio is the median over rounds of (sum of the N runs' wall times) / (population's)."""
    n, steps = args.population, args.end_to_end
    common = [*MODELS[model], f"data.batch_size={batch}", f"trainer.steps={steps}", "logger=none",
              "metrics=none", "trainer.progress=false", f"trainer.sample_every={steps}",
              f"trainer.ckpt_every={steps}", f"trainer.log_every={max(1, steps // 10)}"]
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}  # as a user runs
    env["PYTHONPATH"] = str(ROOT)

    def wall(extra: list[str], tmp: str, name: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gaxp.cli", *common, *extra, f"hydra.run.dir={tmp}/{name}"],
                       env=env, cwd=tmp, check=True, capture_output=True)
        return time.perf_counter() - t0

    pops, seqs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            pops.append(wall([f"trainer.population={n}"], tmp, f"pop{r}"))
            seqs.append(sum(wall([f"trainer.seed={i}"], tmp, f"one{r}_{i}") for i in range(n)))
    ratios = [s_ / p_ for s_, p_ in zip(seqs, pops)]
    return {"model": model, "batch": batch, "members": n, "steps": steps,
            "population_s": statistics.median(pops), "sequential_s": statistics.median(seqs),
            "end_to_end_vs_sequential": statistics.median(ratios)}
