"""Sweeps through the real console script: an Optuna search (with a failing trial), bad sweep and
regularizer input, and scripts/compare.py on a real multirun checked against the jsonl files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import gaxp_train

from gaxp.logging.writers import run_tags

COMPARE = Path(__file__).resolve().parents[1] / "scripts" / "compare.py"
TINY = ("model.g_width=16", "model.d_width=16", "data.batch_size=16", "logger=none",
        "trainer.progress=false")


@pytest.mark.parametrize("args,message", [
    (["regularizer=[r1,r3]"], "unknown regularizer 'r3'; valid: bcr,"),
    (["hydra/sweeper=nevergrad"], "unknown hydra/sweeper 'nevergrad'; valid: basic, optuna"),
    (["-m", "hparams_search=toy_ring_optuna", "+hydra.sweeper.params.loss='choice(ns, hinge'"],
     "search space hydra.sweeper.params.loss=choice(ns, hinge does not parse"),
    (["-m", "hparams_search=toy_ring_optuna", "optim.d.lrate=interval(1e-5,1e-3)"],
     "the search space names optim.d.lrate, which is not a config key"),
    (["model=mlp", "data=ring", "data.batch_size=96", "regularizer=pacgan",
      "regularizer.pacgan.pack=5"], "data.batch_size=96 is not divisible by the PacGAN pack size 5"),
    (["model=mlp", "data=ring", "data.batch_size=32", "regularizer=diffaugment"],
     "needs image data"),
])
def test_bad_sweep_or_regularizer_input_exits_2_with_one_line(tmp_path, args, message):
    result = gaxp_train(*args, "logger=none", f"hydra.run.dir={tmp_path}/run",
                        "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "sweep").exists()


def test_optuna_sweep_runs_trials_and_records_a_failing_one(tmp_path):
    # TPE with sampler seed 0 draws z_dim=0 (fails validation) first, then z_dim=4.
    result = gaxp_train("-m", "hparams_search=toy_ring_optuna", "hydra.sweeper.n_trials=2",
                        "model.z_dim=choice(0,4)", "trainer.steps=2", "trainer.log_every=1", *TINY,
                        "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert sorted(p.parent.name for p in sweep.glob("*/summary.json")) == ["1"]
    failures = [json.loads(x) for x in (sweep / "failures.jsonl").read_text().splitlines()]
    assert [f["job"] for f in failures] == [0] and "model.z_dim must be > 0" in failures[0]["error"]
    best = (sweep / "optimization_results.yaml").read_text()
    final = json.loads((sweep / "1" / "summary.json").read_text())["final"]
    assert f"best_value: {final['eval/hq_frac']}" in best  # the objective: a quality metric
    assert "model.z_dim: 4" in best and "train/r1" in final


def test_wandb_runs_are_tagged_by_loss_and_regularizer():
    from dataclasses import asdict

    from conftest import compose

    from gaxp.config import load

    c = load(compose("loss=wgan_gp", "regularizer=[diffaugment]", "logger.wandb.tags=[mine]"))
    assert run_tags(c.logger.wandb, asdict(c)) == ["mine", "loss:wgan", "reg:diffaugment",
                                                   "reg:wgan_gp"]


def _hand_stats(sweep: Path, loss: str, metric: str):
    finals, bests = [], []
    for job in sweep.glob("[0-9]*"):
        if f"loss={loss}" not in (job / ".hydra" / "overrides.yaml").read_text():
            continue
        values = [json.loads(x)[metric] for x in (job / "metrics.jsonl").read_text().splitlines()]
        finals.append(values[-1])
        bests.append(min(values))
    se = lambda v: np.std(v, ddof=1) / np.sqrt(len(v))  # noqa: E731
    return np.mean(finals), se(finals), np.mean(bests), se(bests)


def test_compare_summarizes_a_real_multirun(tmp_path):
    result = gaxp_train("-m", "model=mlp", "data=ring", "loss=ns,hinge", "trainer.seed=0,1",
                        "trainer.steps=4", "trainer.log_every=1", *TINY, "hydra.sweep.dir=sweep",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep, out = tmp_path / "sweep", tmp_path / "cmp"
    run = subprocess.run([sys.executable, str(COMPARE), str(sweep), "--metrics", "train/d_loss",
                          "--out", str(out), "--samples"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    dump = json.loads((out / "compare.json").read_text())
    assert sorted(dump["variants"]) == ["loss=hinge", "loss=ns"]
    # --samples: one sheet, a panel per variant (2 side by side at 110 dpi x 3.6 in)
    import matplotlib.pyplot as plt

    sheet = plt.imread(out / "samples.png")
    assert str(out / "samples.png") in dump["plots"] and sheet.shape[1] == round(2 * 3.6 * 110)
    md = (out / "compare.md").read_text()
    for loss in ("ns", "hinge"):
        v = dump["variants"][f"loss={loss}"]
        assert sorted(v["seeds"]) == ["0", "1"]
        f_mean, f_se, b_mean, b_se = _hand_stats(sweep, loss, "train/d_loss")
        got = v["train/d_loss"]
        np.testing.assert_allclose([got["final"]["mean"], got["final"]["se"], got["best"]["mean"],
                                    got["best"]["se"]], [f_mean, f_se, b_mean, b_se], rtol=1e-9)
        assert f"| `loss={loss}` | 2 | 0 | {f_mean:.4g} ± {f_se:.4g} | {b_mean:.4g} ± {b_se:.4g} |" in md
    for name in ("train_d_loss_curves.png", "train_d_loss_final_box.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    help_ = subprocess.run([sys.executable, str(COMPARE), "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "multirun" in help_.stdout


def test_compare_renames_rows_in_order_and_shows_final_only():
    """--rename NEW=VARIANT relabels and orders the rows; --final-only drops the best columns."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare", COMPARE)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    rows = lambda *ys: [{"step": 100 * (i + 1), "eval/modes": y} for i, y in enumerate(ys)]  # noqa: E731
    runs = [{"variant": f"regularizer.pacgan.pack={p}", "seed": str(s), "dir": "-",
             "rows": rows(1.0, p + s)} for p in (1, 2, 10) for s in (0, 1)]
    order = compare.rename(runs, ["GAN=regularizer.pacgan.pack=1", "PacGAN2=regularizer.pacgan.pack=2"])
    assert order == ["GAN", "PacGAN2"]
    assert [r["variant"] for r in runs[::2]] == ["GAN", "PacGAN2", "regularizer.pacgan.pack=10"]
    summary = compare.summarize(runs, ["eval/modes"], {"eval/modes"})
    md = compare.table(summary, ["eval/modes"], [], {}, order, ("final",))
    lines = [line for line in md.splitlines() if line.startswith("| `")]
    se = np.std([1, 2], ddof=1) / np.sqrt(2)
    assert lines == [f"| `GAN` | 2 | 0 | 1.5 ± {se:.4g} |", f"| `PacGAN2` | 2 | 0 | 2.5 ± {se:.4g} |",
                     f"| `regularizer.pacgan.pack=10` | 2 | 0 | 10.5 ± {se:.4g} |"]
    assert "eval/modes best" not in md and "| variant | seeds | failed | eval/modes final |" in md
    with pytest.raises(ValueError, match="no variant 'pack=3'; variants: GAN, PacGAN2"):
        compare.rename(runs, ["X=pack=3"])
    with pytest.raises(ValueError, match="NEW=VARIANT"):
        compare.rename(runs, ["GAN"])
