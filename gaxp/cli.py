"""Command-line entry points (thin ``@hydra.main`` wrappers; no training logic here).

User mistakes exit with code 2 and one line on stderr, before anything compiles: group options
and keys are checked against the config tree before Hydra runs, and ``ConfigError`` from
``gaxp.config``/``gaxp.train`` is caught per job. In a multirun sweep a failing job is recorded in
``<sweep dir>/failures.jsonl`` and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _fail(prog: str, message: str, code: int = 2) -> None:
    kind = "stopped" if code > 128 else "error"
    print(f"{prog}: {kind}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _groups() -> dict[str, list[str]]:
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in CONF_DIR.iterdir() if d.is_dir()}


def _writable(path: Path) -> str | None:
    """Why ``path`` cannot be created and written (checked on its nearest existing ancestor)."""
    import tempfile

    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".gaxp-write-test-"))
    except OSError as e:
        return e.strerror
    return None


def _unknown_key(path: str, others: list[str]) -> str:
    """``unknown key a.b.c; valid keys: ...`` for an override of a key the config does not have."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    parent, _, _ = path.rpartition(".")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            node = OmegaConf.select(compose("train", overrides=others), parent) if parent else None
        valid = f"; valid keys{' under ' + parent if parent else ''}: {', '.join(sorted(node))}"
    except Exception:  # noqa: BLE001 - the message stays useful without the list
        valid = ""
    return f"unknown key {path}{valid} (add a new key with +{path}=...)"


def _compose_first(first: list[str], multirun: bool) -> str | None:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=first, return_hydra_config=True)
    except MissingConfigException as e:
        group, _, name = (e.missing_cfg_file or "").rpartition("/")
        if group and e.options:
            hint = ("; other launchers come from plugins, e.g. pip install hydra-submitit-launcher"
                    if group == "hydra/launcher" else "")
            return f"unknown {group} {name!r}; valid: {', '.join(sorted(e.options))}{hint}"
        return str(e).strip().splitlines()[0]
    except (HydraException, OmegaConfBaseException) as e:
        key = re.match(r"Could not override '([^']+)'", str(e))
        if key and "not in struct" in str(e.__cause__):
            return _unknown_key(key.group(1), [o for o in first if not o.startswith(key.group(1) + "=")])
        return str(e).strip().splitlines()[0]
    out = Path(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)
    why = _writable(out)
    if why:
        return (f"cannot write to the output directory {out}: {why}; choose another with "
                f"runs_root=<dir> or hydra.{'sweep' if multirun else 'run'}.dir=<dir>")
    return None


def check_overrides(args: list[str]) -> str | None:
    """A one-line problem with the command-line overrides, or None. Checks group options (every
    value of a sweep), composes the first combination (with Hydra's own groups, e.g. the
    launcher) to catch unknown keys, and checks that the output directory can be written."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    overrides = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        return f"cannot parse the overrides: {str(e).splitlines()[0]}"
    groups, first = _groups(), []
    for o in parsed:
        key = o.key_or_group.split("@")[0]
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        if key in groups and not o.is_delete():
            for v in values:
                if v not in groups[key] and not (v == "null" and key in ("experiment", "debug")):
                    return f"unknown {key} {v!r}; valid: {', '.join(groups[key])}"
        first.append(f"{o.get_key_element()}={values[0]}" if values else o.input_line)
    return _compose_first(first, multirun=bool({"-m", "--multirun"} & set(args)))


def _record_failure(error: str) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    row = {"job": hc.job.num, "overrides": list(hc.overrides.task), "error": error}
    path = Path(hc.sweep.dir) / "failures.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"gaxp-train: job {hc.job.num} failed: {error}", file=sys.stderr)


def _train_task(cfg):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gaxp.errors import GaxpError, Preempted
    from gaxp.train import train

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        summary = train(cfg)
    except GaxpError as e:
        if not multirun or isinstance(e, Preempted):  # a signal stops the whole sweep
            _fail("gaxp-train", str(e), e.exit_code)
        _record_failure(str(e))
        return None
    except Exception as e:  # a crashing job must not stop the sweep
        if not multirun:
            raise
        _record_failure(f"{type(e).__name__}: {e}")
        return None
    print(f"gaxp-train: done: {summary['steps']} steps, {summary['images_per_s']:.0f} images/s, "
          f"outputs in {summary['run_dir']}", file=sys.stderr)
    return summary


def train_main() -> None:
    """``gaxp-train [overrides] [-m]``: train one GAN, or a sweep with ``-m``."""
    import hydra

    problem = check_overrides(sys.argv[1:]) if "--help" not in sys.argv and "-h" not in sys.argv else None
    if problem:
        _fail("gaxp-train", problem)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")(_train_task)()


if __name__ == "__main__":
    train_main()
