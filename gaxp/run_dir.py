"""Run directories: where a run writes, and which earlier run ``trainer.resume`` continues.

A run directory holds ``run.json`` (config key, W&B id), ``metrics.jsonl``, ``summary.json``,
``samples/`` and ``checkpoints/``. ``trainer.resume=true`` continues this run directory when it has
checkpoints, else the newest run under ``runs_root`` whose config key matches (the config minus
the keys that may change on resume: steps, resume, logging); ``trainer.resume=<dir>`` continues
that directory.

One process writes a run directory. The process that writes it (process 0 of a multi-process
run) holds an exclusive ``flock`` on ``<dir>/.gaxp.lock`` for the whole run, population member
directories included; the kernel drops it when the process ends, however it ends, so a crash
leaves no stale lock. A second process reaching a held directory stops before writing anything
there, with one line naming the holder's pid and host (``RunDirInUse``). ``gaxp-train`` takes
the lock of ``hydra.run.dir`` even before Hydra writes its ``.hydra/`` files (``LockRunDir``).

A write that fails during a run (disk full, quota, read-only file system) ends it with one line
(``WriteFailed``, completed by ``one_run``): the file, the cause, the last intact checkpoint and
the command that resumes the run.
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path

from gaxp.specs import Config
from gaxp.errors import ConfigError, GaxpError, RunDirInUse, WriteFailed
from gaxp.files import ONLY_WRITES, cause, errno_of, failed_file, write_atomic
from gaxp import distributed

log = logging.getLogger("gaxp")
LOCK_FILE = ".gaxp.lock"
_HELD: dict[str, int] = {}  # run directory (resolved) -> the fd holding its lock, this process
_RUNS: list[Path] = []  # the directories of the runs in progress in this process (``one_run``)

# Keys that may differ between a run and its resumption: where and how it logs and is evaluated,
# and for how long.
_NOT_EXPERIMENT = ("out_dir", "runs_root", "logger", "metrics")
_NOT_EXPERIMENT_TRAINER = ("resume", "steps", "progress", "log_every", "sample_every",
                           "ckpt_every", "keep", "distributed", "coordinator", "num_processes",
                           "process_id", "init_timeout", "on_write_error")


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
        try:
            probe.write_text("ok")
        finally:
            probe.unlink(missing_ok=True)
    except OSError as e:
        if e.errno in ONLY_WRITES[:2]:  # disk full or over quota: not the config's fault
            raise WriteFailed(path, f"{e.strerror}; free some space, or choose another directory "
                              "with hydra.run.dir=<dir>") from None
        raise _cannot_write(path, e) from None
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


def _cannot_write(path: Path, e: OSError) -> ConfigError:
    return ConfigError(f"cannot write to the output directory {path}: {e.strerror}; "
                       "choose another with hydra.run.dir=<dir>")


def hold(directory: Path) -> Path:
    """Take ``directory`` for this process: an exclusive lock held until ``release`` or the end
    of the process. Re-entrant within a process. ``RunDirInUse`` when another process holds it;
    a file system without locks gets a warning and no lock."""
    directory = Path(directory)
    key = str(directory.resolve())
    if key in _HELD:
        return directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        raise _cannot_write(directory, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunDirInUse(f"{directory} is in use by another gaxp run ({holder}); one process "
                          "writes a run directory: wait for that run to end, or choose another "
                          "with hydra.run.dir=<dir>") from None
    except OSError as e:  # e.g. a network file system without locks
        os.close(fd)
        log.warning("gaxp: cannot lock %s (%s); a second run started there would not be stopped",
                    directory, e.strerror)
        return directory
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only the holder's name is missing
    _HELD[key] = fd
    return directory


def _holder(fd: int) -> str:
    """``pid 123 on host, since ...`` from a held lock file (its holder writes it just after
    taking the lock, so wait a moment for it)."""
    for _ in range(40):
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"null")
            return f"pid {info['pid']} on {info['host']}, since {info['since']}"
        except (ValueError, TypeError, KeyError, OSError):
            time.sleep(0.05)
    return "its pid is not recorded"


def release(directory) -> None:
    """Give ``directory``'s lock back (its lock file is emptied: no holder)."""
    fd = _HELD.pop(str(Path(directory).resolve()), None)
    if fd is not None:
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)


@atexit.register
def _release_all() -> None:
    for key in list(_HELD):
        release(key)


def _claim(path: Path) -> Path:
    return ensure_writable(hold(path))


