"""Metric writers. Only process 0 writes; every other process gets a no-op.

- ``JsonlWriter``: one JSON object per log step in ``metrics.jsonl`` (appends on resume).
- ``WandbWriter``: a W&B run, offline unless the user is logged in or asks for online; its id is
  stored in the checkpoint metadata so a resumed run continues the same W&B run.
- ``Progress``: a tqdm bar with the latest losses and images/s.
"""

from __future__ import annotations

import json
import math
import netrc
import os
from pathlib import Path

from tqdm.auto import tqdm

from gaxp.config import WandbSpec


def _jsonable(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)


class JsonlWriter:
    def __init__(self, path: Path, start_step: int = 0):
        self.path = Path(path)
        if self.path.exists() and start_step:
            self._truncate_after(start_step)
        self.file = open(self.path, "a", buffering=1)

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint we resume from (they will be redone)."""
        keep = [ln for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": step} | {k: _jsonable(v) for k, v in metrics.items()}
        self.file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.file.close()


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in h for h in hosts)


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if wandb_logged_in() else "offline"
    return mode


def run_tags(spec: WandbSpec, config: dict) -> list[str]:
    """The user's tags plus ``loss:<name>`` and one ``reg:<name>`` per stabilizer, so the runs
    of a sweep can be filtered by variant in the W&B UI."""
    regs = [name for name, _ in (config.get("regularizer") or {}).get("entries", ())]
    tags = list(spec.tags) + [f"loss:{config['loss']['name']}"] + [f"reg:{r}" for r in regs]
    return list(dict.fromkeys(tags))


class WandbWriter:
    def __init__(self, spec: WandbSpec, run_dir: Path, config: dict, run_id: str | None, name: str):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=spec.project, entity=spec.entity, group=spec.group, tags=run_tags(spec, config),
            mode=resolve_mode(spec.mode), dir=str(run_dir), config=config, id=run_id,
            resume="allow" if run_id else None, name=name,
            settings=wandb.Settings(console="off", silent=True),
        )
        self.id = self.run.id

    def log(self, step: int, metrics: dict) -> None:
        self.run.log(dict(metrics), step=step)

    def log_image(self, step: int, key: str, path: Path) -> None:
        self.run.log({key: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


class Progress:
    def __init__(self, total: int, start: int, enabled: bool):
        self.bar = tqdm(total=total, initial=start, disable=not enabled, dynamic_ncols=True,
                        unit="step", smoothing=0.1)

    def update(self, n: int, metrics: dict | None = None) -> None:
        self.bar.update(n)
        if metrics:
            short = {k.split("/")[-1]: v for k, v in metrics.items()
                     if k in ("train/d_loss", "train/g_loss", "perf/images_per_s")}
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in short.items()}, refresh=False)

    def close(self) -> None:
        self.bar.close()
