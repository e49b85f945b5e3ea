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
    # one population process against two single runs: each single run pays its own start-up
    assert row["sequential_s"] > row["population_s"] > 0
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


@pytest.mark.parametrize("model,batch", [("toy_ring", 8), ("dcgan", 4)])
def test_torch_side_has_gaxp_networks_parameter_counts(model, batch, tmp_path):
    """The eager torch networks of --compare torch are the same networks: G's and D's parameter
    counts equal those of gaxp's step for the same model."""
    pytest.importorskip("torch")
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
