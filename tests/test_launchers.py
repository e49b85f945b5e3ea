"""Hydra launchers: submitit_local runs a sweep to completion; the gaxp SLURM launcher config
composes on top of the plugin's; without the plugin it is a one-line error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import xla_flags, no_final_eval

from gaxp import cli, compose

BIN = Path(sys.executable).with_name("gaxp-train")


@pytest.mark.slow
def test_submitit_local_sweep_runs_both_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", "model=mlp", "data=ring", "model.g_width=16",
            "model.d_width=16", "data.batch_size=16", "logger=none", "trainer.progress=false",
            "trainer.steps=3", "trainer.log_every=3", "trainer.ckpt_every=3",
            "trainer.sample_every=3", "trainer.seed=0,1", f"hydra.sweep.dir={sweep}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
    proc = subprocess.run([str(BIN), *no_final_eval(args)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in (0, 1)]
    assert [s["steps"] for s in summaries] == [3, 3]
    assert summaries[0]["digest"] != summaries[1]["digest"]  # two seeds, two different runs
    assert (sweep / ".submitit").is_dir() and not (sweep / "failures.jsonl").exists()


def test_slurm_launcher_extends_the_plugin_with_gaxp_defaults():
    assert cli.check_overrides(["-m", "hydra/launcher=slurm", "hydra.launcher.nodes=2"]) is None
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["hydra/launcher=slurm",
                                                "hydra.launcher.partition=gpu"],
                            return_hydra_config=True)
    got = cfg.hydra.launcher
    assert got._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (got.partition, got.nodes, got.tasks_per_node, got.gpus_per_node, got.timeout_min) == \
        ("gpu", 1, 1, 1, 240)


def test_slurm_launcher_without_the_plugin_is_one_line(monkeypatch):
    monkeypatch.setattr(compose, "_has_submitit", lambda: False)
    message = cli.check_overrides(["-m", "hydra/launcher=slurm", "trainer.seed=0,1"])
    assert message.startswith("hydra/launcher=slurm needs the hydra-submitit-launcher plugin")
    assert "\n" not in message
