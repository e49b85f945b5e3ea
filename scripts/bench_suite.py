"""``scripts/bench.py --gpu-suite``: issue 15's GPU figures in one run (docs/speed.md, "On a GPU").

DCGAN-32 and ResNet-32 steps at batch 64 and 256 in fp32 and bf16 against the matmul peak of each
precision, populations of 64 toys and 8 DCGANs against one member, Inception images/s; one
markdown row as each job finishes and ``--json`` rewritten after each, so a run cut short still
leaves its figures. ``--smoke`` runs the same jobs tiny: a CPU test proves the whole path.
"""

from __future__ import annotations

import json
import subprocess
import time

from bench_common import ROOT, bench_inception, bench_one, matmul_peak
from bench_population import bench_population

# --gpu-suite: issue 15's figures in one run, the jobs in the order they run (the goals' first).
# ``--smoke`` runs the same jobs tiny, so a CPU test proves the whole path end to end.
SUITE = {"steps": [("resnet", 64), ("resnet", 256), ("dcgan32", 64), ("dcgan32", 256)],
         "populations": [("toy", 64, 64), ("dcgan32", 64, 8)],  # (model, batch, members)
         "inception_batch": 500, "rounds": 5, "steps_per_round": 20, "overrides": []}
SMOKE = {"steps": [("resnet", 2), ("dcgan32", 2)], "populations": [("toy", 8, 2), ("dcgan32", 2, 2)],
         "inception_batch": 2, "rounds": 1, "steps_per_round": 1,
         "overrides": ["model.g_width=8", "model.d_width=8"]}
NAMES = {"resnet": "ResNet-32", "dcgan32": "DCGAN-32", "toy": "toy GAN"}
GOALS = {"resnet_bf16_peak_fraction": 0.5, "toy_population_vs_one": 20.0}  # issue 15's


def suite_meta(smoke: bool) -> dict:
    import datetime
    import platform

    import jax

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"suite": "gpu", "smoke": smoke, "device": jax.devices()[0].device_kind,
            "platform": jax.default_backend(), "device_count": jax.device_count(),
            "jax": jax.__version__, "python": platform.python_version(),
            "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit or None}


SUITE_COLS = ["job", "batch", "precision", "ms", "images_per_s", "gflop_per_s", "peak_fraction",
              "vs_one_member", "compile_s"]


def suite_line(row: dict) -> str:
    """One markdown table row of the suite (a failed job: its error)."""
    if "error" in row:
        return f"| {row['job']} | failed: {row['error'][:120]} |" + " |" * (len(SUITE_COLS) - 2)
    cells = [row.get(c, "") for c in SUITE_COLS]
    return "| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in cells) + " |"


def suite_jobs(plan: dict, peaks: dict, args):
    """(job name, function returning the job's rows) in the order they run."""
    import types

    def ns(**kw):
        return types.SimpleNamespace(host_devices=1, xla_options={}, no_torch=True,
                                     rounds=plan["rounds"], steps=plan["steps_per_round"],
                                     overrides=plan["overrides"], **kw)

    def steps(model, batch):
        # the bf16 step with the fp32 one timed in the same interleaved rounds (bench_one)
        r = bench_one(model, batch, ns(precision="bf16"), peaks["bf16"])
        fp32_ms = r["fp32_ms"]
        fp32 = {"job": f"{NAMES[model]} step", "model": model, "batch": batch, "precision": "fp32",
                "ms": fp32_ms, "images_per_s": batch / fp32_ms * 1000,
                "gflop_per_step": r["fp32_gflop_per_step"],
                "gflop_per_s": r["fp32_gflop_per_step"] / fp32_ms * 1000,
                "peak_fraction": r["fp32_gflop_per_step"] / fp32_ms * 1000 / peaks["fp32"],
                "compile_s": r["fp32_compile_s"]}
        bf16 = {"job": f"{NAMES[model]} step", "model": model, "batch": batch, "precision": "bf16",
                "ms": r["step_ms"], "images_per_s": r["images_per_s"],
                "gflop_per_step": r["gflop_per_step"], "gflop_per_s": r["gflop_per_s"],
                "peak_fraction": r["peak_fraction"], "compile_s": r["compile_s"],
                "speedup_vs_fp32": r["speedup_vs_fp32"], "real_data_ms": r["real_data_ms"],
                "pipeline_rate": r["pipeline_rate"]}
        return [fp32, bf16]

    def population(model, batch, n):
        r = bench_population(model, batch, ns(precision="fp32", population=n))
        return [{"job": f"population of {n} {NAMES[model]}s", "model": model, "batch": batch,
                 "members": n, "precision": "fp32", "ms": r["population_ms"],
                 "images_per_s": n * batch / r["population_ms"] * 1000, "one_member_ms": r["one_ms"],
                 "vs_one_member": r["throughput_vs_sequential"],
                 "compile_s": r["compile_population_s"], "compile_one_s": r["compile_one_s"],
                 "memory_population_mb": r["memory_population_mb"], "memory_one_mb": r["memory_one_mb"]}]

    def inception():
        b = plan["inception_batch"]
        r = bench_inception(b, ns(), peaks["fp32"])
        return [{"job": "Inception features", "model": "inception", "batch": b, "precision": "fp32",
                 "ms": r["step_ms"], "images_per_s": r["images_per_s"], "gflop_per_step": r["gflop_per_step"],
                 "gflop_per_s": r["gflop_per_s"], "peak_fraction": r["peak_fraction"],
                 "compile_s": r["compile_s"]}]

    (toy, *pops) = plan["populations"]
    yield f"population {toy}", lambda: population(*toy)
    for model, batch in plan["steps"]:
        yield f"steps {model} {batch}", lambda m=model, b=batch: steps(m, b)
    for pop in pops:
        yield f"population {pop}", lambda p=pop: population(*p)
    yield "inception", inception


