"""End-to-end runs through the real loop: outputs, resume, reproducibility, every experiment."""

import json

import numpy as np
import pytest
from conftest import CONF_DIR

from gaxp.api import run as train

DCGAN_SMALL = ("model.g_width=8", "model.d_width=8", "data.batch_size=16")
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_every_output(tiny, tmp_path):
    summary = train(tiny(*DCGAN_SMALL, "trainer.steps=6", "trainer.log_every=2",
                         "trainer.sample_every=3", "trainer.ckpt_every=3"))
    run = tmp_path / "run"
    rows = _rows(run)
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(k == "step" or "/" in k for r in rows for k in r)
    assert {"train/d_loss", "train/g_loss", "perf/images_per_s", "progress/kimg"} <= set(rows[-1])
    saved = json.loads((run / "summary.json").read_text())
    assert saved["digest"] == summary["digest"] and len(saved["digest"]) == 64
    assert saved["steps"] == 6 and saved["kimg"] == pytest.approx(6 * 16 / 1000)
    for key in ("wall_time_s", "images_per_s", "compile_s", "final"):
        assert key in saved
    assert summary["step_traces"] == 1  # compiled once
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step_0000003.png", "step_0000006.png"]
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]


def test_same_seed_gives_bit_identical_digest(tiny):
    a = train(tiny(*DCGAN_SMALL, "trainer.steps=3", name="a"))
    b = train(tiny(*DCGAN_SMALL, "trainer.steps=3", name="b"))
    c = train(tiny(*DCGAN_SMALL, "trainer.steps=3", "trainer.seed=1", name="c"))
    assert a["digest"] == b["digest"] != c["digest"]


@pytest.mark.parametrize("overrides", [DCGAN_SMALL, ("model=mlp", "data=ring", "loss=wgan_gp",
                                                   "data.batch_size=32")],
                         ids=["dcgan", "mlp-wgan-gp"])
def test_resume_matches_uninterrupted_run(tiny, tmp_path, overrides):
    common = (*overrides, "trainer.ckpt_every=3", "trainer.log_every=1")
    straight = train(tiny(*common, "trainer.steps=7", name="straight"))
    first = train(tiny(*common, "trainer.steps=3", name="split"))
    resumed = train(tiny(*common, "trainer.steps=7", "trainer.resume=true", name="split"))
    assert first["steps"] == 3 and resumed["resumed_from"] == 3
    assert resumed["digest"] == straight["digest"]
    rows = _rows(tmp_path / "split")
    assert [r["step"] for r in rows] == list(range(1, 8))
    np.testing.assert_array_equal([r["train/d_loss"] for r in rows],
                                  [r["train/d_loss"] for r in _rows(tmp_path / "straight")])


def test_resume_true_finds_the_latest_matching_run(tiny, tmp_path):
    train(tiny(*DCGAN_SMALL, "trainer.steps=2", name="2026-01-01/00-00-00"))
    resumed = train(tiny(*DCGAN_SMALL, "trainer.steps=4", "trainer.resume=true", name="new"))
    assert resumed["resumed_from"] == 2
    assert resumed["run_dir"].endswith("2026-01-01/00-00-00")
    assert "resumed_run" in json.loads((tmp_path / "new" / "resumed.json").read_text())


def test_restarting_a_finished_run_without_resume_refuses(tiny):
    from gaxp.errors import ConfigError

    train(tiny(*DCGAN_SMALL, "trainer.steps=2"))
    with pytest.raises(ConfigError, match="already has checkpoints; add trainer.resume=true"):
        train(tiny(*DCGAN_SMALL, "trainer.steps=4"))


def test_wandb_offline_run_is_written_and_resumed_with_the_same_id(tiny, tmp_path):
    over = (*DCGAN_SMALL, "logger=wandb", "logger.wandb.mode=offline", "trainer.log_every=1")
    train(tiny(*over, "trainer.steps=2"))
    run_id = json.loads((tmp_path / "run" / "run.json").read_text())["wandb_id"]
    assert run_id and list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}"))
    train(tiny(*over, "trainer.steps=3", "trainer.resume=true"))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["wandb_id"] == run_id


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs(tiny, experiment, tmp_path, monkeypatch):
    extra = ()
    if experiment == "lucic_fashion":  # a fixture of the IDX files; its cheap score kept tiny
        from test_lucic import write_fashion

        write_fashion(tmp_path / "fashion")
        monkeypatch.setenv("GAXP_FASHION_MNIST_DIR", str(tmp_path / "fashion"))
        extra = ("metrics=none",)
    summary = train(tiny(f"experiment={experiment}", "debug=fast", "trainer.devices=4", *extra))
    assert summary["steps"] == 4 and np.isfinite(summary["final"]["train/d_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "dcgan", "resnet"])
@pytest.mark.parametrize("loss", ["minimax", "ns", "wgan", "wgan_gp", "hinge", "lsgan", "relativistic"])
def test_every_model_and_loss_combination_trains(tiny, model, loss):
    # One device and, for the ResNet, one critic step: compiling 5 unrolled ResNet critic steps
    # takes minutes here; n_critic > 1 and 8 devices have their own tests (test_step.py).
    size = ("model.g_width=8", "model.d_width=8")
    if model == "resnet":
        size += ("data.image_size=32", "loss.n_critic=1")
    summary = train(tiny(f"model={model}", f"loss={loss}", *size, "data.batch_size=8",
                         "trainer.steps=2", "trainer.log_every=1", "trainer.devices=1"))
    assert np.isfinite(summary["final"]["train/g_loss"])


def test_tfds_dataset_trains_through_grain(tiny):
    """The TFDS path end to end on TFDS's own mock data (no download, no TensorFlow)."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        summary = train(tiny("data=tfds", "data.name=mnist", *DCGAN_SMALL, "trainer.steps=2"))
    assert summary["steps"] == 2 and np.isfinite(summary["final"]["train/g_loss"])
