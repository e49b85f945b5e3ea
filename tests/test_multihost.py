"""Real multi-process runs on localhost: two processes (2 virtual CPU devices each, gloo
collectives) train together through ``trainer.distributed=manual``."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import xla_flags

WORKER = Path(__file__).with_name("multihost_worker.py")
BIN = Path(sys.executable).with_name("gaxp-train")
TOY = ("model=mlp", "data=ring", "metrics=none", "model.g_width=32", "model.d_width=32", "data.batch_size=32",
       "logger=none", "trainer.progress=false", "trainer.log_every=2", "trainer.ckpt_every=4",
       "trainer.sample_every=4", "optim.g.name=sgd", "optim.d.name=sgd", "optim.g.lr=1e-2",
       "optim.d.lr=1e-2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices),
                PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


def _worker(args, devices, dump):
    return subprocess.Popen([sys.executable, str(WORKER), "--dump", str(dump), *args],
                            env=_env(devices), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _summary(proc, timeout=600) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_processes_train_as_one_and_resume_in_one(tmp_path):
    port = _free_port()
    pair = [_worker([*TOY, "trainer.steps=4", f"runs_root={tmp_path}", f"out_dir={tmp_path}/p{i}",
                     "trainer.distributed=manual", f"trainer.coordinator=localhost:{port}",
                     "trainer.num_processes=2", f"trainer.process_id={i}",
                     "trainer.init_timeout=300"], 2, tmp_path / f"p{i}.npz") for i in (0, 1)]
    ref = _worker(["--emulate-pair", *TOY, "trainer.steps=4", f"out_dir={tmp_path}/ref",
                   f"runs_root={tmp_path}/other"], 4, tmp_path / "ref.npz")
    a, b = (_summary(p) for p in pair)
    r = _summary(ref)
    assert (a["process_count"], a["devices"], r["process_count"], r["devices"]) == (2, 4, 1, 4)
    # Both processes hold the same parameters, bit for bit, in process 0's run directory.
    assert a["digest"] == b["digest"] and a["run_dir"] == b["run_dir"] == str(tmp_path / "p0")
    assert not (tmp_path / "p1").exists()  # process 1 writes nothing of its own
    assert (tmp_path / "p0" / "summary.json").exists()
    assert sorted(p.name for p in (tmp_path / "p0" / "checkpoints" / "4" / "data").glob("*.json")) == \
        ["process_0-of-2.json", "process_1-of-2.json"]
    # ... equal to one process with 4 devices on the same global batches (up to the order of the
    # cross-process sums: gloo adds the two processes' partial sums).
    pa, pr = np.load(tmp_path / "p0.npz"), np.load(tmp_path / "ref.npz")
    assert sorted(pa) == sorted(pr)
    for k in pa:
        np.testing.assert_allclose(pa[k], pr[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for k in a["final"]:
        if k.startswith("train/"):
            np.testing.assert_allclose(a["final"][k], r["final"][k], rtol=1e-5, err_msg=k)
    # The pair's checkpoint restores in a single process, which continues the run.
    one = _summary(_worker([*TOY, "trainer.steps=6", f"trainer.resume={tmp_path}/p0",
                            f"out_dir={tmp_path}/one", f"runs_root={tmp_path}"], 4,
                           tmp_path / "one.npz"))
    assert (one["process_count"], one["resumed_from"], one["steps"]) == (1, 4, 6)
    rows = [json.loads(x) for x in (tmp_path / "p0" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [2, 4, 6]


def test_unreachable_coordinator_is_a_one_line_error(tmp_path):
    proc = subprocess.run(
        [str(BIN), *TOY, "trainer.steps=2", "trainer.distributed=manual",
         f"trainer.coordinator=localhost:{_free_port()}", "trainer.num_processes=2",
         "trainer.process_id=1", "trainer.init_timeout=2", f"hydra.run.dir={tmp_path}/run"],
        env=_env(1), text=True, capture_output=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gaxp-train: error: cannot reach the coordinator at localhost:")
    assert "within 2 s (trainer.init_timeout)" in last and "Traceback" not in proc.stderr


@pytest.mark.parametrize("env,expected", [
    ({}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),  # one task: a single-process run
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "SLURM"),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, "Cloud TPU"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     "JAX_COORDINATOR_ADDRESS"),
], ids=["none", "slurm-1", "slurm-4", "tpu", "env"])
def test_auto_detects_clusters(monkeypatch, env, expected):
    from gaxp import distributed

    for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "TPU_WORKER_HOSTNAMES",
              "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    found = distributed.detect()
    assert (found and found[0]) == expected
    if expected == "JAX_COORDINATOR_ADDRESS":
        assert found[1] == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}


def test_coordinator_address_without_process_count_is_an_error(monkeypatch):
    from gaxp import distributed
    from gaxp.errors import ConfigError

    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:1")
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES and JAX_PROCESS_ID are not"):
        distributed.detect()
