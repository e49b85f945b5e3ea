"""Hydra config -> frozen, validated dataclasses.

Every check of user input lives here and runs before anything is compiled. ``load(cfg)`` turns the
composed ``DictConfig`` into a :class:`Config` whose parts are frozen (hashable) dataclasses
(defined in ``gaxp.specs``, re-exported here), so
the parts the step needs can be static arguments of ``jax.jit``. Errors are :class:`ConfigError`
with a one-line message that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gaxp import (augment, data, losses, members, models, optim, regularizers,  # noqa: F401
                  step, tasks)  # gaxp's own entries register on import (step: task=gan)
from gaxp.errors import ConfigError, unknown
from gaxp.registry import ARCHS, LOSSES, REGULARIZERS, SOURCES
from gaxp.registry import load_plugins as _import_plugins
from gaxp.specs import (  # noqa: F401 - re-exported: gaxp.config is where callers find them
    GrowSpec,
    ModelSpec,
    LossSpec,
    PenaltyParams,
    AugmentParams,
    BcrParams,
    SmoothingParams,
    NoiseParams,
    SpectralNormParams,
    PackParams,
    MbstdParams,
    PretrainParams,
    DriftParams,
    RegSpec,
    ObjectiveSpec,
    OptSpec,
    OptimSpec,
    DataSpec,
    EmaSpec,
    GuardSpec,
    TrainerSpec,
    PopulationSpec,
    WandbSpec,
    LoggerSpec,
    MetricsSpec,
    TaskSpec,
    Config,
)
from gaxp.optim import OPTIMIZERS
from gaxp.models.conditional import CONDS
from gaxp.metrics.features import parse_metric


def load_plugins(modules) -> None:
    """Import the plugin modules after gaxp's own entries (imported with this module), so a name
    a plugin registers twice is reported at the plugin."""
    _import_plugins(modules)


def _is_optional(tp) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return True, args[0] if len(args) == 1 else Any
    return False, tp


def _coerce(value: Any, tp: Any, path: str) -> Any:
    optional, tp = _is_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{path} must be set (got null)")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is Any:
        return value
    if tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list (got {value!r})")
        return tuple(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false (got {value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number (got {value!r})")
        if not math.isfinite(value):
            raise ConfigError(f"{path} must be finite (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string (got {value!r})")
        return value
    raise TypeError(f"unsupported config type {tp} at {path}")


def _build(cls, node: Any, path: str):
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys with the valid ones."""
    if not isinstance(node, dict):
        raise ConfigError(f"{path or 'the config'} must be a mapping (got {node!r})")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(node) - names
    if extra:
        key = sorted(extra)[0]
        where = f"{path}.{key}" if path else key
        raise ConfigError(f"unknown key {where}; valid keys: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in node.items()}
    return cls(**kwargs)


def _positive(path: str, value, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{path} must be {'>= 0' if allow_zero else '> 0'} (got {value})")


def _with_params(node: dict, spec: type, registry, path: str) -> dict:
    """Split a group node into the spec's own keys and the entry's own settings (``params``): the
    keys of the spec go through as they are, the rest build the entry's params dataclass."""
    own = {f.name for f in dataclasses.fields(spec)}
    name = node.get("name", spec.name if hasattr(spec, "name") else None)
    entry = registry.entry(name, path) if isinstance(name, str) else None
    extra = {k: v for k, v in node.items() if k not in own}
    if isinstance(node.get("params"), dict):  # a Config written back as a dict (asdict)
        extra = {**node["params"], **extra}
    node = {k: v for k, v in node.items() if k in own and k != "params"}
    declared = getattr(entry, "params", None)
    if declared is None:
        if extra:
            key = sorted(extra)[0]
            raise ConfigError(f"unknown key {path}.{key}; valid keys: {', '.join(sorted(own - {'params'}))}"
                              f" ({path}={name} declares no settings of its own)")
        return node
    return {**node, "params": _build(declared, extra, path)}


def _check_names(cfg: Config) -> None:

    if cfg.loss.penalty is not None and cfg.loss.penalty not in REGULARIZERS:
        raise unknown("loss.penalty", cfg.loss.penalty, REGULARIZERS)
    SOURCES.entry(cfg.data.source)
    for net in ("g", "d"):
        name = getattr(cfg.optim, net).name
        if name not in OPTIMIZERS:
            raise unknown(f"optimizer optim.{net}.name", name, OPTIMIZERS)
    if cfg.model.g_norm not in ("batch", "instance", "none"):
        raise ConfigError(f"model.g_norm must be one of: batch, instance, none "
                          f"(got {cfg.model.g_norm!r})")
    if cfg.model.d_norm not in ("batch", "instance", "layer", "none"):
        raise ConfigError(
            f"model.d_norm must be one of: batch, instance, layer, none (got {cfg.model.d_norm!r})"
        )

    if cfg.model.cond not in CONDS:
        raise ConfigError(f"model.cond must be one of: {', '.join(CONDS)} (got {cfg.model.cond!r})")
    if cfg.model.name == "mlp" and "instance" in (cfg.model.g_norm, cfg.model.d_norm):
        raise ConfigError("model=mlp has no spatial axes for instance norm; use batch, layer or none")
    if cfg.model.init not in ("default", "dcgan"):
        raise ConfigError(f"model.init must be one of: dcgan, default (got {cfg.model.init!r})")
    if cfg.trainer.guard.action not in ("rollback", "stop"):
        raise ConfigError(f"trainer.guard.action must be one of: rollback, stop "
                          f"(got {cfg.trainer.guard.action!r})")
    if cfg.objective is not None and cfg.objective.direction not in ("minimize", "maximize"):
        raise ConfigError(f"objective.direction must be minimize or maximize "
                          f"(got {cfg.objective.direction!r})")
    if cfg.logger.wandb is not None:
        modes = ("auto", "online", "offline", "disabled")
        if cfg.logger.wandb.mode not in modes:
            raise ConfigError(
                f"logger.wandb.mode must be one of: {', '.join(modes)} (got {cfg.logger.wandb.mode!r})"
            )


def _check_sizes(cfg: Config) -> None:
    m, t, d = cfg.model, cfg.trainer, cfg.data
    for path, value in [
        ("model.z_dim", m.z_dim), ("model.g_width", m.g_width), ("model.d_width", m.d_width),
        ("model.g_depth", m.g_depth), ("model.d_depth", m.d_depth),
        ("loss.n_critic", cfg.loss.n_critic), ("data.batch_size", d.batch_size),
        ("data.image_size", d.image_size), ("trainer.steps", t.steps),
        ("trainer.log_every", t.log_every), ("trainer.ckpt_every", t.ckpt_every),
        ("trainer.sample_every", t.sample_every), ("trainer.keep", t.keep),
        ("trainer.devices", t.devices), ("trainer.n_samples", t.n_samples),
        ("optim.g.lr", cfg.optim.g.lr), ("optim.d.lr", cfg.optim.d.lr),
        ("trainer.ema.halflife_kimg", t.ema.halflife_kimg),
    ]:
        _positive(path, value)
    for path, value in [
        ("model.maxout", m.maxout), ("loss.clip", cfg.loss.clip), ("model.ac_weight", m.ac_weight),
        ("model.cond_embed_dim", m.cond_embed_dim), ("model.cond_embed_std", m.cond_embed_std),
        ("loss.penalty_weight", cfg.loss.penalty_weight), ("trainer.ema.rampup", t.ema.rampup),
    ]:
        _positive(path, value, allow_zero=True)
    g = t.guard
    _positive("trainer.guard.patience", g.patience)
    _positive("trainer.guard.max_rollbacks", g.max_rollbacks, allow_zero=True)
    if not 0.0 < g.lr_factor <= 1.0:
        raise ConfigError(f"trainer.guard.lr_factor must be in (0, 1] (got {g.lr_factor})")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in g.inject_nan):
        raise ConfigError(f"trainer.guard.inject_nan must be a list of steps >= 1 "
                          f"(got {list(g.inject_nan)})")
    if g.inject_nan and not g.enabled:
        raise ConfigError("trainer.guard.inject_nan needs trainer.guard.enabled=true")
    if cfg.logger.wandb is not None:
        _positive("logger.wandb.init_timeout", cfg.logger.wandb.init_timeout)
    if m.maxout == 1:
        raise ConfigError("model.maxout must be 0 (off) or >= 2 pieces (got 1)")
    if not 0.0 < m.bn_momentum < 1.0:
        raise ConfigError(f"model.bn_momentum must be in (0, 1) (got {m.bn_momentum})")
    if cfg.loss.penalty is not None and cfg.loss.penalty_weight == 0:
        raise ConfigError(f"loss.penalty={cfg.loss.penalty} needs loss.penalty_weight > 0")
    for net in ("g", "d"):
        o = getattr(cfg.optim, net)
        for k in ("b1", "b2"):
            if not 0.0 <= getattr(o, k) < 1.0:
                raise ConfigError(f"optim.{net}.{k} must be in [0, 1) (got {getattr(o, k)})")
        if not 0.0 <= o.decay <= 1.0:
            raise ConfigError(f"optim.{net}.decay is the fraction of the run over which the "
                              f"learning rate falls to zero; it must be in [0, 1] (got {o.decay})")
    _check_dropout(m)


def _check_dropout(m: ModelSpec) -> None:
    """Pix2Pix's dropout noise in the U-Net (model=pix2pix only)."""
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1) (got {m.dropout})")
    if m.dropout_levels < 1:
        raise ConfigError(f"model.dropout_levels must be >= 1 (got {m.dropout_levels})")
    if m.dropout and m.name != "pix2pix":
        raise ConfigError(f"model.dropout is the Pix2Pix U-Net's noise; model={m.name} has none "
                          "(set model.dropout=0)")
    if m.dropout and m.g_depth < 2:
        raise ConfigError("model.dropout needs a U-Net decoder level to drop: model.g_depth >= 2 "
                          "(or set model.dropout=0)")


