#!/usr/bin/env python
"""Benchmark gaxp's compiled train step: ms, images/s, compile s, XLA's GFLOP and the fraction of
the matmul peak measured here, the real-data rate; the same DCGAN in eager torch, interleaved.

    python scripts/bench.py --models dcgan --batch 64 --json out.json
    python scripts/bench.py --compare torch        # each library in its own processes
    python scripts/bench.py --population 8 --models dcgan   # scripts/bench_population.py
    python scripts/bench.py --gpu-suite --json gpu.json     # scripts/bench_suite.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench_* modules beside this script
from bench_common import (DTYPES, MODELS, ROOT, bench_inception, bench_one, gaxp_step,  # noqa: E402,F401
                          jax_copy, matmul_peak, pipeline_rate, program_gflop, time_jax)
from bench_torch import TORCH_MODELS, time_torch, torch_matmul_peak  # noqa: E402,F401
from bench_population import bench_population, bench_population_end_to_end  # noqa: E402
from bench_suite import gpu_suite  # noqa: E402


def bench_reliability(model: str, batch: int, args) -> dict:
    """Cost of the non-finite guard (interleaved step times with the guard on and off) and the
    checkpoint save (blocking part, and until written) and restore times."""
    import jax

    from gaxp import sharding

    with tempfile.TemporaryDirectory() as tmp:
        on = gaxp_step(model, batch, f"{tmp}/on", args.host_devices, full=True)
        off = gaxp_step(model, batch, f"{tmp}/off", args.host_devices, ("trainer.guard.enabled=false",))
        states = {"on": time_jax(*on[:4], 2)[1], "off": time_jax(*off[:4], 2)[1]}
        times = {"on": [], "off": []}
        for _ in range(args.rounds):
            for name, b in (("on", on), ("off", off)):
                ms, states[name] = time_jax(b[0], states[name], b[2], b[3], args.steps)
                times[name].append(ms)
        run, ckpt, batches, state = on[7], on[8], on[4], states["on"]
        block, written, restore = [], [], []
        replicated = sharding.replicated(run.mesh)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
        ckpt.save(999, state, batches.iterator, {})  # compiles the integrity pass: not timed
        ckpt.wait()
        for i in range(args.rounds):
            jax.block_until_ready(state)
            t = time.perf_counter()
            ckpt.save(1000 + i, state, batches.iterator, {})
            block.append(time.perf_counter() - t)
            ckpt.wait()
            written.append(time.perf_counter() - t)
            t = time.perf_counter()
            jax.block_until_ready(ckpt.restore_latest_good(abstract, batches.iterator)[0])
            restore.append(time.perf_counter() - t)
        ckpt.close()
    on_ms, off_ms = statistics.median(times["on"]), statistics.median(times["off"])
    return {"model": model, "batch": batch, "guard_on_ms": on_ms, "guard_off_ms": off_ms,
            "guard_cost": on_ms / off_ms - 1, "ckpt_save_block_s": statistics.median(block),
            "ckpt_save_written_s": statistics.median(written),
            "ckpt_restore_s": statistics.median(restore),
            "state_mb": sum(x.nbytes for x in jax.tree.leaves(state)) / 2**20}


def worker(lib: str, model: str, batch: int, args) -> dict:
    """One side of ``--compare torch``, in its own process: warm up, then ``--rounds`` rounds of
    ``--steps`` steps; the median ms per step (``model == "peak"``: the library's matmul peak)."""
    if lib.endswith("-peak"):
        return {"lib": lib, "peak": matmul_peak() if lib == "jax-peak" else torch_matmul_peak()}
    if lib == "torch":
        import torch

        torch.set_num_threads(args.torch_threads or os.cpu_count())
        if args.torch_malloc == "gaxp":
            from gaxp.xla import tune_host_allocator

            tune_host_allocator()
        step = TORCH_MODELS[model](batch)
        for _ in range(3):
            step()
        times = [time_torch(step, args.steps) for _ in range(args.rounds)]
        return {"lib": lib, "ms": statistics.median(times)}
    with tempfile.TemporaryDirectory() as tmp:
        compiled, state, device_batch, key, batches, _, gflop = gaxp_step(model, batch, tmp)
        state = time_jax(compiled, state, device_batch, key, 3)[1]
        times, real = [], []
        for _ in range(args.rounds):
            ms, state = time_jax(compiled, state, device_batch, key, args.steps)
            times.append(ms)
            ms, state = time_jax(compiled, state, None, key, args.steps, batches)
            real.append(ms)
    return {"lib": lib, "ms": statistics.median(times), "real_data_ms": statistics.median(real),
            "pipeline_rate": pipeline_rate(times, real), "gflop": gflop}


def compare_torch(args) -> tuple[list[dict], float]:
    """gaxp's compiled step against the same networks in eager torch: the two run as separate
    processes, alternately (``--processes`` of each per row), so background load falls on both
    alike. Per row: the medians of the processes' medians, the ratio torch / gaxp (> 1: gaxp is
    faster; also the median of the per-pair ratios), images/s, GFLOP/s by XLA's count of the
    step, and the fraction of the better of the two libraries' matmul peaks on this machine."""

    def spawn(lib: str, model: str, batch: int) -> dict:
        cmd = [sys.executable, __file__, "--worker", lib, "--rounds", str(args.rounds),
               "--steps", str(args.steps)] + (["--models", model, "--batch", str(batch)] if model else [])
        if args.torch_threads:
            cmd += ["--torch-threads", str(args.torch_threads)]
        cmd += ["--torch-malloc", args.torch_malloc]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                             env=os.environ | {"WANDB_MODE": "disabled"}).stdout
        return json.loads(out.strip().splitlines()[-1])

    peaks = {lib: max(spawn(f"{lib}-peak", "", 0)["peak"] for _ in range(2)) for lib in ("jax", "torch")}
    peak = max(peaks.values())
    print(f"matmul peak (GFLOP/s): jax {peaks['jax']:.0f}, torch {peaks['torch']:.0f}", flush=True)
    rows = []
    for model in args.models:  # the toy at its paper's batch of 100, images at 64 and 256
        for batch in args.batch or ([100] if model in ("toy_ring", "mlp") else [64, 256]):
            pairs = [(spawn("jax", model, batch), spawn("torch", model, batch))
                     for _ in range(args.processes)]
            jax_ms = statistics.median(j["ms"] for j, _ in pairs)
            torch_ms = statistics.median(t["ms"] for _, t in pairs)
            gflop = pairs[0][0]["gflop"]
            row = {"model": model, "batch": batch, "gaxp_ms": jax_ms, "torch_ms": torch_ms,
                   "speedup_vs_torch": torch_ms / jax_ms,
                   "pair_speedup": statistics.median(t["ms"] / j["ms"] for j, t in pairs),
                   "gaxp_images_per_s": batch / jax_ms * 1000,
                   "torch_images_per_s": batch / torch_ms * 1000, "gflop_per_step": gflop,
                   "gaxp_gflop_per_s": gflop / jax_ms * 1000, "torch_gflop_per_s": gflop / torch_ms * 1000,
                   "gaxp_peak_fraction": gflop / jax_ms * 1000 / peak,
                   "torch_peak_fraction": gflop / torch_ms * 1000 / peak,
                   "pipeline_rate": statistics.median(j["pipeline_rate"] for j, _ in pairs)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows, peak


def markdown(rows: list[dict], peak: float) -> str:
    cols = ["model", "batch", "devices", "step_ms", "images_per_s", "compile_s", "gflop_per_step",
            "gflop_per_s", "peak_fraction", "real_data_ms", "pipeline_rate", "torch_ms",
            "speedup_vs_torch", "precision", "fp32_ms", "speedup_vs_fp32", "options_ms",
            "speedup_from_options"]
    if rows and any(k in rows[0] for k in ("guard_cost", "members", "gflop_per_image", "gaxp_ms")):
        cols = list(rows[0])
    lines = [f"matmul peak: {peak:.0f} GFLOP/s" if peak else "", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r.get(c, "") for c in cols]
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                         for v in cells) + " |")
    return "\n".join(lines)


