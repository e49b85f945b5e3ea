"""A researcher's own package, outside the gaxp tree, selected and swept by the real `gaxp-train`:
a loss, a penalty, an architecture, a data source, a metric and a task, each with its own settings
(experiments/extending/my_gan, copied to a temporary directory). Also the bad inputs of plugins and the
Hydra flags gaxp must leave to Hydra."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import xla_flags

BIN = Path(sys.executable).with_name("gaxp-train")
PKG = Path(__file__).resolve().parents[1] / "experiments" / "extending"
ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ("plugins=[my_gan.ideas]", "hydra.searchpath=[pkg://my_gan.conf]")
TINY = ("trainer.progress=false", "logger=none", "trainer.log_every=5", "trainer.sample_every=10",
        "trainer.ckpt_every=10", "trainer.steps=10", "model.g_width=16", "model.d_width=16",
        "model.g_depth=2", "model.d_depth=2", "data.batch_size=32")


@pytest.fixture
def plugin_dir(tmp_path):
    """The plugin package in a directory of its own (not importable from the repository)."""
    shutil.copytree(PKG / "my_gan", tmp_path / "pkg" / "my_gan")
    return tmp_path / "pkg"


def run(*args, cwd, pythonpath=None, timeout=600, cmd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="offline", XLA_FLAGS=xla_flags(1))
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([*(cmd or [str(BIN)]), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_every_kind_of_plugin_trains_with_its_own_settings(plugin_dir, tmp_path):
    out = tmp_path / "run"
    result = run(*PLUGIN, *TINY, "loss=soft_hinge", "loss.margin=0.5", "model=wide_mlp",
                 "model.width=8", "data=ring5", "task=gan_counted", "regularizer=[centered_gp]",
                 "regularizer.centered_gp.center=1.0", "metrics=default",
                 "metrics.names=[modes,mean_radius]", "metrics.n_fake=500", "metrics.every=10",
                 f"hydra.run.dir={out}", cwd=tmp_path, pythonpath=plugin_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((out / "run.json").read_text())["config"]
    assert saved["loss"]["margin"] == 0.5 and saved["model"]["width"] == 8
    train_rows = [r for r in rows(out) if "train/d_loss" in r]
    assert [r["step"] for r in train_rows] == [5, 10]
    assert all(0.0 <= r["train/inside_disc"] <= 1.0 for r in train_rows)  # the task's own metric
    assert all(r["train/centered_gp"] > 0 for r in train_rows)  # the penalty's term
    evals = [r for r in rows(out) if "eval/mean_radius" in r]
    assert evals and evals[-1]["eval/radius_gap"] >= 0  # the registered metric
    # it receives metrics.n_real (default n_fake) real points of the mixture: radius 1.5, sigma 0.02
    assert evals[-1]["eval/n_real"] == 500
    assert abs(evals[-1]["eval/real_radius"] - 1.5) < 0.01
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 10 and (out / "samples" / "step_0000010.png").exists()
    # the arch's own hyperparameter builds other networks: another width, another digest
    other = tmp_path / "other"
    result = run(*PLUGIN, *TINY, "loss=soft_hinge", "model=wide_mlp", "model.width=4",
                 "data=ring5", "task=gan_counted", f"hydra.run.dir={other}", cwd=tmp_path,
                 pythonpath=plugin_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((other / "summary.json").read_text())["digest"] != summary["digest"]


def test_a_plugin_loss_is_swept_and_ranked_against_built_ins(plugin_dir, tmp_path):
    result = run("-m", *PLUGIN, *TINY, "model=mlp", "data=ring", "loss=ns,hinge,soft_hinge",
                 "trainer.seed=0,1", "metrics=default", "metrics.names=[modes]",
                 "metrics.n_fake=500", "metrics.every=10", "hydra.sweep.dir=sweep",
                 cwd=tmp_path, pythonpath=plugin_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert len(list(sweep.glob("*/summary.json"))) == 6 and not (sweep / "failures.jsonl").exists()
    cmp = run(str(sweep), "--metrics", "eval/hq_frac", "--maximize", "eval/hq_frac",
              "--rank", "eval/hq_frac", "--final-only", "--out", str(tmp_path / "cmp"), cwd=tmp_path,
              cmd=[sys.executable, str(ROOT / "scripts" / "compare.py")])
    assert cmp.returncode == 0, cmp.stderr[-3000:]
    table = (tmp_path / "cmp" / "compare.md").read_text()
    for variant in ("loss=ns", "loss=hinge", "loss=soft_hinge"):
        assert variant in table
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert "loss=soft_hinge" in json.dumps(data)
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| `")]
    means = [float(r[4].split("±")[0]) for r in rows]
    assert len(means) == 3 and means == sorted(means, reverse=True)  # ranked, best first


BROKEN = {
    "raises_on_import.py": "raise RuntimeError('this idea is not finished')\n",
    "twice.py": ("import gaxp\n\n@gaxp.register.loss('hinge')\n"
                 "def hinge():\n    return None\n"),
}


@pytest.mark.parametrize("args,message", [
    (["plugins=[no_such_module]"], "plugin no_such_module not found: no module 'no_such_module'"),
    (["plugins=[raises_on_import]"],
     "plugin raises_on_import failed to import: RuntimeError: this idea is not finished"),
    (["plugins=[twice]"], "loss 'hinge' is registered twice: at gaxp.losses.hinge ("),
    ([*PLUGIN, "loss=soft_hinge", "loss.margin=wide"], "loss.margin must be a number (got 'wide')"),
    ([*PLUGIN, "loss=soft_hinge", "+loss.margn=1"],
     "unknown key loss.margn; valid keys: margin"),
    ([*PLUGIN, "regularizer=[centered_gp]", "regularizer.centered_gp.weight=-1"],
     "regularizer.centered_gp.weight must be > 0 (got -1"),
    (["hydra.searchpath=[file:///nonexistent/gaxp-configs]"],
     "hydra.searchpath entry file:///nonexistent/gaxp-configs is not a directory"),
    (["hydra.searchpath=[pkg://no_such_pkg.conf]", "loss=soft_hinge"],
     "hydra.searchpath entry pkg://no_such_pkg.conf: no package 'no_such_pkg.conf'"),
    (["hydra.searchpath=[pkg://my_gan.conf]", "loss=soft_hinge", "trainer.steps=2"],
     "unknown loss 'soft_hinge'; valid: hinge, lsgan, minimax, ns, relativistic, wgan; an entry "
     "of your own needs its module in plugins=[...]"),
], ids=["missing", "raises", "twice", "bad-type", "unknown-key", "bad-value", "searchpath-dir",
        "searchpath-pkg", "config-without-plugin"])
def test_bad_plugin_input_is_one_line_and_exit_2(plugin_dir, tmp_path, args, message):
    for name, text in BROKEN.items():
        (plugin_dir / name).write_text(text)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "metrics.jsonl").write_text('{"step": 1}\n')
    result = run(*args, *TINY, "model=mlp", "data=ring", f"hydra.run.dir={existing}",
                 cwd=tmp_path, pythonpath=plugin_dir)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in existing.iterdir()) == ["metrics.jsonl"]  # nothing touched
    assert (existing / "metrics.jsonl").read_text() == '{"step": 1}\n'


@pytest.mark.parametrize("args,expect", [
    (["--cfg", "job"], "plugins: []"),
    (["--info", "defaults"], "Defaults List"),
    (["-sc", "install=bash"], "hydra_bash_completion"),
    (["--help"], "== Config =="),
    (["--cfg", "job", "loss=hinge", *PLUGIN], "name: hinge"),
])
def test_hydra_flags_work_as_hydra_documents_them(plugin_dir, tmp_path, args, expect):
    result = run(*args, cwd=tmp_path, pythonpath=plugin_dir, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expect in result.stdout, result.stdout[-2000:]
    assert not list(tmp_path.glob("outputs"))  # showing something runs no job


EXPERIMENT = ("# @package _global_\ndefaults:\n  - override /loss: soft_hinge\n"
              "  - override /model: mlp\n  - override /data: ring\n"
              "loss:\n  margin: 2.0\ntrainer:\n  steps: 4\n")


@pytest.mark.parametrize("how", ["config-dir", "searchpath"])
def test_an_experiment_of_the_users_own_directory(plugin_dir, tmp_path, how):
    """A user's experiment config in their own directory, found by --config-dir or by
    hydra.searchpath, composed over gaxp's groups and their plugin's."""
    conf = tmp_path / "my_conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "mine.yaml").write_text(EXPERIMENT)
    where = (["--config-dir", str(conf), "hydra.searchpath=[pkg://my_gan.conf]"]
             if how == "config-dir" else [f"hydra.searchpath=[pkg://my_gan.conf,file://{conf}]"])
    out = tmp_path / "run"
    result = run(*where, "plugins=[my_gan.ideas]", "experiment=mine", "trainer.progress=false",
                 "logger=none", "data.batch_size=32", f"hydra.run.dir={out}", cwd=tmp_path,
                 pythonpath=plugin_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = json.loads((out / "run.json").read_text())["config"]
    assert cfg["loss"]["name"] == "soft_hinge" and cfg["loss"]["margin"] == 2.0
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


def test_a_plugin_task_with_a_warm_up_phase_that_trains_d_alone(plugin_dir, tmp_path, monkeypatch):
    """task=gan_warmup (my_gan.ideas) declares two phases: D alone for 4 steps, then both. Each
    compiles on its own; G is untouched through the warm-up and trains after it, D trains in both."""
    out = tmp_path / "run"
    result = run(*PLUGIN, "model=mlp", "data=ring", "task=gan_warmup", "trainer.progress=false",
                 "logger=none", "trainer.steps=8", "trainer.log_every=1", "trainer.ckpt_every=2",
                 "trainer.keep=4", "trainer.sample_every=100", "model.g_width=16", "model.d_width=16",
                 "data.batch_size=32", "metrics=none", f"hydra.run.dir={out}", cwd=tmp_path,
                 pythonpath=plugin_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stdout + result.stderr
    assert "step 0: warmup (trains D only), compiled in" in said and "step 4: both, compiled in" in said
    summary = json.loads((out / "summary.json").read_text())
    assert [(p["phase"], p["from_step"], p["steps"]) for p in summary["phases"]] == \
        [("warmup (trains D only)", 0, 4), ("both", 4, 4)]
    train_rows = rows(out)
    assert ["train/g_loss" in r for r in train_rows] == [False] * 4 + [True] * 4
    monkeypatch.syspath_prepend(str(plugin_dir))
    import jax
    import numpy as np

    from gaxp.evaluate import load_state

    states = {s: load_state(str(out), step=s)[2] for s in (2, 4, 6)}
    same = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))  # noqa: E731
    assert same(states[2].g_params, states[4].g_params) and same(states[2].g_ema, states[4].g_ema)
    assert not same(states[2].d_params, states[4].d_params)
    assert not same(states[4].g_params, states[6].g_params)