def _check_metrics(m: MetricsSpec) -> None:

    if m.names == ("auto",):
        pass
    elif "auto" in m.names:
        raise ConfigError(f"metrics.names: auto must stand alone (got {list(m.names)})")
    else:
        for name in m.names:
            parse_metric(str(name))
        if len(set(m.names)) != len(m.names):
            raise ConfigError(f"metrics.names lists a metric twice: {list(m.names)}")
    _positive("metrics.every", m.every, allow_zero=True)  # 0: only at the last step
    for key in ("n_fake", "n_real", "batch_size", "kid_subsets", "is_splits", "pr_k", "dc_k",
                "mode_min_count"):
        _positive(f"metrics.{key}", getattr(m, key))
    if m.kid_subset_size < 2:
        raise ConfigError(f"metrics.kid_subset_size must be >= 2 (got {m.kid_subset_size})")


def plain(cfg: DictConfig | dict) -> dict:
    """The composed config as plain, resolved data: what ``load`` accepts (and what run.json keeps,
    so tools such as gaxp-eval can load a run's config again)."""
    if isinstance(cfg, DictConfig):
        try:
            node = OmegaConf.to_container(cfg, resolve=True)
        except Exception as e:  # interpolation errors from OmegaConf
            raise ConfigError(f"config does not resolve: {str(e).splitlines()[0]}") from None
    else:
        node = dict(cfg)
    node.pop("hydra", None)
    return node