def resolve(config: Config) -> tuple[Path, bool]:
    """(run directory to write, whether to restore a checkpoint from it); the directory is held
    (``hold``) before anything is written there."""
    out = Path(config.out_dir)
    resume = config.trainer.resume
    if isinstance(resume, str) and resume.lower() not in ("true", "false"):
        target = Path(resume)
        if not has_checkpoint(target):
            raise ConfigError(f"trainer.resume={resume}: no checkpoints in {target / 'checkpoints'}; "
                              "point it at a gaxp run directory")
        return _claim(target), True
    resume = resume is True or str(resume).lower() == "true"
    _claim(out)
    if has_checkpoint(out):
        if not resume:
            raise ConfigError(f"{out} already has checkpoints; add trainer.resume=true to continue "
                              "it, or choose a new hydra.run.dir")
        return out, True
    if resume:
        found = find_resumable(Path(config.runs_root), config_key(config), out)
        if found is not None:
            _claim(found)
            write_atomic(out / "resumed.json", json.dumps({"resumed_run": str(found.resolve())}))
            return found, True
    return out, False


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON through a temporary file and a rename, so a crash or a full disk never leaves
    half a file (the old one stays); ``WriteFailed`` names the file."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def resolve_everywhere(config: Config) -> tuple[Path, bool]:
    """``resolve`` decided once, by process 0, and the same answer on every process (Hydra's
    timestamped run directories differ between processes started a second apart). The directory
    must be on a filesystem that every process sees: checkpoints are written there together."""
    import jax

    if jax.process_count() == 1:
        directory, restore = resolve(config)
        _RUNS.append(directory)
        return directory, restore
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
    _RUNS.append(directory)
    return directory, bool(got["restore"])


def last_checkpoint(directory: Path) -> int | None:
    """The newest complete checkpoint step in ``directory`` (Orbax renames a step's temporary
    directory only once it is complete); of a population, the newest that every member has."""
    members = directory / "members"
    if (directory / "population.json").exists() and members.is_dir():
        steps = [last_checkpoint(d) for d in members.iterdir() if d.is_dir()]
        return None if not steps or None in steps else min(steps)
    ckpt = directory / "checkpoints"
    return max((int(p.name) for p in ckpt.iterdir() if p.name.isdigit()), default=None) \
        if ckpt.is_dir() else None


def resume_command(directory: Path) -> str:
    """The command line of this run (Hydra's overrides) that continues it from ``directory``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        args = [a for a in HydraConfig.get().overrides.task if not a.startswith("trainer.resume=")]
    except (ImportError, ValueError):
        args = []
    return " ".join(["gaxp-train", *args, f"trainer.resume={directory}"])


def explain(e: WriteFailed, directory: Path | None) -> WriteFailed:
    """Complete ``e`` with what is intact in ``directory`` and how to continue."""
    if directory is None or e.after:
        return e
    step = last_checkpoint(directory)
    if step is None:
        e.after = "; no checkpoint was written yet; fix that and start the run again"
    else:
        where = directory / "checkpoints" / str(step)
        if (directory / "population.json").exists():
            where = directory / "members" / "*" / "checkpoints" / str(step)
        e.after = (f"; the last intact checkpoint is step {step} ({where}); fix that, then resume "
                   f"with: {resume_command(directory)}")
    return e


def one_run(fn):
    """Decorates the function that trains a run (``gaxp.training.train``, ``gaxp.population.train``). When it ends, the run
    directories locked during the call are released (so the same process, or another, may take
    them next). A ``WriteFailed`` is completed with the last intact checkpoint and the resume
    command; an ``OSError`` that can only come from a write (disk full, quota, read-only file
    system, file too large) becomes one."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        held, runs = set(_HELD), len(_RUNS)
        try:
            return fn(*args, **kwargs)
        except WriteFailed as e:
            raise explain(e, (_RUNS[runs:] or [None])[0])
        except OSError as e:
            if errno_of(e) not in ONLY_WRITES:
                raise
            raise explain(WriteFailed(failed_file(e, "a file of the run"), cause(e)),
                          (_RUNS[runs:] or [None])[0]) from None
        finally:
            for key in set(_HELD) - held:
                release(key)
            del _RUNS[runs:]

    return wrapper


try:
    from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover - Hydra is a dependency; this keeps the module importable
    _Callback = object


class LockRunDir(_Callback):
    """Hydra callback (``hydra.callbacks`` in train.yaml): ``gaxp-train`` holds ``hydra.run.dir``
    before Hydra writes ``.hydra/`` and its log there, so a second process on the same directory
    changes nothing in it, and a full disk is one line rather than Hydra's traceback. A multi-process run is left to ``resolve`` (process 0 holds the
    directory once ``jax.distributed`` says which process is 0)."""

    def on_run_start(self, config, **kwargs) -> None:

        mode = config.trainer.distributed
        try:
            if mode == "manual" or (mode == "auto" and distributed.detect() is not None):
                return
            _claim(Path(str(config.hydra.run.dir)))  # held, and writable (not a full disk)
        except GaxpError as e:
            print(f"gaxp-train: error: {e}", file=sys.stderr, flush=True)
            sys.exit(e.exit_code)
