"""Reliability with real processes, signals, files and services: preemption, damaged checkpoints,
the non-finite guard and rollback, and W&B that cannot reach its server."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import xla_flags, no_final_eval

from gaxp.errors import ConfigError, Diverged
from gaxp.api import run as train

BIN = Path(sys.executable).with_name("gaxp-train")
TOY = ("model=mlp", "data=ring", "model.g_width=32", "model.d_width=32", "data.batch_size=32")


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _steps(run):
    return sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


def _cli(args, cwd, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
    return subprocess.Popen([str(BIN), *no_final_eval(args)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize("sig,log_every", [(signal.SIGTERM, 1), (signal.SIGINT, 10)], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_and_resume_matches_uninterrupted_run(tmp_path, sig, log_every):
    # log_every=1 makes the stop step a log step every time: its row must be written before exiting
    args = [*TOY, "trainer.steps=2500", f"trainer.log_every={log_every}", "trainer.ckpt_every=100000",
            "trainer.sample_every=100000", "logger=none", "trainer.progress=false"]
    run = tmp_path / "run"
    proc = _cli([*args, f"hydra.run.dir={run}"], tmp_path)
    deadline = time.time() + 240
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + sig, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert f"stopped by {signal.Signals(sig).name} at step" in last and "Traceback" not in err
    stopped_at = int(last.split(" at step ")[1].split(";")[0])
    assert 0 < stopped_at < 2500 and _steps(run) == [stopped_at]
    assert f"trainer.resume={run}" in last
    assert [r["step"] for r in _rows(run / "metrics.jsonl")] == list(range(log_every, stopped_at + 1, log_every))
    if sig == signal.SIGINT:
        return  # same path; the resume comparison below runs once
    resume = last.split("resume with: ")[1].split()
    assert resume[0] == "gaxp-train"
    resumed = _cli([*resume[1:], f"hydra.run.dir={run}"], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1][-2000:]
    straight = _cli([*args, f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path)
    assert straight.wait(timeout=300) == 0, straight.communicate()[1][-2000:]
    a = json.loads((run / "summary.json").read_text())
    b = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert a["resumed_from"] == stopped_at and a["digest"] == b["digest"]
    assert [r["step"] for r in _rows(run / "metrics.jsonl")] == list(range(1, 2501))
    np.testing.assert_array_equal([r["train/g_loss"] for r in _rows(run / "metrics.jsonl")],
                                  [r["train/g_loss"] for r in _rows(tmp_path / "straight" / "metrics.jsonl")])


def _damage_data(step_dir: Path) -> None:
    """Truncate every array data file of the checkpoint's state item to half its size."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.stat().st_size > 64]
    assert files
    for p in files:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _damage_checksum(step_dir: Path) -> None:
    """Bits that read back but differ from those saved: the recorded checksum no longer matches."""
    meta = step_dir / "meta" / "metadata"
    record = json.loads(meta.read_text())
    record["integrity"] = "00" + record["integrity"][2:]
    meta.write_text(json.dumps(record))


