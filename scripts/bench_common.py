"""What the benchmark scripts share (imported by bench.py, bench_population.py and
bench_suite.py, which import nothing of each other upward): the benchmarked models as gaxp-train
overrides, gaxp's compiled step and its timing, XLA's FLOP count, the matmul peak, one model's
row (``bench_one``) and the Inception row (``bench_inception``)."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}  # matmul_peak's precisions
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_torch beside this script
from bench_torch import time_torch, torch_dcgan  # noqa: E402


def matmul_peak(dtype: str = "fp32", n: int | None = None, reps: int = 20) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` (fp32 | bf16) under jit, at JAX's default matmul
    precision: the device's practical peak in that precision. ``n`` defaults to 2048 on a CPU and
    8192 on an accelerator (large enough to saturate it); there each timing covers 10 products
    launched back to back, so the launch and synchronisation overhead does not count."""
    import jax
    import jax.numpy as jnp

    cpu = jax.default_backend() == "cpu"
    n = n or (2048 if cpu else 8192)
    inner = 1 if cpu else 10
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(DTYPES[dtype]))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            out = f(a)
        out.block_until_ready()
        times.append((time.perf_counter() - t) / inner)
    return 2 * n**3 / min(times) / 1e9


def count_gflop(program) -> float:
    """GFLOP of one call of a lowered or compiled program by XLA's cost analysis (0: none)."""
    try:
        cost = program.cost_analysis()
    except Exception:  # noqa: BLE001 - a backend without a cost model
        return 0.0
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    return max(float(cost.get("flops", 0.0)), 0.0) / 1e9 if cost else 0.0


def cpu_lowering(fn, *args):
    """``fn`` lowered for the host's CPU at the shapes and dtypes of ``args`` (arrays anywhere, PRNG
    keys included): the program whose XLA:CPU count ``program_gflop`` takes off CPU."""
    import jax

    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu), args)
    return jax.jit(fn).lower(*specs)


def program_gflop(lower_cpu, compiled, devices: int = 1) -> float:
    """GFLOP of one call: on CPU XLA's count of the compiled program (per device for an SPMD
    program, times ``devices``; the count of the figures in experiments/speed). Elsewhere the
    same count of the same global program compiled for the host's CPU, ``lower_cpu()`` (see
    ``cpu_lowering``): a GPU's compiled count misses the products handed to cuBLAS and cuDNN
    (jax-ml/jax#22249), and on an H200 (2026-12-04) the lowered program's count missed most
    convolutions too (Inception at batch 500: 38 of its 5,504 GFLOP; the InfoGAN step 3.9 of 19.8
    GFLOP at batch 64, 1.6 of 77.9 at 256)."""
    import jax

    if jax.default_backend() != "cpu":
        on_cpu = count_gflop(lower_cpu().compile())
        if on_cpu:
            return on_cpu
    return count_gflop(compiled) * devices


# The benchmarked models as gaxp-train overrides.
MODELS = {"dcgan": ["model.g_width=64", "model.d_width=64"], "mlp": ["experiment=toy_ring"],
          "toy_ring": ["experiment=toy_ring"], "progan": ["experiment=progan_mnist"],
          "toy": ["model=mlp", "data=ring"],
          "toy64": ["model=mlp", "data=ring", "model.g_width=64", "model.d_width=64",
                    "model.g_depth=2", "model.d_depth=2", "model.z_dim=2"],
          "resnet": ["model=resnet", "data.image_size=32", "loss=hinge"],
          "dcgan32": ["model.g_width=64", "model.d_width=64", "data.image_size=32"],
          "infogan": ["experiment=lucic_fashion", "metrics=none"]}  # Lucic et al.'s NS GAN


def gaxp_step(model: str, batch: int, out_dir: str, devices: int = 1, extra: tuple = (), *,
              full: bool = False, compiler_options: dict | None = None):
    """(compiled step, state, device batch, key, Batches, compile seconds, GFLOP per step); with
    ``full`` also the Run and its Checkpointer. ``compiler_options``: XLA options of the step."""
    import jax
    from hydra import compose, initialize_config_dir

    from gaxp import phases, tasks
    from gaxp.config import load
    from gaxp.loop import compile_step
    from gaxp.training import prepare

    overrides = MODELS[model]
    with initialize_config_dir(config_dir=str(ROOT / "gaxp" / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"data.batch_size={batch}", "logger=none",
                                          f"out_dir={out_dir}", f"trainer.devices={devices}", *extra])
    run, batches, ckpt, state, _ = prepare(load(cfg))
    key = jax.random.key(0)
    device_batch = next(batches)
    compiled, compile_s = compile_step(run, state, device_batch, key, compiler_options=compiler_options)
    spec = phases.bind(run.spec, phases.active(run.phases, int(jax.device_get(state.step))))

    def lower_cpu():
        return cpu_lowering(tasks.step_fn(run.config, spec), state, device_batch, key, {})

    out = (compiled, state, device_batch, key, batches, compile_s, program_gflop(lower_cpu, compiled, devices))
    return out + (run, ckpt) if full else out


def time_jax(compiled, state, batch, key, steps: int, batches=None):
    """(ms per step over ``steps`` steps, state); batches from ``batches`` when given (real data)."""
    import jax

    t = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, batches.take() if batches else batch, key)
    jax.block_until_ready(m)
    return (time.perf_counter() - t) / steps * 1000, state


