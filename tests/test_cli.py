"""The real `gaxp-train` console script in subprocesses: bad input gives one line on stderr and
exit code 2 before anything compiles; a Hydra multirun sweep runs every job."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import xla_flags, no_final_eval

BIN = Path(sys.executable).with_name("gaxp-train")


def gaxp_train(*args, cwd, devices=1, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="offline",
               XLA_FLAGS=xla_flags(devices))
    return subprocess.run([str(BIN), *no_final_eval(args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args,message", [
    (["model=foo"], "unknown model 'foo'; valid: cyclegan, dcgan, infogan, mlp, pix2pix, progan, resnet, srgan"),
    (["-m", "loss=ns,bogus"], "unknown loss 'bogus'; valid:"),
    (["trainer.stepz=3"], "trainer.stepz"),
    (["data.batch_size=0"], "data.batch_size must be > 0"),
    (["data.batch_size=12"], "data.batch_size=12 is not divisible by the 8 devices"),
    (["data.image_size=48"], "model=dcgan cannot produce 48x48 px images"),
    (["data=tfds", "data.name=cifar10", "data.data_dir=/nonexistent/tfds"], "tfds build cifar10"),
    (["model=dcgan", "data=ring", "data.batch_size=64"], "model=dcgan needs image data"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    result = gaxp_train(*args, "logger=none", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
                        devices=8)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout


def test_multirun_sweep_runs_every_job_and_survives_a_failing_one(tmp_path):
    result = gaxp_train("-m", "model=mlp", "data=ring", "loss=ns,hinge", "model.z_dim=4,0",
                        "trainer.steps=2", "trainer.progress=false", "logger=none",
                        "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    done = sorted(p.parent.name for p in sweep.glob("*/summary.json"))
    assert done == ["0", "2"]  # z_dim=4 for ns and hinge; z_dim=0 jobs fail validation
    failures = [json.loads(x) for x in (sweep / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["job"] for f in failures) == [1, 3]
    assert all("model.z_dim must be > 0" in f["error"] for f in failures)
