"""Command-line entry points (thin ``@hydra.main`` wrappers; no training logic here).

User mistakes exit with code 2 and one line on stderr, before anything compiles: group options
and keys are checked against the config tree before Hydra runs, and ``ConfigError`` from
``gaxp.config``/``gaxp.train`` is caught per job. In a multirun sweep a failing job is recorded in
``<sweep dir>/failures.jsonl`` and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _fail(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _groups() -> dict[str, list[str]]:
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in CONF_DIR.iterdir() if d.is_dir()}


def check_overrides(args: list[str]) -> str | None:
    """A one-line problem with the command-line overrides, or None. Checks group options (every
    value of a sweep) and composes the first combination to catch unknown keys."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

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
        if key.startswith("hydra") or key.startswith("+hydra"):
            continue
        first.append(f"{o.get_key_element()}={values[0]}" if values else o.input_line)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose("train", overrides=first)
    except (HydraException, OmegaConfBaseException) as e:
        return str(e).strip().splitlines()[0]
    return None


def fail(prog: str, message: str) -> None:
    """Print ``prog: error: message`` on stderr and exit with code 2 (a user mistake)."""
    _fail(prog, message)


def parse_options(argv: list[str], options: dict, passthrough: tuple = ()) -> tuple[dict, list]:
    """``key=value`` arguments -> (typed options, config overrides). Overrides are the arguments
    whose key is a group in ``passthrough`` (``metrics=default``) or below one (``metrics.n_fake=1000``)."""
    from gaxp.errors import ConfigError

    parsed, overrides = {}, []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise ConfigError(f"expected key=value, got {arg!r}")
        if key.split(".")[0] in passthrough:
            overrides.append(arg)
            continue
        if key not in options:
            valid = sorted([*options, *(f"{g}..." for g in passthrough)])
            raise ConfigError(f"unknown option {key!r}; valid: {', '.join(valid)}")
        typ = options[key]
        if typ is bool:
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"{key} must be true or false (got {value!r})")
            parsed[key] = value.lower() == "true"
            continue
        if value.lower() in ("null", "none") and typ is not str:
            parsed[key] = None
            continue
        try:
            parsed[key] = typ(value)
        except ValueError:
            raise ConfigError(f"{key} must be {'an integer' if typ is int else 'a number'} "
                              f"(got {value!r})") from None
    return parsed, overrides


def compose_node(overrides: list[str]) -> dict:
    """The train config composed with ``overrides``, as a plain dict (ConfigError on mistakes)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gaxp.errors import ConfigError

    problem = check_overrides(overrides)
    if problem:
        raise ConfigError(problem)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "out_dir=unused"])
    return OmegaConf.to_container(cfg, resolve=True)


def run_config(overrides: list[str]):
    """A validated Config from train.yaml and ``overrides`` (for scripts that need data specs)."""
    from gaxp.config import load

    return load(compose_node(overrides))


def eval_main() -> None:
    """``gaxp-eval <run dir or checkpoint> [metrics=...] [key=value ...]``."""
    from gaxp.evaluate import main

    main(sys.argv[1:])


def sample_main() -> None:
    """``gaxp-sample <run dir or checkpoint> [n=64 truncation=... interpolate=true ...]``."""
    from gaxp.sample import main

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


def _train_task(cfg):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gaxp.errors import ConfigError
    from gaxp.train import train

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        summary = train(cfg)
    except ConfigError as e:
        if not multirun:
            _fail("gaxp-train", str(e))
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
