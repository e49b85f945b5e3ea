"""Hydra composition of gaxp's configs, shared by the CLIs and the Python API.

The configs ship inside the package and are found as ``pkg://gaxp.conf``; a user's own config
groups join through Hydra's search path (``hydra.searchpath=[pkg://my_gan.conf]`` or
``--config-dir``), and their registered entries through ``plugins=[my_gan.ideas]``. The early
checks here run before Hydra starts a job, with Hydra's own argument parser and config loader, so
they see exactly the configs Hydra will see, and they leave Hydra's informational flags
(``--cfg``, ``--info``, ``--help``, ``-sc``) alone. Each problem is one line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import NamedTuple

from gaxp.errors import ConfigError
from gaxp.files import unwritable

CONF_MODULE = "gaxp.conf"
CONF_DIR = Path(__file__).resolve().parent / "conf"
PLUGIN_LAUNCHERS = ("slurm",)  # conf/hydra/launcher entries that extend a plugin's launcher
NULLABLE = ("experiment", "debug", "hparams_search")
# Hydra's flags that show something instead of running a job: no early check applies to them.
INFORMATIONAL = ("help", "hydra_help", "cfg", "info", "shell_completion", "version",
                 "experimental_rerun")


class Command(NamedTuple):
    """The command line as Hydra reads it."""

    overrides: list
    config_name: str
    config_dir: str | None
    multirun: bool
    informational: bool


def parse_argv(argv: list[str]) -> Command:
    """``argv`` through Hydra's own argument parser (a parse error: informational, so Hydra
    reports it itself)."""
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return Command([], "train", None, False, True)
    info = any(getattr(args, k, None) for k in INFORMATIONAL)
    return Command(list(args.overrides), args.config_name or "train", args.config_dir,
                   bool(args.multirun), info)


def register_resolvers() -> None:
    """``${gaxp.suffix:}``: six random characters (lowercase letters and digits, ~31 bits) that
    keep default run directories of runs started in the same second apart, on one machine or
    many. Cached per composed config, so every job of a sweep sees the same sweep directory."""
    import secrets
    import string

    from omegaconf import OmegaConf

    chars = string.ascii_lowercase + string.digits
    OmegaConf.register_new_resolver("gaxp.suffix",
                                    lambda: "".join(secrets.choice(chars) for _ in range(6)),
                                    use_cache=True, replace=True)


@contextlib.contextmanager
def initialized(config_dir: str | None = None):
    """Hydra initialized on gaxp's configs (plus ``--config-dir``, first, as Hydra does); yields
    Hydra's config loader."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if config_dir is not None and not os.path.isdir(config_dir):
        raise ConfigError(f"--config-dir {config_dir} is not a directory")
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_module(CONF_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        if config_dir is not None:
            loader.config_search_path.prepend("command-line", f"file://{os.path.abspath(config_dir)}")
        yield loader


def _search_path_problem(overrides) -> str | None:
    """``hydra.searchpath`` entries that point nowhere."""
    for o in overrides:
        if o.key_or_group != "hydra.searchpath":
            continue
        value = o.value()
        for entry in value if isinstance(value, list) else [value]:
            entry = str(entry)
            if entry.startswith("pkg://"):
                module = entry[len("pkg://"):].replace("/", ".")
                try:
                    found = importlib.util.find_spec(module) is not None
                except (ImportError, ValueError):
                    found = False
                if not found:
                    return (f"hydra.searchpath entry {entry}: no package {module!r} on the Python "
                            "path; install it or add its directory to PYTHONPATH")
            elif not os.path.isdir(entry.removeprefix("file://")):
                return (f"hydra.searchpath entry {entry} is not a directory; give file://<dir> or "
                        "pkg://<package> of your config groups")
    return None


def _has_submitit() -> bool:
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
    except ModuleNotFoundError:
        return False


def _writable(path: Path) -> str | None:
    """Why ``path`` cannot be created and written, or None."""
    why = unwritable(path)
    if why is None:
        return None
    probe, reason = why
    return f"{probe} is not a directory" if reason == "not a directory" else reason


def _unknown_key(path: str, others: list[str], config_name: str) -> str:
    """``unknown key a.b.c; valid keys: ...`` for an override of a key the config does not have
    (called inside ``initialized``)."""
    from hydra import compose
    from omegaconf import OmegaConf

    parent, _, _ = path.rpartition(".")
    try:
        node = OmegaConf.select(compose(config_name, overrides=others), parent) if parent else None
        valid = f"; valid keys{' under ' + parent if parent else ''}: {', '.join(sorted(node))}"
    except Exception:  # noqa: BLE001 - the message stays useful without the list
        valid = ""
    return f"unknown key {path}{valid} (add a new key with +{path}=...)"


def _compose_error(e: Exception, first: list[str], config_name: str) -> str:
    """One line for a Hydra composition failure: unknown group options and keys list valid ones."""
    import re

    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException):
        group, _, name = (e.missing_cfg_file or "").rpartition("/")
        if group and e.options:
            hint = ("; other launchers come from plugins, e.g. pip install hydra-submitit-launcher"
                    if group == "hydra/launcher" else "")
            return f"unknown {group} {name!r}; valid: {', '.join(sorted(e.options))}{hint}"
        if not group:
            return f"no primary config {name!r} in the config search path (--config-name)"
    key = re.match(r"Could not override '([^']+)'", str(e))
    if key and "not in struct" in str(e.__cause__):
        return _unknown_key(key.group(1), [o for o in first if not o.startswith(key.group(1) + "=")],
                            config_name)
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


