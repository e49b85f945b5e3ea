"""scripts/bench.py runs end to end on the real step (tiny sizes) and reports what it promises."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("gaxp_bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _suite():
    """scripts/bench_suite.py (--gpu-suite), which imports bench.py beside it."""
    _bench()  # puts scripts/ on sys.path
    import bench_suite

    return bench_suite


def test_step_rows_with_xla_options_timed_alongside(tmp_path):
    out = tmp_path / "bench.json"
    assert _bench().main(["--models", "toy64", "--batch", "16", "--rounds", "1", "--steps", "2",
                          "--no-torch", "--json", str(out),
                          "--xla-option", "xla_cpu_experimental_ynn_fusion_type="]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert result["peak_gflop_per_s"] > 0
    assert row["model"] == "toy64" and row["batch"] == 16
    assert row["step_ms"] > 0 and row["options_ms"] > 0 and row["real_data_ms"] > 0
    assert row["speedup_from_options"] == pytest.approx(row["step_ms"] / row["options_ms"])
    assert row["gflop_per_step"] > 0  # XLA's cost analysis of the compiled step


def test_population_rows_with_xla_options(tmp_path, capsys):
    assert _bench().main(["--population", "2", "--models", "toy64", "--batch", "16", "--rounds",
                          "1", "--steps", "1", "--xla-option",
                          "xla_cpu_experimental_ynn_fusion_type="]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    for prefix in ("", "opt_"):
        assert row[f"{prefix}throughput_vs_sequential"] == pytest.approx(
            2 * row[f"{prefix}one_ms"] / row[f"{prefix}population_ms"])
    assert row["memory_population_mb"] > row["memory_one_mb"] > 0


def test_bad_xla_option_is_one_line():
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        _bench().main(["--models", "toy64", "--xla-option", "no_equals_sign"])


def test_population_end_to_end_runs_real_processes(tmp_path):
    out = tmp_path / "bench.json"
    assert _bench().main(["--population", "2", "--end-to-end", "3", "--models", "toy64", "--batch",
                          "16", "--rounds", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["members"] == 2 and row["steps"] == 3
    # what the benchmark reports, not how fast it was (speed is the benchmark's, not a test's)
    assert row["sequential_s"] > 0 and row["population_s"] > 0
    assert row["end_to_end_vs_sequential"] == pytest.approx(row["sequential_s"] / row["population_s"])


def test_inception_row_reports_images_per_s_and_peak_fraction(tmp_path):
    out = tmp_path / "bench.json"
    assert _bench().main(["--inception", "--batch", "2", "--rounds", "1", "--steps", "1",
                          "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["model"] == "inception" and row["images_per_s"] > 0
    assert 10.0 < row["gflop_per_image"] < 12.5  # XLA counts 2 FLOP per multiply-add: ~5.5 G MACs
    assert row["peak_fraction"] == pytest.approx(row["gflop_per_s"] / result["peak_gflop_per_s"])


@pytest.mark.parametrize("model,batch", [("toy_ring", 8), ("dcgan", 4), ("infogan", 4)])
def test_torch_side_has_gaxp_networks_parameter_counts(model, batch, tmp_path, monkeypatch):
    """The eager torch networks of --compare torch are the same networks: G's and D's parameter
    counts equal those of gaxp's step for the same model."""
    pytest.importorskip("torch")
    if model == "infogan":  # Fashion-MNIST's IDX files: a fixture of the format, not the data
        from test_lucic import write_fashion

        write_fashion(tmp_path / "fashion")
        monkeypatch.setenv("GAXP_FASHION_MNIST_DIR", str(tmp_path / "fashion"))
    bench = _bench()
    step = bench.TORCH_MODELS[model](batch)
    step()  # runs
    _, state, *_ = bench.gaxp_step(model, batch, str(tmp_path))
    count = lambda tree: sum(x.size for x in __import__("jax").tree.leaves(tree))  # noqa: E731
    g, d = step.nets
    assert sum(p.numel() for p in g.parameters()) == count(state.g_params)
    assert sum(p.numel() for p in d.parameters()) == count(state.d_params)


