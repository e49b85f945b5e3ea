"""Checkpoints written by earlier gaxp versions still restore and resume."""

import json
import shutil
from pathlib import Path

from gaxp.api import run as train

# A 4-step toy run (checkpoint of step 4) written by gaxp at commit 80edf23, before GANState had
# its optional `pool` field (CycleGAN's image history). Its command, as recorded in run.json:
OLD_RUN = Path(__file__).parent / "data" / "run_before_pool"
OVERRIDES = ("model=mlp", "data=ring", "model.g_width=8", "model.d_width=8", "model.g_depth=1",
             "model.d_depth=1", "model.z_dim=2", "data.batch_size=8", "trainer.ckpt_every=2",
             "trainer.log_every=2", "trainer.sample_every=4", "metrics=none", "trainer.devices=1")


def test_checkpoint_from_before_the_pool_field_resumes(tiny, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    saved = json.loads((OLD_RUN / "run.json").read_text())["config"]
    assert "pool_size" not in saved.get("task", {})  # really the older layout
    out = train(tiny(*OVERRIDES, "trainer.steps=6", f"trainer.resume={run}", name="old"))
    # restored (the integrity checksum saved with it matched the restored bits) and continued
    assert out["resumed_from"] == 4 and out["steps"] == 6
    assert not (run / "checkpoints-damaged").exists()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["4", "6"]
