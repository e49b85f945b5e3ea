"""Test setup: CPU JAX with 8 virtual devices, configured before JAX is imported."""

import atexit
import os
import shutil
import tempfile


def xla_flags(devices: int | None) -> str:
    """N virtual CPU devices (None: as many as JAX or gaxp choose). XLA:CPU aborts the process when a device thread misses a collective
    rendezvous for 40 s, which happens on a 2-core machine under heavy load (seen here at load 8);
    a late thread is not a bug, so the tests wait much longer."""
    count = f"--xla_force_host_platform_device_count={devices} " if devices else ""
    return (f"{count}--xla_cpu_collective_call_warn_stuck_timeout_seconds=600"
            " --xla_cpu_collective_call_terminate_timeout_seconds=1800")


os.environ["JAX_PLATFORMS"] = "cpu"
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " " + xla_flags(8)).strip()
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")
# Many tests compile the same programs (resume vs uninterrupted, same seed twice, subprocesses):
# JAX's persistent compilation cache compiles each once per machine.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"gaxp-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# gaxp's own cache (classifiers, Inception weights, reference statistics) starts empty, so no test
# depends on what this machine has cached; tests that need one build it and point GAXP_CACHE there.
os.environ["GAXP_CACHE"] = _cache = tempfile.mkdtemp(prefix="gaxp-tests-cache-")
# Each pytest process (the controller and every xdist worker) made its own; each removes its own
# at exit, after its gaxp-train subprocesses have ended (a suite left ~100 MB per process behind).
atexit.register(shutil.rmtree, _cache, ignore_errors=True)
# Tests download nothing: pip (and so the Inception weights' first-use fetch, in this process and
# in its gaxp-train subprocesses) reaches no index; a test that needs the weights finds them
# installed or skips.
os.environ["PIP_NO_INDEX"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[1] / "gaxp" / "conf"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def compose(*overrides: str, out_dir: str | Path = "/nonexistent"):
    """The real gaxp config composed with Hydra's compose API, plus overrides."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=[f"out_dir={out_dir}", *overrides])


FAST = ("trainer.progress=false", "logger=none")


@pytest.fixture(autouse=True)
def _registries_as_found():
    """Every test leaves gaxp's registries without the names a plugin added during it. A test that
    loads a plugin's run in its own process (``load_state`` imports the run's ``plugins=[...]``)
    would otherwise leak the plugin's names into the next test of the same xdist worker. The
    plugin's package is forgotten with its names, so a later import registers them again; names
    that gaxp's own modules register on first import stay."""
    import sys

    from gaxp import registry

    registries = [r for r in vars(registry).values() if isinstance(r, registry.Registry)]
    before = [set(r) for r in registries]
    yield
    for r, names in zip(registries, before):
        for name in [n for n in r if n not in names]:
            dotted = r.where[name].split(" ", 1)[0].split(".")  # "module.qualname (file:line)"
            module = next((m for m in (".".join(dotted[:k]) for k in range(len(dotted) - 1, 0, -1))
                           if m in sys.modules), "")
            if module.split(".")[0] == "gaxp":
                continue
            del r[name], r.where[name]
            top = module.split(".")[0]
            if top and not top.startswith(("test_", "conftest")):  # the plugin's whole package
                for m in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
                    del sys.modules[m]


def no_final_eval(args) -> list:
    """``args`` of a gaxp-train subprocess plus ``metrics=none`` when they choose no metrics (and no
    experiment, whose metrics stay): the default job's final evaluation (Inception, the MNIST
    classifier trained on first use) takes minutes on a CPU; its own tests ask for it."""
    args = [str(a) for a in args]
    chosen = any(a.split("=")[0].lstrip("+~") in ("metrics", "experiment", "hparams_search")
                 or a in ("--cfg", "--info", "-sc", "--help") for a in args)
    return args if chosen else [*args, "metrics=none"]


@pytest.fixture
def tiny(tmp_path):
    """compose() with fast defaults and a fresh run directory (runs_root also under tmp)."""

    def make(*overrides: str, name: str = "run"):
        cfg = compose(*FAST, f"runs_root={tmp_path}", *no_final_eval(overrides),
                      out_dir=tmp_path / name)
        if cfg.metrics.names == ["auto"] and cfg.metrics.every == 0 and not any(
                str(o).split("=")[0] == "metrics" for o in overrides):
            cfg.metrics.names = []  # an experiment's run without the default job's final evaluation
        return cfg

    return make
