"""Write errors on real file systems: a full disk during a checkpoint (a small tmpfs), a file size
limit hit by ``metrics.jsonl`` mid-run, and the warn/stop policies of the checkpointer. Each ends
in one line that names the file, the cause, the last intact checkpoint and the resume command;
nothing written before is lost, and the resumed run matches an uninterrupted one.

A read-only directory would be the obvious way to make a write fail, but these tests run as root
(CI does), and root writes into read-only directories; a tmpfs that fills up and RLIMIT_FSIZE
(``ulimit -f``) make real writes fail for root too."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import xla_flags, no_final_eval

from gaxp.errors import WriteFailed

BIN = Path(sys.executable).with_name("gaxp-train")
TOY = ("model=mlp", "data=ring", "model.g_width=32", "model.d_width=32", "data.batch_size=32",
       "logger=none", "trainer.progress=false", "trainer.sample_every=100000")
PAGE = 4096


# Sets RLIMIT_FSIZE, then becomes the command: a preexec_fn would fork this multithreaded (JAX)
# process and run Python in the child, which can deadlock.
_WITH_FSIZE = ("import os, resource, sys; n = int(sys.argv[1]); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])")


def _cli(args, cwd, env=None, fsize=None):
    env = dict(env or os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
    limit = [] if fsize is None else [sys.executable, "-c", _WITH_FSIZE, str(fsize)]
    return subprocess.run([*limit, str(BIN), *no_final_eval(args)], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600)


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _losses(path):
    """(step, D loss, G loss) of each row (timings differ between runs, losses must not)."""
    return [(r["step"], r["train/d_loss"], r["train/g_loss"]) for r in _rows(path)]


def _partials(run: Path) -> list:
    return [p for p in run.rglob("*") if "orbax-checkpoint-tmp" in p.name or ".tmp-" in p.name]


@pytest.fixture
def tmpfs(tmp_path):
    """mount(path, size): a fresh tmpfs of ``size`` bytes at ``path``; unmounted afterwards."""
    mounted = []

    def mount(path: Path, size: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a full disk is simulated with a small tmpfs, and mounting one needs root "
                        "(CI runs as root)")
        path.mkdir(parents=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _resize(path: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def _fill(path: Path) -> Path:
    """Write zeros to ``path/filler`` until the file system is full."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(PAGE * 16))
        except OSError:
            pass
        try:
            while True:
                f.write(bytes(PAGE))
        except OSError:
            pass
    return filler