def _group_problem(key: str, values: list[str], valid: list[str]) -> str | None:
    for v in values:
        if key == "hydra/launcher" and v in PLUGIN_LAUNCHERS and not _has_submitit():
            return (f"hydra/launcher={v} needs the hydra-submitit-launcher plugin: "
                    "pip install -e '.[slurm]' (or pip install hydra-submitit-launcher)")
        if v not in valid and not (v == "null" and key in NULLABLE):
            hint = ("; other launchers come from plugins, e.g. pip install "
                    "hydra-submitit-launcher" if key == "hydra/launcher" else "")
            return f"unknown {key} {v!r}; valid: {', '.join(valid)}{hint}"
    return None


def _group_options(loader, key: str, config_name: str, searchpath: list[str]) -> list[str]:
    """A group's options, nested ones as ``sub/option`` (``experiment=lucic_fashion/ns``)."""
    valid = list(loader.get_group_options(key, config_name=config_name, overrides=searchpath))
    for sub in loader.list_groups(key):
        valid += [f"{sub}/{o}" for o in _group_options(loader, f"{key}/{sub}", config_name, searchpath)]
    return valid


def _first_combination(parsed, loader, config_name: str, searchpath: list[str]):
    """(the first combination of a sweep as plain overrides, the searched keys, a problem)."""
    first, searched = [], []
    for o in parsed:
        key = o.key_or_group.split("@")[0].lstrip("+~")
        if "." not in key and not o.is_delete():
            valid = _group_options(loader, key, config_name, searchpath)
            problem = _group_problem(key, _options(o), valid) if valid else None
            if problem:
                return first, searched, problem
        if o.is_sweep_override() and not (o.is_choice_sweep() or o.is_range_sweep()):
            searched.append(o.key_or_group.removeprefix("hydra.sweeper.params."))
            continue  # interval(...): a search space for Optuna, not a value to compose
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else None
        first.append(f"{o.get_key_element()}={values[0]}" if values else o.input_line)
    return first, searched, None