def load(cfg: DictConfig | dict) -> Config:
    """Validate and freeze a composed Hydra config. Raises ConfigError on any bad input."""
    node = plain(cfg)
    logger = node.get("logger") or {}
    node["logger"] = {"wandb": logger.get("wandb"), "jsonl": logger.get("jsonl", True)}
    node["metrics"] = node.get("metrics") or {}
    for key in ("model", "loss", "data", "optim", "trainer"):
        if key not in node:
            raise ConfigError(f"config group {key} is missing; add {key}=<name> to the command")
    if "out_dir" not in node:
        raise ConfigError("out_dir is not set; run through gaxp-train or pass out_dir=<dir>")
    load_plugins(node.get("plugins") or ())  # before any name is looked up
    for key, spec, registry in (("model", ModelSpec, ARCHS), ("loss", LossSpec, LOSSES)):
        if isinstance(node[key], dict):
            node[key] = _with_params(node[key], spec, registry, key)
    regularizer = node.pop("regularizer", None)
    population = node.pop("population", None)
    config = _build(Config, node, "")
    _check_names(config)
    _check_sizes(config)
    _check_metrics(config.metrics)
    _check_scale(config.trainer)
    tasks.check_config(config, regularizer)
    config = _with_regularizers(config, regularizer)
    return dataclasses.replace(config, population=members.population_spec(config, population))


def _check_scale(t: TrainerSpec) -> None:
    """Precision and multi-process settings."""
    for key, valid in (("precision", ("fp32", "bf16")), ("distributed", ("auto", "manual", "off")),
                       ("on_write_error", ("stop", "warn"))):
        if getattr(t, key) not in valid:
            raise ConfigError(f"trainer.{key} must be one of: {', '.join(valid)} "
                              f"(got {getattr(t, key)!r})")
    _positive("trainer.init_timeout", t.init_timeout)
    manual = {"coordinator": t.coordinator, "num_processes": t.num_processes,
              "process_id": t.process_id}
    if t.distributed != "manual":
        extra = [k for k, v in manual.items() if v is not None]
        if extra:
            raise ConfigError(f"trainer.{extra[0]} is only used with trainer.distributed=manual "
                              f"(got trainer.distributed={t.distributed})")
        return
    missing = [k for k, v in manual.items() if v is None]
    if missing:
        raise ConfigError(f"trainer.distributed=manual needs trainer.{missing[0]} (all of: "
                          "trainer.coordinator=host:port trainer.num_processes=N trainer.process_id=I)")
    host, _, port = t.coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"trainer.coordinator must be host:port (got {t.coordinator!r})")
    _positive("trainer.num_processes", t.num_processes)
    if not 0 <= t.process_id < t.num_processes:
        raise ConfigError(f"trainer.process_id must be in [0, {t.num_processes}) "
                          f"(got {t.process_id})")