def _size_on_disk(directory: Path) -> int:
    return sum(-(-p.stat().st_size // PAGE) * PAGE + PAGE for p in directory.rglob("*"))


def test_a_full_disk_during_a_checkpoint_is_one_line_and_resume_matches(tmp_path, tmpfs):
    args = ["model=mlp", "data=ring", "data.batch_size=64", "logger=none", "trainer.progress=false",
            "trainer.steps=60", "trainer.ckpt_every=10", "trainer.log_every=5",
            "trainer.sample_every=100000"]
    straight = tmp_path / "straight"
    done = _cli([*args, f"hydra.run.dir={straight}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    per_checkpoint = max(_size_on_disk(d) for d in (straight / "checkpoints").iterdir())
    # room for two checkpoints and a half: the third one fills the disk
    disk = tmpfs(tmp_path / "disk", (5 * per_checkpoint // 2 + 512 * 1024) // PAGE * PAGE)
    run = disk / "run"
    done = _cli([*args, f"hydra.run.dir={run}"], tmp_path)
    assert done.returncode == WriteFailed.exit_code, done.stderr[-3000:]
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    # the checkpoint's directory, whichever of its files hit the full disk first
    assert line.startswith(f"gaxp-train: error: could not write checkpoint 30 to {run}/checkpoints/30: "
                           f"No space left on device; the last intact checkpoint is step 20 "
                           f"({run}/checkpoints/20); fix that, then resume with: gaxp-train ")
    assert line.endswith(f" trainer.resume={run}")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["10", "20"]
    assert not _partials(run)  # the partial checkpoint was removed
    logged = _losses(run / "metrics.jsonl")
    assert logged == _losses(straight / "metrics.jsonl")[: len(logged)] and len(logged) >= 6
    _resize(disk, 256 * 1024 * 1024)  # the user frees space, then runs the command given
    resume = line.split("resume with: ")[1].split()
    assert resume[0] == "gaxp-train"
    done = _cli([*resume[1:], f"hydra.run.dir={run}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    a = json.loads((run / "summary.json").read_text())
    b = json.loads((straight / "summary.json").read_text())
    assert a["resumed_from"] == 20 and a["digest"] == b["digest"]
    assert _losses(run / "metrics.jsonl") == _losses(straight / "metrics.jsonl")


def test_a_write_error_on_metrics_jsonl_mid_run_is_one_line_and_truncates_nothing(tmp_path):
    """``metrics.jsonl`` reaches the file size limit (RLIMIT_FSIZE, ``ulimit -f``; works for
    any user) in the middle of a resumed run: the row that does not fit is not left half
    written, every earlier row is kept, and the resume command given finishes the run."""
    run = tmp_path / "run"
    args = [*TOY, "trainer.log_every=1", "trainer.ckpt_every=10", f"hydra.run.dir={run}"]
    done = _cli([*args, "trainer.steps=20"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    before = (run / "metrics.jsonl").read_bytes()
    small = [run / "metrics.jsonl", run / "run.json", *(run / ".hydra").iterdir()]
    limit = max(p.stat().st_size for p in small) + 4000  # a dozen rows more, then the limit
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    longer = [*args, "trainer.steps=400", "trainer.ckpt_every=100000", "trainer.resume=true"]
    done = _cli(longer, tmp_path, env=env, fsize=limit)
    assert done.returncode == WriteFailed.exit_code, done.stderr[-3000:]
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    rows = _rows(run / "metrics.jsonl")
    failed = rows[-1]["step"] + 1
    assert line.startswith(f"gaxp-train: error: could not write the metrics of step {failed} to "
                           f"{run}/metrics.jsonl: File too large; the last intact checkpoint is "
                           f"step 20 ({run}/checkpoints/20); fix that, then resume with: gaxp-train ")
    text = (run / "metrics.jsonl").read_bytes()
    assert text.startswith(before) and text.endswith(b"\n") and len(text) <= limit
    assert [r["step"] for r in rows] == list(range(1, failed)) and failed > 21
    assert not _partials(run)
    resume = line.split("resume with: ")[1].split()
    done = _cli([*resume[1:], f"hydra.run.dir={run}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["step"] for r in _rows(run / "metrics.jsonl")] == list(range(1, 401))
    assert json.loads((run / "summary.json").read_text())["resumed_from"] == 20


def test_a_failed_save_names_its_checkpoint_or_the_file_outside_it(tmp_path):
    """Which file of a checkpoint meets the full disk first is chance, and its temporary directory
    is removed: the line names the checkpoint's directory. A file elsewhere is named as it is."""
    import errno

    from gaxp.checkpoint import Checkpointer

    ckpts = tmp_path / "checkpoints"
    c = Checkpointer(ckpts, 3)
    full = os.strerror(errno.ENOSPC)
    inside = [OSError(errno.ENOSPC, full, str(ckpts / "30.orbax-checkpoint-tmp-17" / "state" / "d")),
              OSError(errno.ENOSPC, full, str(ckpts / "30" / "meta" / "metadata")),
              ValueError(f'RESOURCE_EXHAUSTED: Failed writing: "{ckpts}/30.orbax-checkpoint-tmp-2/'
                         f'state/ocdbt.process_0/d/x" [os_error_code=28]'),
              ValueError("RESOURCE_EXHAUSTED: no file named [os_error_code=28]")]
    assert [c._failed_path(30, e) for e in inside] == [str(ckpts / "30")] * 4
    assert c._failed_path(30, OSError(errno.ENOSPC, full, str(ckpts / "300" / "x"))) == str(ckpts / "300" / "x")
    assert c._failed_path(30, OSError(errno.ENOSPC, full, "/elsewhere/lock")) == "/elsewhere/lock"
    assert c._failed_path(None, ValueError("[os_error_code=28]")) == str(ckpts)
    c.close()


_ABANDONED = """
import errno, os, sys
from gaxp.checkpoint import Checkpointer

async def write_fragment():  # a write of the failed save that Orbax's closed loop never ran
    pass

c = Checkpointer(sys.argv[1], 3, on_write_error="warn")
if sys.argv[2] == "failed":
    c._failed(30, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), sys.argv[1]), final=False)
left = write_fragment()  # collected at exit, unawaited
"""


def test_the_writes_a_failed_save_abandons_do_not_warn_at_exit(tmp_path):
    """A failed save's unstarted writes are dropped unawaited; Python warns of each when it is
    collected, often at exit (``sys:1: RuntimeWarning: coroutine ... was never awaited``), after
    gaxp's one line. Once a save has failed those warnings are left out; before, they show."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="default")
    runs = {how: subprocess.run([sys.executable, "-c", _ABANDONED, str(tmp_path / how), how],
                                env=env, text=True, capture_output=True, timeout=300)
            for how in ("failed", "saved")}
    assert all(r.returncode == 0 for r in runs.values()), [r.stderr[-2000:] for r in runs.values()]
    assert "write_fragment' was never awaited" in runs["saved"].stderr
    assert "never awaited" not in runs["failed"].stderr, runs["failed"].stderr
    assert "No space left on device" in runs["failed"].stderr  # the warn policy's one warning


def test_checkpoint_policies_and_atomic_files_on_a_full_disk(tiny, tmp_path, tmpfs, caplog):
    """In process, on a tmpfs filled with a filler file: ``warn`` logs a failed save and the
    next one succeeds once there is room; the run's last save must succeed (``close``); ``stop``
    raises. summary.json and metrics.jsonl keep their content when a write to them fails."""
    from gaxp.checkpoint import Checkpointer, integrity
    from gaxp.config import load
    from gaxp.logging.grids import save_image_grid
    from gaxp.logging.writers import JsonlWriter
    from gaxp.run_dir import write_json_atomic
    from gaxp.training import prepare

    import jax

    run, batches, own, state, _ = prepare(load(tiny("model=mlp", "data=ring", "data.batch_size=64")))
    own.close()
    disk = tmpfs(tmp_path / "disk", 32 * 1024 * 1024)
    ckpts = disk / "checkpoints"
    c = Checkpointer(ckpts, 3, on_write_error="warn")
    assert c.save(1, state, batches.iterator, {})
    c.wait()
    write_json_atomic(disk / "summary.json", {"steps": 1})
    metrics = JsonlWriter(disk / "metrics.jsonl")
    metrics.log(1, {"train/d_loss": 1.0})
    filler = _fill(disk)

    assert c.save(2, state, batches.iterator, {})
    c.wait()  # warn: the failure is a warning
    assert f"could not write checkpoint 2 to {ckpts}/2: No space left on device" in caplog.text
    assert "the next checkpoint tries again (trainer.on_write_error=warn)" in caplog.text
    assert sorted(p.name for p in ckpts.iterdir()) == ["1"]
    with pytest.raises(WriteFailed, match=r"summary.json: No space left on device"):
        write_json_atomic(disk / "summary.json", {"steps": 2, "pad": "x" * 3 * PAGE})
    assert json.loads((disk / "summary.json").read_text()) == {"steps": 1}
    with pytest.raises(WriteFailed, match=r"the metrics of step 2 to .*metrics.jsonl: No space left"):
        metrics.log(2, {f"k{i}": float(i) for i in range(2 * PAGE // 8)})
    assert [r["step"] for r in _rows(disk / "metrics.jsonl")] == [1]
    with pytest.raises(WriteFailed, match=r"a sample grid to .*step_2.png: No space left on device"):
        save_image_grid(np.zeros((64, 28, 28, 1), np.float32) + np.linspace(-1, 1, 28)[:, None],
                        disk / "step_2.png")
    assert not (disk / "step_2.png").exists() and not _partials(disk)

    filler.unlink()  # room again: the next save is written
    assert c.save(3, state, batches.iterator, {})
    c.wait()
    assert c.failed is None and sorted(p.name for p in ckpts.iterdir()) == ["1", "3"]
    filler = _fill(disk)
    c.save(4, state, batches.iterator, {})  # a warning at most: it is not known to be the last
    with pytest.raises(WriteFailed, match="could not write checkpoint 4"):
        c.close()  # the last save of a run must be written, warn or not
    filler.unlink()

    stop = Checkpointer(ckpts, 3)  # the default: stop
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored, meta = stop.restore_latest_good(abstract, batches.iterator)
    assert int(restored.step) == int(state.step) and integrity(restored)[1] == meta["integrity"]
    _fill(disk)
    with pytest.raises(WriteFailed, match=f"could not write checkpoint 5 to {ckpts}/5: No space left on device"):
        stop.save(5, state, batches.iterator, {})  # the failure surfaces here or at the wait
        stop.wait()
    stop.close()
    assert sorted(p.name for p in ckpts.iterdir()) == ["1", "3"] and not _partials(disk)
    metrics.close()


def test_a_full_disk_at_the_start_is_one_line_before_hydra_writes(tmp_path, tmpfs):
    """Hydra writes .hydra/ before the run starts; on a full disk that was its traceback."""
    disk = tmpfs(tmp_path / "disk", 1024 * 1024)
    _fill(disk)
    run = disk / "run"
    done = _cli([*TOY, "trainer.steps=5", f"hydra.run.dir={run}"], tmp_path)
    assert done.returncode == WriteFailed.exit_code, done.stderr[-2000:]
    assert done.stderr.strip() == (f"gaxp-train: error: could not write {run}: No space left on "
                                   "device; free some space, or choose another directory with "
                                   "hydra.run.dir=<dir>")
    assert [p.name for p in run.iterdir()] == [".gaxp.lock"]  # and it is empty: nobody holds it
