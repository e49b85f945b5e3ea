"""Command-line entry points (thin ``@hydra.main`` wrappers; no training logic here).

User mistakes exit with code 2 and one line on stderr, before anything compiles: group options
(Hydra's own ``hydra/sweeper`` and ``hydra/launcher`` too), keys and an Optuna search space are
checked against the config tree before Hydra runs, and ``ConfigError`` from
``gaxp.config``/``gaxp.train`` is caught per job. In a multirun sweep a failing job is recorded in
``<sweep dir>/failures.jsonl`` and the sweep goes on; with ``objective`` set (Optuna sweeps) a job
returns that final metric, and a failed one the worst value (+-inf), which Optuna accepts.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _fail(prog: str, message: str, code: int = 2) -> None:
    kind = "stopped" if code > 128 else "error"
    print(f"{prog}: {kind}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


PLUGIN_LAUNCHERS = ("slurm",)  # conf/hydra/launcher entries that extend a plugin's launcher


def _has_submitit() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
    except ModuleNotFoundError:
        return False


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


def _compose_error(e: Exception, first: list[str]) -> str:
    """One line for a Hydra composition failure: unknown group options and keys list valid ones."""
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException):
        group, _, name = (e.missing_cfg_file or "").rpartition("/")
        if group and e.options:
            hint = ("; other launchers come from plugins, e.g. pip install hydra-submitit-launcher"
                    if group == "hydra/launcher" else "")
            return f"unknown {group} {name!r}; valid: {', '.join(sorted(e.options))}{hint}"
    key = re.match(r"Could not override '([^']+)'", str(e))
    if key and "not in struct" in str(e.__cause__):
        return _unknown_key(key.group(1), [o for o in first if not o.startswith(key.group(1) + "=")])
    return str(e).strip().splitlines()[0]


def _options(o) -> list[str]:
    """Every option a group override names: ``a``, ``a,b`` (sweep), ``[a,b]`` (list), ``[a],[a,b]``."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = o.value()
    if o.is_sweep_override() and not isinstance(value, ChoiceSweep):
        return list(o.sweep_string_iterator())
    items = value.list if isinstance(value, ChoiceSweep) else [value]
    return [str(x) for item in items for x in (item if isinstance(item, list) else [item])]


def _check_search_space(cfg) -> str | None:
    """An Optuna search space (``hydra.sweeper.params``) must parse and name existing keys."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    for key, value in params.items():
        try:
            OverridesParser.create().parse_overrides([f"{key}={value}"])
        except HydraException as e:
            return f"search space hydra.sweeper.params.{key}={value} does not parse: " \
                   f"{str(e).strip().splitlines()[0]}"
        if OmegaConf.select(cfg, str(key), default="<missing>") == "<missing>":
            return f"the search space names {key}, which is not a config key"
    return None


def check_overrides(args: list[str]) -> str | None:
    """A one-line problem with the command-line overrides, or None. Checks group options (every
    value of a sweep or a list; Hydra's sweeper/launcher too), composes the first combination to
    catch unknown keys, checks an Optuna search space, and that the output directory is writable."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        return f"cannot parse the overrides: {str(e).splitlines()[0]}"
    groups, first, searched = _groups(), [], []
    nullable = ("experiment", "debug", "hparams_search")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            for o in parsed:
                key = o.key_or_group.split("@")[0].lstrip("+~")
                valid = groups.get(key) or (loader.get_group_options(key)
                                            if key.startswith("hydra/") else None)
                for v in _options(o) if valid and not o.is_delete() else []:
                    if key == "hydra/launcher" and v in PLUGIN_LAUNCHERS and not _has_submitit():
                        return (f"hydra/launcher={v} needs the hydra-submitit-launcher plugin: "
                                "pip install -e '.[slurm]' (or pip install hydra-submitit-launcher)")
                    if v not in valid and not (v == "null" and key in nullable):
                        hint = ("; other launchers come from plugins, e.g. pip install "
                                "hydra-submitit-launcher" if key == "hydra/launcher" else "")
                        return f"unknown {key} {v!r}; valid: {', '.join(valid)}{hint}"
                if o.is_sweep_override() and not (o.is_choice_sweep() or o.is_range_sweep()):
                    searched.append(o.key_or_group.removeprefix("hydra.sweeper.params."))
                    continue  # interval(...): a search space for Optuna, not a value to compose
                values = list(o.sweep_string_iterator()) if o.is_sweep_override() else None
                first.append(f"{o.get_key_element()}={values[0]}" if values else o.input_line)
            cfg = compose("train", overrides=first, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        return _compose_error(e, first)
    for key in searched:
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            return f"the search space names {key}, which is not a config key"
    multirun = bool({"-m", "--multirun"} & set(args))
    out = Path(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)
    why = _writable(out)
    if why:
        return (f"cannot write to the output directory {out}: {why}; choose another with "
                f"runs_root=<dir> or hydra.{'sweep' if multirun else 'run'}.dir=<dir>")
    return _check_search_space(cfg)


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


def fid_main() -> None:
    """``gaxp-fid A B [--n N ...]``: FID and KID between folders, stats, runs or dataset splits."""
    from gaxp.metrics.fid_cli import main

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


def _train_task(cfg):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gaxp.errors import GaxpError, Preempted
    from gaxp.train import train

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        if multirun:
            _sweep_group(cfg)
        summary = train(cfg)
    except GaxpError as e:
        if not multirun or isinstance(e, Preempted):  # a signal stops the whole sweep
            _fail("gaxp-train", str(e), e.exit_code)
        _record_failure(str(e))
        return _objective(cfg, None, multirun)
    except Exception as e:  # a crashing job must not stop the sweep
        if not multirun:
            raise
        _record_failure(f"{type(e).__name__}: {e}")
        return _objective(cfg, None, multirun)
    print(f"gaxp-train: done: {summary['steps']} steps, {summary['images_per_s']:.0f} images/s, "
          f"outputs in {summary['run_dir']}", file=sys.stderr)
    return _objective(cfg, summary, multirun)


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