def test_compare_torch_runs_both_sides_as_processes(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "compare.json"
    assert _bench().main(["--compare", "torch", "--models", "toy_ring", "--batch", "8", "--rounds",
                          "1", "--steps", "2", "--processes", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert result["peak_gflop_per_s"] > 0
    assert row["model"] == "toy_ring" and row["batch"] == 8
    assert row["speedup_vs_torch"] == pytest.approx(row["torch_ms"] / row["gaxp_ms"])
    assert row["gaxp_peak_fraction"] == pytest.approx(
        row["gflop_per_step"] / row["gaxp_ms"] * 1000 / result["peak_gflop_per_s"])


def test_program_gflop_counts_the_program_compiled_for_the_cpu_off_cpu(monkeypatch, tmp_path):
    """Off CPU, a GPU's compiled count misses the library calls (jax-ml/jax#22249) and the lowered
    one missed most convolutions on an H200: there the step is compiled again for the host's CPU
    at the same shapes and dtypes (PRNG keys too), whose XLA:CPU count equals the CPU rows'. On
    CPU the compiled count stays (x devices: the per-device SPMD program); either falls back to
    the other when it has no count."""
    import sys

    import jax

    bench = _bench()
    common = sys.modules["bench_common"]
    lowerings = []

    def capture(lower_cpu, compiled, devices=1):
        lowerings.append(lower_cpu)
        return real(lower_cpu, compiled, devices)

    real = common.program_gflop
    monkeypatch.setattr(common, "program_gflop", capture)
    compiled, *_, gflop = bench.gaxp_step("dcgan", 8, str(tmp_path))
    direct = common.count_gflop(compiled)
    assert direct > 0 and gflop == pytest.approx(direct)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    # the step again, from arrays on the default device: the same count to rounding
    assert real(lowerings[0], compiled, 2) == pytest.approx(direct, rel=1e-6)

    class Program:
        def __init__(self, flops):
            self.flops = flops

        def cost_analysis(self):
            return None if self.flops is None else [{"flops": self.flops}]

        def compile(self):
            return self

    assert real(lambda: Program(None), Program(1e6)) == pytest.approx(0.001)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert real(lambda: Program(4e9), Program(1e6), 2) == pytest.approx(0.002)


def test_gpu_suite_plan_is_issue_15s():
    """--gpu-suite's full plan (not run here): DCGAN-32 and ResNet-32 at 64 and 256 (each in fp32
    and bf16), 64 toys and 8 DCGANs against one member, Inception; the smoke plan runs every kind
    of job; dcgan32 is the classic DCGAN at 32 px."""
    from conftest import compose

    bench = _bench()
    suite = _suite()
    plan, smoke = suite.SUITE, suite.SMOKE
    assert sorted(plan["steps"]) == [("dcgan32", 64), ("dcgan32", 256), ("resnet", 64), ("resnet", 256)]
    assert [(m, n) for m, _, n in plan["populations"]] == [("toy", 64), ("dcgan32", 8)]
    assert plan["inception_batch"] > 0 and not plan["overrides"]
    assert {m for m, _ in smoke["steps"]} == {m for m, _ in plan["steps"]}
    assert [m for m, *_ in smoke["populations"]] == [m for m, *_ in plan["populations"]]
    cfg = compose(*bench.MODELS["dcgan32"])
    assert (cfg.model.name, cfg.model.g_width, cfg.model.d_width, cfg.data.image_size) == ("dcgan", 64, 64, 32)


@pytest.mark.slow  # every job of the suite, tiny: ~2 min on 2 cores (~30 s with the compile cache warm)
def test_gpu_suite_smoke_runs_every_job_through_the_shell_script(tmp_path):
    """scripts/bench_gpu.sh with --smoke on CPU: the markdown rows as the jobs finish, the JSON
    with real figures for every job of the plan, and the goals computed from them."""
    import os
    import subprocess
    import sys

    env = os.environ | {"OUT": str(tmp_path), "PYTHON": sys.executable, "BENCH_ARGS": "--smoke",
                        "BENCH_WHEELS": str(tmp_path / "none")}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "bench_gpu.sh")], env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["smoke"] and result["platform"] == "cpu" and result["device"] and result["jax"]
    assert not result["failed"]
    rows = result["rows"]
    peaks = result["peaks_gflop_per_s"]
    assert peaks["fp32"] > 0 and peaks["bf16"] > 0
    smoke = _suite().SMOKE
    for model, batch in smoke["steps"]:
        for precision in ("fp32", "bf16"):
            (row,) = [r for r in rows if (r.get("model"), r.get("batch"), r.get("precision"))
                      == (model, batch, precision) and "members" not in r]
            assert row["images_per_s"] > 0 and row["gflop_per_step"] > 0 and row["compile_s"] > 0
            assert row["images_per_s"] == pytest.approx(batch / row["ms"] * 1000)
            assert 0 < row["peak_fraction"] < 1.5
            assert row["peak_fraction"] == pytest.approx(row["gflop_per_s"] / peaks[precision])
    for model, batch, n in smoke["populations"]:
        (row,) = [r for r in rows if r.get("model") == model and r.get("members") == n]
        assert row["vs_one_member"] == pytest.approx(n * row["one_member_ms"] / row["ms"])
        assert row["vs_one_member"] > 0 and row["images_per_s"] > 0
    (inc,) = [r for r in rows if r.get("model") == "inception"]
    assert inc["images_per_s"] > 0 and 0 < inc["peak_fraction"] < 1.5
    goals = result["goals"]
    assert goals["toy_population_vs_one"]["value"] > 0 and goals["resnet_bf16_peak_fraction"]["value"] > 0
    # the log: the header, one markdown line per row, the goals
    log = (tmp_path / "gpu.log").read_text()
    assert "gaxp GPU suite (smoke)" in log and "goal toy_population_vs_one" in log
    assert sum(line.startswith("| ") for line in log.splitlines()) == len(rows) + 1  # + header
