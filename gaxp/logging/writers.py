"""Metric writers. Only process 0 writes; every other process gets a no-op.

- ``JsonlWriter``: one JSON object per log step in ``metrics.jsonl`` (appends on resume). Each
  row is one append; a row that cannot be written (disk full) is cut off again and the run stops
  with ``WriteFailed``; rewrites (resume, rollback) replace the file atomically, so a failure
  never shortens it.
- ``WandbWriter``: a W&B run, offline unless the user is logged in or asks for online; its id is
  stored in the checkpoint metadata so a resumed run continues the same W&B run.
- ``Progress``: a tqdm bar with the latest losses and images/s.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
from pathlib import Path

from tqdm.auto import tqdm

from gaxp.specs import WandbSpec
from gaxp.errors import WriteFailed
from gaxp.files import append, cause, write_atomic

log = logging.getLogger("gaxp")


def _jsonable(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)


class JsonlWriter:
    def __init__(self, path: Path, start_step: int = 0):
        self.path = Path(path)
        if self.path.exists() and start_step:
            self._truncate_after(start_step)
        self._open()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            self.fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise WriteFailed(self.path, cause(e)) from None
        self.size = os.fstat(self.fd).st_size

    def _rows(self) -> list[str]:
        return [ln for ln in self.path.read_text().splitlines() if ln.strip()]

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint we resume from (they will be redone)."""
        keep = [ln for ln in self._rows() if json.loads(ln).get("step", 0) <= step]
        write_atomic(self.path, "".join(ln + "\n" for ln in keep))

    def rewind(self, step: int) -> None:
        """Move rows after ``step`` to ``metrics.rolled_back.jsonl`` (a divergence rollback)."""
        os.close(self.fd)
        later = [ln for ln in self._rows() if json.loads(ln).get("step", 0) > step]
        aside = self.path.with_name("metrics.rolled_back.jsonl")
        old = aside.read_text() if aside.exists() else ""
        write_atomic(aside, old + "".join(ln + "\n" for ln in later))
        self._truncate_after(step)
        self._open()

    def log(self, step: int, metrics: dict) -> None:
        row = {"step": step} | {k: _jsonable(v) for k, v in metrics.items()}
        self.size = append(self.fd, (json.dumps(row) + "\n").encode(), self.size, self.path,
                           f"the metrics of step {step}")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


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
    """A W&B run that never stops training: if the server cannot be reached (offline machine, bad
    key, server error) within ``init_timeout``, it logs offline in the run directory with one
    warning (``wandb sync`` uploads it later); any later W&B failure disables it with one warning
    while metrics.jsonl goes on. Rows carry their own ``step`` key as the x-axis, so a rollback or a
    resume that repeats steps is kept rather than dropped."""

    def __init__(self, spec: WandbSpec, run_dir: Path, config: dict, run_id: str | None, name: str):
        import wandb

        self.wandb, self.run, self.id = wandb, None, run_id
        mode = resolve_mode(spec.mode)
        kwargs = dict(project=spec.project, entity=spec.entity, group=spec.group,
                      tags=run_tags(spec, config), dir=str(run_dir), config=config, name=name)
        try:
            self.run = self._init(mode, run_id, spec.init_timeout, kwargs)
        except Exception as e:  # noqa: BLE001 - any W&B failure: keep training
            if mode != "online":
                self._disable(f"W&B failed to start ({_first_line(e)}); logging to metrics.jsonl only")
                return
            log.warning("gaxp: W&B online failed (%s); logging offline in %s/wandb, upload it "
                        "later with `wandb sync`", _first_line(e), run_dir)
            try:
                self.run = self._init("offline", run_id, spec.init_timeout, kwargs)
            except Exception as e2:  # noqa: BLE001
                self._disable(f"W&B offline failed too ({_first_line(e2)}); logging to metrics.jsonl only")
                return
        self.id = self.run.id

    def _init(self, mode: str, run_id: str | None, timeout: float, kwargs: dict):
        wandb = self.wandb
        # create_new: the runs of a population's members are open side by side in one process
        run = wandb.init(mode=mode, id=run_id, resume="allow" if run_id else None, **kwargs,
                         reinit="create_new",
                         settings=wandb.Settings(console="off", silent=True, init_timeout=timeout))
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        return run

    def _disable(self, message: str) -> None:
        if self.run is not None or not getattr(self, "_warned", False):
            log.warning("gaxp: %s", message)
        self._warned, self.run = True, None

    def _call(self, fn, *args) -> None:
        if self.run is None:
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            self._disable(f"W&B stopped working ({_first_line(e)}); logging to metrics.jsonl only")

    def log(self, step: int, metrics: dict) -> None:
        self._call(lambda: self.run.log({"step": step, **metrics}))

    def update_config(self, values: dict) -> None:
        self._call(lambda: self.run.config.update(values, allow_val_change=True))

    def summarize(self, summary: dict) -> None:
        """The run's W&B summary: its final metrics and evaluation (with the protocol), the
        parameter digest, steps, kimg and wall time (what summary.json holds)."""
        final = dict(summary.get("final") or {})
        evals = dict(summary.get("eval") or {})
        protocol = evals.pop("protocol", None)
        keep = {k: summary[k] for k in ("digest", "steps", "kimg", "wall_time_s", "images_per_s",
                                         "compile_s", "rollbacks") if k in summary}
        values = {**final, **evals, **keep, **({"eval_protocol": protocol} if protocol else {})}
        self._call(lambda: self.run.summary.update(values))

    def log_image(self, step: int, key: str, path: Path) -> None:
        self._call(lambda: self.run.log({"step": step, key: self.wandb.Image(str(path))}))

    def close(self) -> None:
        self._call(lambda: self.run.finish())


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


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