def _regularizer_entries(node: Any, loss: LossSpec) -> dict:
    if not isinstance(node or {}, dict):
        raise ConfigError("regularizer must map names to settings; select with regularizer=[r1,bcr]")
    entries = {}
    for name, params in (node or {}).items():
        entries[name] = _build(REGULARIZERS.entry(name).params, params or {}, f"regularizer.{name}")
    if loss.penalty is not None:
        if REGULARIZERS[loss.penalty].penalty is None:
            valid = sorted(n for n, r in REGULARIZERS.items() if r.penalty is not None)
            raise ConfigError(f"loss.penalty must be a gradient penalty: {', '.join(valid)} "
                              f"(got {loss.penalty!r})")
        if loss.penalty in entries:
            raise ConfigError(f"{loss.penalty} is set twice, by loss.penalty and by "
                              f"regularizer={loss.penalty}; drop one")
        entries[loss.penalty] = REGULARIZERS[loss.penalty].params(weight=loss.penalty_weight)
    return entries


def _with_regularizers(config: Config, node: Any) -> Config:
    """Validate the regularizer group and fold it in: ``loss.penalty`` becomes an entry, and the
    stabilizers that live in the models set their ModelSpec fields."""
    entries = _regularizer_entries(node, config.loss)
    for name, params in entries.items():
        regularizers.check_entry(f"regularizer.{name}", name, params, config.loss.name)
    lazy = {p.every for p in entries.values() if isinstance(p, PenaltyParams) and p.every > 1}
    if len(lazy) > 1:
        raise ConfigError(f"lazy penalties must share one interval (got every={sorted(lazy)}); "
                          "StyleGAN2 rescales D's optimizer for a single interval")
    pack = entries.get("pacgan")
    if pack and pack.batch == "packs":  # Lin et al.'s code: D sees data.batch_size packs
        config = dataclasses.replace(config, data=dataclasses.replace(
            config.data, batch_size=config.data.batch_size * pack.pack))
    model = config.model
    for name, params in sorted(entries.items()):  # stabilizers that live in the networks
        if REGULARIZERS[name].model is not None:
            model = dataclasses.replace(model, **REGULARIZERS[name].model(model, params))
    _check_batch_groups(model, config.data.batch_size)
    reg = RegSpec(tuple(sorted(entries.items())))
    return dataclasses.replace(config, model=model, regularizer=reg)


def _check_batch_groups(m: ModelSpec, batch: int) -> None:
    if m.d_pack < 1 or m.d_mbstd < 0 or m.d_mbstd == 1:
        raise ConfigError(f"model.d_pack must be >= 1 and model.d_mbstd 0 or >= 2 "
                          f"(got {m.d_pack}, {m.d_mbstd})")
    if batch % m.d_pack:
        raise ConfigError(f"data.batch_size={batch} is not divisible by the PacGAN pack size "
                          f"{m.d_pack}; use a multiple of {m.d_pack}")
    if m.d_mbstd and (batch // m.d_pack) % m.d_mbstd:
        raise ConfigError(f"D sees {batch // m.d_pack} samples per batch, not divisible by the "
                          f"minibatch-stddev group {m.d_mbstd}; change data.batch_size or the group")


def check_for_data(config: Config, shape: tuple, image: bool) -> None:
    """Checks that need the dataset's shape: the model's and the stabilizers' (before compiling)."""
    check = ARCHS[config.model.name].check
    if check is not None:  # an arch registered without a check accepts every shape
        check(config.model, tuple(shape), image)
    m, needs = config.model, []
    needs += ["pack"] if m.d_pack > 1 else []
    needs += ["mbstd"] if m.d_mbstd else []
    needs += ["g_spectral_norm"] if m.g_spectral_norm else []
    missing = [n for n in needs if n not in ARCHS[m.name].supports]
    if missing:
        raise ConfigError(f"model={m.name} does not support {', '.join(missing)}; "
                          f"it supports: {', '.join(sorted(ARCHS[m.name].supports)) or 'none'}")
    for name in ("diffaugment", "bcr"):
        params = config.regularizer.get(name)
        if params is not None:
            augment.check_policy(f"regularizer.{name}.policy", params.policy, image)
