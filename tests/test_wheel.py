"""A wheel built from the tree, installed into a fresh target directory, trains from outside the
repository: the configs ship inside the package (found as pkg://gaxp.conf)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import xla_flags

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_wheel_trains_from_any_directory(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("gaxp-*.whl"))
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    assert (site / "gaxp" / "conf" / "train.yaml").exists()
    assert (site / "gaxp" / "conf" / "experiment" / "toy_ring.yaml").exists()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
    code = ("import sys, gaxp.cli; print(gaxp.cli.__file__, file=sys.stderr); "
            "sys.argv = ['gaxp-train'] + sys.argv[1:]; gaxp.cli.train_main()")
    result = subprocess.run([sys.executable, "-c", code, "experiment=toy_ring", "trainer.steps=3",
                             "data.batch_size=64", "logger=none", "trainer.progress=false"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(site / "gaxp" / "cli.py") in result.stderr  # the installed copy ran
    summaries = list((work / "outputs").glob("*/*/summary.json"))
    assert len(summaries) == 1 and json.loads(summaries[0].read_text())["steps"] == 3