def pipeline_rate(device_ms: list, real_ms: list) -> float:
    """The input pipeline's rate: the step on a batch already on the device over the step fed by
    the real pipeline, as the median of the ratios of rounds run back to back (a ratio of two
    medians let a load change between rounds move it by several percent)."""
    return statistics.median(d / r for d, r in zip(device_ms, real_ms))


def bench_one(model: str, batch: int, args, peak: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        overrides = tuple(getattr(args, "overrides", ()))
        compiled, state, device_batch, key, batches, compile_s, gflop_step = gaxp_step(
            model, batch, tmp, args.host_devices, (*overrides, f"trainer.precision={args.precision}"))
        state = time_jax(compiled, state, device_batch, key, 2)[1]  # warm-up
        fp32 = None  # with --precision bf16: the float32 step, timed in the same rounds
        if args.precision != "fp32":
            fp32 = list(gaxp_step(model, batch, f"{tmp}/fp32", args.host_devices, overrides))
            fp32_compile_s, fp32_gflop, fp32 = fp32[5], fp32[6], fp32[:4]
            fp32[1] = time_jax(*fp32, 2)[1]
        fp32_ms, opt_ms = [], []
        opt = None  # with --xla-option: the same step compiled with those options, same rounds
        if args.xla_options:
            opt = list(gaxp_step(model, batch, f"{tmp}/opt", args.host_devices,
                                 (*overrides, f"trainer.precision={args.precision}"),
                                 compiler_options=args.xla_options)[:4])
            opt[1] = time_jax(*opt, 2)[1]
        torch_step = None
        if model == "dcgan" and not args.no_torch:
            try:
                torch_step = torch_dcgan(batch)
                torch_step()
            except ImportError:
                torch_step = None
        jax_ms, torch_ms, real_ms = [], [], []
        for _ in range(args.rounds):  # interleave, so background load hits both alike
            ms, state = time_jax(compiled, state, device_batch, key, args.steps)
            jax_ms.append(ms)
            ms, state = time_jax(compiled, state, None, key, args.steps, batches)
            real_ms.append(ms)
            if fp32 is not None:
                ms, fp32[1] = time_jax(*fp32, args.steps)
                fp32_ms.append(ms)
            if opt is not None:
                ms, opt[1] = time_jax(*opt, args.steps)
                opt_ms.append(ms)
            if torch_step is not None:
                torch_ms.append(time_torch(torch_step, args.steps))
    ms = statistics.median(jax_ms)
    row = {"model": model, "batch": batch, "devices": args.host_devices, "step_ms": ms, "images_per_s": batch / ms * 1000,
           "compile_s": compile_s, "gflop_per_step": gflop_step, "gflop_per_s": gflop_step / ms * 1000,
           "peak_fraction": gflop_step / ms * 1000 / peak, "real_data_ms": statistics.median(real_ms)}
    row["pipeline_rate"] = pipeline_rate(jax_ms, real_ms)
    row["precision"] = args.precision
    if fp32_ms:
        row["fp32_ms"] = statistics.median(fp32_ms)
        row["speedup_vs_fp32"] = row["fp32_ms"] / ms
        row["fp32_gflop_per_step"], row["fp32_compile_s"] = fp32_gflop, fp32_compile_s
    if opt_ms:
        row["options_ms"] = statistics.median(opt_ms)
        row["speedup_from_options"] = ms / row["options_ms"]
    if torch_ms:
        row["torch_ms"] = statistics.median(torch_ms)
        row["speedup_vs_torch"] = row["torch_ms"] / ms
    return row


def jax_copy(tree):
    """A copy of a pytree of arrays (the steps donate their state)."""
    import jax

    return jax.tree.map(lambda x: x.copy(), tree)


def bench_inception(batch: int, args, peak: float) -> dict:
    """FID Inception feature extraction (gaxp.metrics.inception.apply: 28 px uint8 MNIST-sized
    images -> 8-bit levels, TF1 bilinear resize to 299 px, InceptionV3 to the 2048-d pool) on
    random weights (the speed does not depend on their values): images/s, XLA's GFLOP per image,
    and the fraction of the measured matmul peak."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gaxp import xla
    from gaxp.metrics import inception

    variables = jax.jit(inception.InceptionV3(logits=False).init)(
        jax.random.key(0), jnp.zeros((1, inception.SIZE, inception.SIZE, 3)))
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, 28, 28, 1), np.uint8))
    t0 = time.perf_counter()
    lowered = jax.jit(inception.apply).lower(variables, x)
    compiled = lowered.compile(compiler_options=xla.options())
    compile_s = time.perf_counter() - t0
    gflop_batch = program_gflop(lambda: cpu_lowering(inception.apply, variables, x), compiled)
    compiled(variables, x)[0].block_until_ready()  # warm-up
    times = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            out = compiled(variables, x)
        out[0].block_until_ready()
        times.append((time.perf_counter() - t0) / args.steps * 1000)
    ms = statistics.median(times)
    return {"model": "inception", "batch": batch, "devices": 1, "step_ms": ms,
            "images_per_s": batch / ms * 1000, "compile_s": compile_s,
            "gflop_per_step": gflop_batch, "gflop_per_image": gflop_batch / batch,
            "gflop_per_s": gflop_batch / ms * 1000, "peak_fraction": gflop_batch / ms * 1000 / peak,
            "device": jax.devices()[0].device_kind}