def suite_goals(rows: list[dict]) -> dict:
    """Issue 15's goals against the rows there are: value, target, met (None: no row)."""
    resnet = [r for r in rows if r.get("model") == "resnet" and r.get("precision") == "bf16" and "error" not in r]
    toy = [r for r in rows if r.get("model") == "toy" and "members" in r and "error" not in r]
    best = max(resnet, key=lambda r: r["peak_fraction"], default=None)
    values = {"resnet_bf16_peak_fraction": best and best["peak_fraction"],
              "toy_population_vs_one": toy[0]["vs_one_member"] if toy else None}
    return {k: {"value": v, "target": GOALS[k], "met": None if v is None else v >= GOALS[k],
                **({"batch": best["batch"]} if k.startswith("resnet") and best else {})}
            for k, v in values.items()}


def gpu_suite(args) -> int:
    """Run issue 15's suite (``--smoke``: tiny), printing each markdown row as it finishes and
    rewriting ``--json`` after each, so a run cut short still leaves its figures. 1 if a job failed."""
    import traceback

    t0 = time.perf_counter()
    plan = SMOKE if args.smoke else SUITE
    result = {**suite_meta(args.smoke), "plan": plan, "peaks_gflop_per_s": {}, "rows": [],
              "goals": {}, "failed": []}

    def save():
        result["goals"] = suite_goals(result["rows"])
        result["elapsed_s"] = time.perf_counter() - t0
        if args.json:
            tmp = args.json.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=2))
            tmp.replace(args.json)

    def emit(rows):
        for row in rows:
            row["elapsed_s"] = round(time.perf_counter() - t0, 1)
            result["rows"].append(row)
            print(suite_line(row), flush=True)
        save()

    print(f"gaxp GPU suite{' (smoke)' if args.smoke else ''}: {result['device']} ({result['platform']}), "
          f"jax {result['jax']}, {result['date']}, commit {result['commit']}, default matmul "
          f"precision {result['default_matmul_precision']}\n", flush=True)
    print("| " + " | ".join(SUITE_COLS) + " |\n|" + "---|" * len(SUITE_COLS), flush=True)
    peaks = result["peaks_gflop_per_s"]
    for dtype in ("fp32", "bf16"):
        peaks[dtype] = matmul_peak(dtype, reps=3 if args.smoke else 20)
        emit([{"job": "matmul peak", "precision": dtype, "gflop_per_s": peaks[dtype], "peak_fraction": 1.0}])
    for name, job in suite_jobs(plan, peaks, args):
        try:
            emit(job())
        except Exception as e:  # noqa: BLE001 - one failed job must not cost the others' figures
            traceback.print_exc()
            result["failed"].append(name)
            emit([{"job": name, "error": f"{type(e).__name__}: {e}"}])
    print(flush=True)
    for k, g in result["goals"].items():
        print(f"goal {k} >= {g['target']}: {g['value'] if g['value'] is None else round(g['value'], 3)}"
              f" ({'met' if g['met'] else 'not met' if g['met'] is not None else 'no figure'})")
    print(f"elapsed {result['elapsed_s']:.0f} s" + (f"; JSON in {args.json}" if args.json else ""), flush=True)
    return 1 if result["failed"] else 0
