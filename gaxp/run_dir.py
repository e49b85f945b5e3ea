"""Run directories: where a run writes, and which earlier run ``trainer.resume`` continues.

A run directory holds ``run.json`` (config key, W&B id), ``metrics.jsonl``, ``summary.json``,
``samples/`` and ``checkpoints/``. ``trainer.resume=true`` continues this run directory when it has
checkpoints, else the newest run under ``runs_root`` whose config key matches (the config minus
the keys that may change on resume: steps, resume, logging); ``trainer.resume=<dir>`` continues
that directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from pathlib import Path

from gaxp.specs import Config
from gaxp.errors import ConfigError

# Keys that may differ between a run and its resumption: where and how it logs and is evaluated,
# and for how long.
_NOT_EXPERIMENT = ("out_dir", "runs_root", "logger", "metrics")
_NOT_EXPERIMENT_TRAINER = ("resume", "steps", "progress", "log_every", "sample_every",
                           "ckpt_every", "keep", "distributed", "coordinator", "num_processes",
                           "process_id", "init_timeout")


def config_key(config: Config) -> str:
    """A hash of everything that defines the experiment (not how long or how it is logged)."""
    d = dataclasses.asdict(config)
    for k in _NOT_EXPERIMENT:
        d.pop(k)
    for k in _NOT_EXPERIMENT_TRAINER:
        d["trainer"].pop(k)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ensure_writable(path: Path) -> Path:
    """Create ``path`` and prove we can write there, before anything expensive starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to the output directory {path}: {e.strerror}; "
                          "choose another with hydra.run.dir=<dir>") from None
    return path


def has_checkpoint(run_dir: Path) -> bool:
    """A run with a checkpoint; a population (gaxp.population) when every member has one."""
    members = run_dir / "members"
    if (run_dir / "population.json").exists() and members.is_dir():
        dirs = [d for d in members.iterdir() if d.is_dir()]
        return bool(dirs) and all(has_checkpoint(d) for d in dirs)
    ckpt = run_dir / "checkpoints"
    return ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())


def _candidates(root: Path):
    for pattern in ("*/*/run.json", "multirun/*/*/*/run.json", "*/run.json"):
        yield from root.glob(pattern)


def find_resumable(root: Path, key: str, exclude: Path) -> Path | None:
    """The newest run under ``root`` with config key ``key`` that has a checkpoint."""
    best = None
    for meta in _candidates(root):
        run = meta.parent
        if run.resolve() == exclude.resolve() or not has_checkpoint(run):
            continue
        try:
            if json.loads(meta.read_text()).get("config_key") != key:
                continue
        except (OSError, ValueError):
            continue
        if best is None or meta.stat().st_mtime > best.stat().st_mtime:
            best = meta
    return None if best is None else best.parent


def resolve(config: Config) -> tuple[Path, bool]:
    """(run directory to write, whether to restore a checkpoint from it)."""
    out = Path(config.out_dir)
    resume = config.trainer.resume
    if isinstance(resume, str) and resume.lower() not in ("true", "false"):
        target = Path(resume)
        if not has_checkpoint(target):
            raise ConfigError(f"trainer.resume={resume}: no checkpoints in {target / 'checkpoints'}; "
                              "point it at a gaxp run directory")
        return ensure_writable(target), True
    resume = resume is True or str(resume).lower() == "true"
    if has_checkpoint(out):
        if not resume:
            raise ConfigError(f"{out} already has checkpoints; add trainer.resume=true to continue "
                              "it, or choose a new hydra.run.dir")
        return ensure_writable(out), True
    if resume:
        found = find_resumable(Path(config.runs_root), config_key(config), out)
        if found is not None:
            ensure_writable(out)
            (out / "resumed.json").write_text(json.dumps({"resumed_run": str(found.resolve())}))
            return ensure_writable(found), True
    return ensure_writable(out), False


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def resolve_everywhere(config: Config) -> tuple[Path, bool]:
    """``resolve`` decided once, by process 0, and the same answer on every process (Hydra's
    timestamped run directories differ between processes started a second apart). The directory
    must be on a filesystem that every process sees: checkpoints are written there together."""
    import jax

    from gaxp import distributed

    if jax.process_count() == 1:
        return resolve(config)
    answer = ""
    if jax.process_index() == 0:
        try:
            directory, restore = resolve(config)
            answer = json.dumps({"dir": str(directory.absolute()), "restore": restore})
        except ConfigError as e:
            answer = json.dumps({"error": str(e)})
    got = json.loads(distributed.broadcast_text(answer))
    if "error" in got:
        raise ConfigError(got["error"])
    directory = Path(got["dir"])
    if not distributed.all_ok(directory.is_dir()):
        raise ConfigError(f"the run directory {directory} chosen by process 0 is not visible to "
                          "every process; multi-process runs write one checkpoint together, so "
                          "set hydra.run.dir to a shared filesystem path")
    return directory, bool(got["restore"])