def _option(text: str) -> tuple:
    """NAME=VALUE -> (name, value): true/false as booleans, integers as int, else the string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--xla-option takes NAME=VALUE (got {text!r})")
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    return name, int(value) if value.lstrip("-").isdigit() else value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, choices=sorted(MODELS),
                   help="default: dcgan mlp (with --compare torch: toy_ring dcgan)")
    p.add_argument("--batch", nargs="+", type=int, default=None,
                   help="default: 64 256 (with --compare torch: 100 for toy_ring, 64 256 else)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (median is reported)")
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    p.add_argument("--no-torch", action="store_true", help="skip the eager PyTorch comparison")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--host-devices", type=int, default=1,
                   help="on CPU: split the host into N XLA devices and shard the batch over them")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="trainer.precision of the step; bf16 also times the fp32 step in the same "
                        "interleaved rounds and reports the speed-up")
    p.add_argument("--population", type=int, default=0, metavar="N",
                   help="instead: a population of N members against N sequential runs (throughput, "
                        "compile, memory); --host-devices shards the member axis")
    p.add_argument("--end-to-end", type=int, default=0, metavar="STEPS",
                   help="with --population: time whole gaxp-train processes of STEPS steps (the "
                        "population vs N runs one after another) instead of the compiled steps")
    p.add_argument("--inception", action="store_true",
                   help="instead: FID Inception feature extraction images/s and peak fraction "
                        "(at each --batch; --rounds x --steps batches timed)")
    p.add_argument("--reliability", action="store_true",
                   help="instead: cost of the non-finite guard, checkpoint save/restore times")
    p.add_argument("--xla-option", action="append", default=[], metavar="NAME=VALUE",
                   help="also time the step compiled with this XLA option (repeatable), in the same "
                        "interleaved rounds, e.g. xla_cpu_experimental_ynn_fusion_type=")
    p.add_argument("--compare", choices=["torch"],
                   help="instead: gaxp vs the same networks in eager torch, as separate processes "
                        "run alternately (the README's Speed table)")
    p.add_argument("--processes", type=int, default=3,
                   help="with --compare: processes of each library per row")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch's intra-op threads (default: one per core)")
    p.add_argument("--torch-malloc", choices=["system", "gaxp"], default="system",
                   help="torch's host allocator: glibc's defaults, or gaxp's (gaxp.xla)")
    p.add_argument("--gpu-suite", action="store_true",
                   help="instead: issue 15's GPU suite in one run (scripts/bench_suite.py says what)")
    p.add_argument("--smoke", action="store_true",
                   help="with --gpu-suite: the same jobs tiny (a CPU check of the whole path)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="a gaxp-train override added to every benchmarked step (repeatable)")
    p.add_argument("--worker", choices=["jax", "torch", "jax-peak", "torch-peak"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    compare = args.compare or args.worker
    args.models = args.models or (["toy_ring", "dcgan"] if compare else ["dcgan", "mlp"])
    if args.worker:
        model = args.models[0]
        print(json.dumps(worker(args.worker, model, (args.batch or [0])[0], args)))
        return 0
    args.xla_options = dict(_option(o) for o in args.xla_option)
    if args.host_devices > 1:  # must happen before JAX initialises its backend
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.host_devices}")
    os.environ.setdefault("WANDB_MODE", "disabled")
    if args.gpu_suite:

        return gpu_suite(args)
    if args.compare:
        rows, peak = compare_torch(args)
        print(markdown(rows, peak))
        if args.json:
            args.json.write_text(json.dumps({"peak_gflop_per_s": peak, "rows": rows}, indent=2))
        return 0
    args.batch = args.batch or [64, 256]
    if args.population:
        peak, rows = 0.0, []

        bench = bench_population_end_to_end if args.end_to_end else bench_population
        for m in args.models:
            for b in args.batch:
                rows.append(bench(m, b, args))
                print(json.dumps(rows[-1]), flush=True)
    elif args.inception:
        peak = matmul_peak()
        rows = [bench_inception(b, args, peak) for b in args.batch]
    elif args.reliability:
        peak = 0.0
        rows = []
        for m in args.models:
            for b in args.batch:
                rows.append(bench_reliability(m, b, args))
                print(json.dumps(rows[-1]), flush=True)
    else:
        peak = matmul_peak()
        rows = [bench_one(m, b, args, peak) for m in args.models for b in args.batch]
    print(markdown(rows, peak))
    if args.json:
        args.json.write_text(json.dumps({"peak_gflop_per_s": peak, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
