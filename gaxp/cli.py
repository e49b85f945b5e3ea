"""Command-line entry points (thin ``@hydra.main`` wrappers; no training logic here).

User mistakes exit with code 2 and one line on stderr, before anything compiles: group options
(Hydra's own ``hydra/sweeper`` and ``hydra/launcher`` too), keys, plugins and an Optuna search
space are checked against Hydra's config search path before Hydra runs (``gaxp.compose``), and ``ConfigError`` from
``gaxp.config``/``gaxp.training`` is caught per job. In a multirun sweep a failing job is recorded in
``<sweep dir>/failures.jsonl`` and the sweep goes on; with ``objective`` set (Optuna sweeps) a job
returns that final metric, and a failed one the worst value (+-inf), which Optuna accepts.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from gaxp.errors import GaxpError, Preempted
from gaxp.compose import (CONF_DIR, check_overrides, fail, parse_argv,  # noqa: F401 - re-exported
                          register_resolvers)


def eval_main() -> None:
    """``gaxp-eval <run dir or checkpoint> [metrics=...] [key=value ...]``."""
    from gaxp.evaluate import main  # deferred: the entry point starts without JAX

    main(sys.argv[1:])


def sample_main() -> None:
    """``gaxp-sample <run dir or checkpoint> [n=64 truncation=... interpolate=true ...]``."""
    from gaxp.sample import main  # deferred: the entry point starts without JAX

    main(sys.argv[1:])


def fid_main() -> None:
    """``gaxp-fid A B [--n N ...]``: FID and KID between folders, stats, runs or dataset splits."""
    from gaxp.metrics.fid_cli import main  # deferred: the entry point starts without JAX

    main(sys.argv[1:])


def _record_failure(error: str) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    row = {"job": hc.job.num, "overrides": list(hc.overrides.task), "error": error}
    path = Path(hc.sweep.dir) / "failures.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"gaxp-train: job {hc.job.num} failed: {error}", file=sys.stderr)


def _sweep_group(cfg) -> None:
    """Runs of one sweep share a W&B group: the sweep directory's name (under runs_root/multirun
    its date and time), unless logger.wandb.group is set."""
    from hydra.core.hydra_config import HydraConfig

    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb is not None and wandb.get("group") is None:
        sweep = Path(HydraConfig.get().sweep.dir)
        base = Path(str(cfg.get("runs_root", "outputs"))) / "multirun"
        inside = sweep.resolve().is_relative_to(base.resolve())
        wandb.group = str(sweep.resolve().relative_to(base.resolve())) if inside else sweep.name


def _objective(cfg, summary: dict | None, multirun: bool):
    """What the job returns: the summary, or with ``objective`` set the final value of its key
    (a failed job or a non-finite value: the worst value, which Optuna records as such)."""
    objective = cfg.get("objective")
    if not objective:
        return summary
    worst = math.inf if objective.get("direction", "minimize") == "minimize" else -math.inf
    if summary is None:
        return worst
    value = summary["final"].get(objective.key)
    if value is None:
        message = (f"objective {objective.key} is not a final metric; "
                   f"have: {', '.join(sorted(summary['final']))}")
        _record_failure(message) if multirun else print(f"gaxp-train: {message}", file=sys.stderr)
        return worst
    return float(value) if math.isfinite(value) else worst


QUALITY = ("eval/fid", "eval/kid", "eval/fd_mnist", "eval/is_mnist", "eval/precision_mnist",
           "eval/recall_mnist", "eval/modes", "eval/hq_frac")


def quality(summary: dict) -> str:
    """The final evaluation for the last console line: ``FID 41.2 (500 vs 500 mnist/train),
    fd_mnist 12.1, ...; `` (nothing when the run evaluated nothing)."""
    evals = summary.get("eval") or {}
    shown = [f"{k.removeprefix('eval/')} {evals[k]:.4g}" for k in QUALITY if k in evals]
    if not shown:
        return ""
    p = evals.get("protocol") or {}
    if "eval/fid" in evals and "n_real" in p:
        shown[0] = shown[0].replace("fid", "FID") + \
            f" ({p['n_fake']} vs {p['n_real']} {p.get('reference', 'real')})"
    return ", ".join(shown) + "; "


def _train_task(cfg):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gaxp.api import run as train  # deferred: the entry point starts without JAX
    from gaxp.config import load_plugins  # (the same)

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        if multirun:
            _sweep_group(cfg)
        load_plugins(cfg.get("plugins") or ())  # a launcher's job process imports them anew
        summary = train(cfg)
    except GaxpError as e:
        if not multirun or isinstance(e, Preempted):  # a signal stops the whole sweep
            fail("gaxp-train", str(e), e.exit_code)
        _record_failure(str(e))
        return _objective(cfg, None, multirun)
    except Exception as e:  # a crashing job must not stop the sweep
        if not multirun:
            raise
        _record_failure(f"{type(e).__name__}: {e}")
        return _objective(cfg, None, multirun)
    print(f"gaxp-train: done: {summary['steps']} steps, {summary['images_per_s']:.0f} images/s, "
          f"{quality(summary)}outputs in {summary['run_dir']}", file=sys.stderr)
    return _objective(cfg, summary, multirun)


def train_main() -> None:
    """``gaxp-train [overrides] [-m]``: train one GAN, or a sweep with ``-m``. gaxp is a Hydra app:
    Hydra's flags (``--cfg job``, ``--info``, ``-sc install=bash``, ``--config-dir``, ...) work as
    Hydra documents them; gaxp's early checks see the same config search path."""
    import logging

    import hydra

    register_resolvers()
    # A log file (Hydra's <run dir>/*.log) on a full disk must not print a traceback for each
    # record: the console still shows them, and the run reports the failed write in one line.
    logging.raiseExceptions = False
    command = parse_argv(sys.argv[1:])
    if not command.informational:
        problem = check_overrides(command.overrides + (["-m"] if command.multirun else []),
                                  config_name=command.config_name,
                                  config_dir=command.config_dir)
        if problem:
            fail("gaxp-train", problem)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    hydra.main(config_path="pkg://gaxp.conf", config_name="train", version_base="1.3")(_train_task)()


if __name__ == "__main__":
    train_main()