@pytest.mark.parametrize("damage", [_damage_data, _damage_checksum], ids=["truncated", "bit-mismatch"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tiny, tmp_path, damage, caplog):
    common = (*TOY, "trainer.ckpt_every=2", "trainer.keep=3", "trainer.log_every=1")
    straight = train(tiny(*common, "trainer.steps=8", name="straight"))
    train(tiny(*common, "trainer.steps=6"))
    run = tmp_path / "run"
    assert _steps(run) == [2, 4, 6]
    damage(run / "checkpoints" / "6")
    (run / "checkpoints" / "8.orbax-checkpoint-tmp-1").mkdir()  # a save cut off by a crash
    resumed = train(tiny(*common, "trainer.steps=8", "trainer.resume=true"))
    assert resumed["resumed_from"] == 4 and resumed["digest"] == straight["digest"]
    assert "checkpoint 6 is damaged" in caplog.text
    moved = list((run / "checkpoints-damaged").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("6-")  # kept, not deleted
    assert _steps(run) == [4, 6, 8]  # keep-N still holds


def test_no_intact_checkpoint_is_a_clear_error(tiny, tmp_path):
    train(tiny(*TOY, "trainer.steps=2", "trainer.ckpt_every=2"))
    _damage_checksum(tmp_path / "run" / "checkpoints" / "2")
    with pytest.raises(ConfigError, match="no intact checkpoint left"):
        train(tiny(*TOY, "trainer.steps=4", "trainer.resume=true"))


def test_resume_with_other_networks_is_a_config_error_that_moves_nothing(tiny, tmp_path):
    """An intact checkpoint of other shapes (the config changed between runs) is the user's
    mistake, not damage: one clear error, and every checkpoint stays where it is."""
    train(tiny(*TOY, "trainer.steps=2", "trainer.ckpt_every=2"))
    run = tmp_path / "run"
    before = sorted(p.relative_to(run) for p in (run / "checkpoints").rglob("*"))
    with pytest.raises(ConfigError, match=r"checkpoint 2 in .* was written for other networks: "
                                          r".*has shape \(.*32.*\) there, \(.*48.*\) here"):
        train(tiny(*TOY, "model.g_width=48", "trainer.steps=4", "trainer.resume=true"))
    # gaxp-eval / gaxp-sample read checkpoints through the same restore: the same error
    from gaxp.evaluate import load_state

    with pytest.raises(ConfigError, match=r"checkpoint 2 in .* was written for other networks"):
        load_state(str(run), ["model.g_width=48"])
    assert not (run / "checkpoints-damaged").exists()
    assert sorted(p.relative_to(run) for p in (run / "checkpoints").rglob("*")) == before
    # the run's own config still resumes it
    assert train(tiny(*TOY, "trainer.steps=4", "trainer.resume=true"))["resumed_from"] == 2


def test_nan_gradients_are_skipped_counted_and_rolled_back(tiny, tmp_path, caplog):
    over = (*TOY, "loss.n_critic=2", "trainer.log_every=1", "trainer.ckpt_every=3",
            "trainer.guard.patience=3", "trainer.guard.inject_nan=[5,6,7]", "trainer.steps=10")
    summary = train(tiny(*over))
    run = tmp_path / "run"
    rows = {r["step"]: r for r in _rows(run / "metrics.jsonl") if "train/g_loss" in r}
    assert summary["rollbacks"] == 1 and summary["steps"] == 10
    assert "rollback 1/3 to step 3, learning rates x0.5" in caplog.text
    # the rolled-back attempt is kept aside: steps 4..7 with 1, 2, 3 consecutive skipped steps
    aside = _rows(run / "metrics.rolled_back.jsonl")
    assert [r["step"] for r in aside] == [4, 5, 6, 7]
    assert [r["guard/consecutive"] for r in aside] == [0, 1, 2, 3]
    assert [r["guard/skipped_g"] for r in aside] == [0, 1, 2, 3]
    assert [r["guard/skipped_d"] for r in aside] == [0, 2, 4, 6]  # n_critic D updates per step
    assert sorted(rows) == list(range(1, 11))  # the retry after the rollback, with no skips
    assert all(rows[s]["guard/skipped_g"] == 0 for s in range(4, 11))
    assert np.isfinite(summary["final"]["train/d_loss"])
    # step 6 of the first attempt was not checkpointed (updates were being skipped), so the
    # rollback went to 3; the retry wrote 6 again; keep-N (3) holds
    assert _steps(run) == [6, 9, 10]


@pytest.mark.parametrize("over,match", [
    (("trainer.guard.action=stop",), "the run diverged at step 6: 2 consecutive steps"),
    (("trainer.guard.max_rollbacks=0",), "after 0 rollbacks"),
])
def test_divergence_stops_with_a_clear_error_and_keeps_the_good_checkpoint(tiny, tmp_path, over, match):
    with pytest.raises(Diverged, match=match):
        train(tiny(*TOY, "trainer.log_every=1", "trainer.ckpt_every=2", "trainer.steps=10",
                   "trainer.guard.patience=2", "trainer.guard.inject_nan=[5,6,7,8]", *over))
    assert _steps(tmp_path / "run") == [2, 4]
    resumed = train(tiny(*TOY, "trainer.steps=5", "trainer.ckpt_every=2", "trainer.resume=true",
                         "trainer.guard.patience=2", "trainer.guard.inject_nan=[5,6,7,8]", *over))
    assert resumed["resumed_from"] == 4  # the last good checkpoint restores


def test_unreachable_wandb_server_never_stops_training(tiny, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    summary = train(tiny(*TOY, "logger=wandb", "logger.wandb.mode=online",
                         "logger.wandb.init_timeout=20", "trainer.steps=6", "trainer.log_every=1"))
    run = tmp_path / "run"
    assert summary["steps"] == 6
    assert [r["step"] for r in _rows(run / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert "W&B online failed" in caplog.text
    run_id = json.loads((run / "run.json").read_text())["wandb_id"]
    assert run_id and list((run / "wandb").glob(f"offline-run-*-{run_id}"))  # syncable later


def test_a_state_with_nan_is_never_checkpointed(tiny, tmp_path):
    """The integrity pass refuses a non-finite state: nothing is written, the previous checkpoint
    stays the latest, and a finite state saves and restores bit for bit."""
    import jax
    import jax.numpy as jnp

    from gaxp.checkpoint import integrity
    from gaxp.config import load
    from gaxp.training import prepare

    run, batches, ckpt, state, _ = prepare(load(tiny(*TOY)))
    assert ckpt.save(1, state, batches.iterator, {})
    ckpt.wait()
    bad = state.replace(g_ema=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), state.g_ema))
    assert integrity(bad)[0] is False and integrity(state)[0] is True
    assert not ckpt.save(2, bad, batches.iterator, {})
    ckpt.wait()
    assert ckpt.latest_step() == 1 and _steps(tmp_path / "run") == [1]
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored, meta = ckpt.restore_latest_good(abstract, batches.iterator)
    assert integrity(restored)[1] == integrity(state)[1] == meta["integrity"]
    ckpt.close()
