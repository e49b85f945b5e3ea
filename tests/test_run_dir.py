"""Run directories that cannot collide, with real ``gaxp-train`` processes: a second process on a
held directory is refused before it writes anything, a crashed run leaves no stale lock, and
runs started together with default directories each get their own."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import xla_flags, no_final_eval

from gaxp import run_dir
from gaxp.errors import RunDirInUse

BIN = Path(sys.executable).with_name("gaxp-train")
TOY = ("model=mlp", "data=ring", "model.g_width=32", "model.d_width=32", "data.batch_size=32",
       "logger=none", "trainer.progress=false", "trainer.sample_every=100000")


def _cli(args, cwd, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
    return subprocess.Popen([str(BIN), *no_final_eval(args)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _wait_for(proc, ready, what, timeout=240):
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"exited before {what}: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _hold(proc) -> None:
    """Stop ``proc`` (SIGSTOP) and wait until the kernel reports it stopped: it keeps its lock and
    writes nothing until SIGCONT, however fast or slow this machine is."""
    proc.send_signal(signal.SIGSTOP)
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.time() + 30
    while stat.read_text().rpartition(")")[2].split()[0] != "T":
        assert time.time() < deadline, "the process did not stop"
        time.sleep(0.01)


def _snapshot(directory: Path) -> dict:
    """Every file under ``directory`` (but the lock file and the growing metrics) -> its bytes."""
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name not in ("metrics.jsonl", run_dir.LOCK_FILE)}


def test_a_second_process_on_a_held_directory_is_refused_and_changes_nothing(tmp_path):
    run = tmp_path / "run"
    first_args = [*TOY, "trainer.steps=100000", "trainer.log_every=10", "trainer.ckpt_every=100"]
    first = _cli([*first_args, f"hydra.run.dir={run}"], tmp_path)
    _wait_for(first, lambda: (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size,
              "the first metrics row")
    _hold(first)  # mid-run, whatever the machine's speed
    before = _snapshot(run)
    assert (run / ".hydra" / "overrides.yaml").read_bytes() in before.values()
    # the second one differs (seed) so that anything it wrote would show
    second = _cli([*TOY, "trainer.seed=7", "trainer.steps=50", f"hydra.run.dir={run}"], tmp_path)
    _, err = second.communicate(timeout=120)
    assert first.poll() is None
    assert second.returncode == RunDirInUse.exit_code, err[-2000:]
    assert re.fullmatch(rf"gaxp-train: error: {re.escape(str(run))} is in use by another gaxp run "
                        rf"\(pid {first.pid} on {re.escape(socket.gethostname())}, since [-\d :]+\); "
                        r"one process writes a run directory: wait for that run to end, or choose "
                        r"another with hydra.run.dir=<dir>", err.strip()), err
    assert _snapshot(run) == before  # not one file of the first run touched, .hydra/ included
    first.send_signal(signal.SIGTERM)  # the first run goes on undisturbed, then is stopped cleanly
    first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, err[-2000:]
    steps = [r["step"] for r in _rows(run / "metrics.jsonl")]
    assert steps == list(range(10, steps[-1] + 1, 10))  # its own rows, each once
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["trainer"]["seed"] == 0 and config["trainer"]["steps"] == 100000
    saved = sorted(int(p.name) for p in (run / "checkpoints").iterdir())
    assert saved and saved[-1] >= steps[-1] - 10  # the preemption checkpoint
    assert not (run / run_dir.LOCK_FILE).read_text()  # released at the end: no holder recorded


def test_kill_9_leaves_no_stale_lock_and_resume_logs_every_step_once(tmp_path):
    run = tmp_path / "run"
    args = [*TOY, "trainer.steps=1500", "trainer.log_every=10", "trainer.ckpt_every=100",
            f"hydra.run.dir={run}"]
    proc = _cli(args, tmp_path)
    _wait_for(proc, lambda: (run / "checkpoints" / "200").is_dir(), "checkpoint 200")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert json.loads((run / run_dir.LOCK_FILE).read_text())["pid"] == proc.pid  # its last word
    resumed = _cli([*args, "trainer.resume=true"], tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] >= 200 and summary["steps"] == 1500
    assert [r["step"] for r in _rows(run / "metrics.jsonl")] == list(range(10, 1501, 10))


def test_a_population_holds_every_member_directory(tmp_path):
    """A member directory of a running population cannot be resumed alone by another process."""
    run = tmp_path / "pop"
    pop = _cli([*TOY, "trainer.population=2", "trainer.steps=3000", "trainer.ckpt_every=50",
                "trainer.log_every=50", f"hydra.run.dir={run}"], tmp_path)
    member = run / "members" / "01"
    _wait_for(pop, lambda: (member / "checkpoints" / "50").is_dir(), "member 1's first checkpoint")
    _hold(pop)  # mid-run, whatever the machine's speed
    other = _cli([*TOY, "trainer.steps=3000", f"trainer.resume={member}"], tmp_path)
    _, err = other.communicate(timeout=120)
    assert pop.poll() is None
    assert other.returncode == RunDirInUse.exit_code, err[-2000:]
    assert f"error: {member} is in use by another gaxp run (pid {pop.pid} on " in err
    pop.send_signal(signal.SIGTERM)  # enough: stop it (delivered once it runs again)
    pop.send_signal(signal.SIGCONT)
    _, err = pop.communicate(timeout=120)
    assert pop.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert all(not (d / run_dir.LOCK_FILE).read_text() for d in (run, member, run / "members" / "00"))


@pytest.mark.slow  # eight processes at once: ~90 s on 2 cores
def test_eight_runs_started_together_get_eight_default_directories(tmp_path):
    procs = [_cli([*TOY, "trainer.steps=2", "trainer.log_every=1", f"trainer.seed={i}",
                   f"runs_root={tmp_path / 'outputs'}"], tmp_path) for i in range(8)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e[-1000:] for e in errs]
    dirs = sorted((tmp_path / "outputs").glob("*/*"))
    assert len(dirs) == 8, dirs
    day = time.strftime("%Y-%m-%d")
    for d in dirs:  # <runs_root>/<date>/<HH-MM-SS>-<6 random characters>
        assert d.parent.name == day and re.fullmatch(r"\d\d-\d\d-\d\d-[a-z0-9]{6}", d.name), d
        seed = json.loads((d / "run.json").read_text())["config"]["trainer"]["seed"]
        assert [r["step"] for r in _rows(d / "metrics.jsonl")] == [1, 2], d
        assert json.loads((d / "summary.json").read_text())["run_dir"] == str(d)
        assert f"trainer.seed={seed}" in (d / ".hydra" / "overrides.yaml").read_text()
    seeds = {json.loads((d / "run.json").read_text())["config"]["trainer"]["seed"] for d in dirs}
    assert seeds == set(range(8))
    # the lock file's holder is recorded while a run holds it, and cleared after
    assert all(not (d / run_dir.LOCK_FILE).read_text() for d in dirs)
    # trainer.resume=true still finds the matching run among the suffixed directories
    more = _cli([*TOY, "trainer.steps=4", "trainer.log_every=1", "trainer.seed=3",
                 "trainer.resume=true", f"runs_root={tmp_path / 'outputs'}"], tmp_path)
    _, err = more.communicate(timeout=300)
    assert more.returncode == 0, err[-2000:]
    seed3 = next(d for d in dirs
                 if json.loads((d / "run.json").read_text())["config"]["trainer"]["seed"] == 3)
    summary = json.loads((seed3 / "summary.json").read_text())
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    assert [r["step"] for r in _rows(seed3 / "metrics.jsonl")] == [1, 2, 3, 4]


def test_the_lock_is_one_per_process_and_reentrant(tmp_path):
    """In-process view of the same lock: re-entrant for its holder; another process is refused
    (a real child process holding it), and a released directory is free again."""
    held = tmp_path / "held"
    run_dir.hold(held)
    run_dir.hold(held)  # the same process again: fine
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from gaxp import run_dir; run_dir.hold(sys.argv[1])", str(held)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert child.returncode != 0 and "RunDirInUse" in child.stderr
    assert f"pid {os.getpid()} on {socket.gethostname()}" in child.stderr
    run_dir.release(held)
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from gaxp import run_dir; run_dir.hold(sys.argv[1])", str(held)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert child.returncode == 0, child.stderr[-2000:]


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_default_directories_have_a_suffix_and_a_sweep_shares_one(kind):
    """``${gaxp.suffix:}``: random per composed config, one value within a config (a sweep's jobs
    copy the config's cache, see Hydra's load_sweep_config)."""
    from hydra import compose, initialize_config_dir
    from conftest import CONF_DIR

    from gaxp.cli import register_resolvers

    register_resolvers()
    names = set()
    for _ in range(3):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", return_hydra_config=True)
        d = str(cfg.hydra[kind].dir)
        assert d == str(cfg.hydra[kind].dir)  # cached: the same path every time it is read
        assert re.fullmatch(r"outputs/(multirun/)?\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-[a-z0-9]{6}", d), d
        names.add(d)
    assert len(names) == 3