def check_overrides(args: list[str], *, config_name: str = "train",
                    config_dir: str | None = None) -> str | None:
    """A one-line problem with the command-line overrides, or None. Checks the search path, group
    options against Hydra's config search path (every value of a sweep or a list; Hydra's
    sweeper/launcher too), composes the first combination to catch unknown keys, imports the
    plugins it names, checks an Optuna search space, and that the output directory is writable."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from gaxp.config import load_plugins  # deferred: gaxp.config loads JAX; the CLI starts without it

    overrides = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        return f"cannot parse the overrides: {str(e).splitlines()[0]}"
    problem = _search_path_problem(parsed)
    if problem:
        return problem
    searchpath = [o.input_line for o in parsed if o.key_or_group == "hydra.searchpath"]
    try:
        with initialized(config_dir) as loader:
            first, searched, problem = _first_combination(parsed, loader, config_name, searchpath)
            if problem:
                return problem
            try:
                cfg = compose(config_name, overrides=first, return_hydra_config=True)
            except (HydraException, OmegaConfBaseException) as e:
                return _compose_error(e, first, config_name)
    except (HydraException, OmegaConfBaseException) as e:
        return _compose_error(e, [], config_name)
    except ConfigError as e:
        return str(e)
    for key in searched:
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            return f"the search space names {key}, which is not a config key"
    multirun = bool({"-m", "--multirun"} & set(args))
    try:
        load_plugins(OmegaConf.select(cfg, "plugins", default=None) or ())
        if not multirun:  # a sweep's jobs are checked one by one (a failing job is recorded)
            _validate(cfg)
    except ConfigError as e:
        return str(e)
    out = Path(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)
    why = _writable(out)
    if why:
        return (f"cannot write to the output directory {out}: {why}; choose another with "
                f"runs_root=<dir> or hydra.{'sweep' if multirun else 'run'}.dir=<dir>")
    return _check_search_space(cfg)


def _validate(cfg) -> None:
    """The whole config of a single run through ``gaxp.config.load`` (ConfigError), before Hydra
    creates or touches its run directory."""
    from omegaconf import OmegaConf, open_dict

    from gaxp.config import load  # deferred: gaxp.config loads JAX; the CLI starts without it

    cfg = cfg.copy()
    with open_dict(cfg):
        if "out_dir" not in cfg or OmegaConf.is_interpolation(cfg, "out_dir"):
            cfg.out_dir = str(cfg.hydra.run.dir)
        del cfg["hydra"]
    load(cfg)


def compose_run(overrides: list[str], *, config_name: str = "train", config_dir: str | None = None):
    """The config of one run composed from ``overrides`` (checked first: ConfigError), with
    ``out_dir`` set to the run directory Hydra would use; returns the DictConfig without ``hydra``."""
    from hydra import compose
    from omegaconf import OmegaConf, open_dict

    problem = check_overrides(list(overrides), config_name=config_name, config_dir=config_dir)
    if problem:
        raise ConfigError(problem)
    with initialized(config_dir):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    run_dir = str(cfg.hydra.run.dir)
    with open_dict(cfg):
        if "out_dir" not in cfg or OmegaConf.is_interpolation(cfg, "out_dir"):
            cfg.out_dir = run_dir
        del cfg["hydra"]
    return cfg


def compose_node(overrides: list[str]) -> dict:
    """The train config composed with ``overrides``, as a plain dict (ConfigError on mistakes)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_run([*overrides, "out_dir=unused"]), resolve=True)


def run_config(overrides: list[str]):
    """A validated Config from train.yaml and ``overrides`` (for scripts that need data specs)."""
    from gaxp.config import load  # deferred: gaxp.config loads JAX; the CLI starts without it

    return load(compose_node(overrides))


def fail(prog: str, message: str, code: int = 2) -> None:
    """Print ``prog: error: message`` on stderr and exit with ``code`` (2: a user mistake)."""
    kind = "stopped" if code > 128 else "error"
    print(f"{prog}: {kind}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def parse_options(argv: list[str], options: dict, passthrough: tuple = ()) -> tuple[dict, list]:
    """``key=value`` arguments -> (typed options, config overrides). Overrides are the arguments
    whose key is a group in ``passthrough`` (``metrics=default``) or below one (``metrics.n_fake=1000``)."""

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


