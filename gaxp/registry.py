"""The extension points of gaxp: literal registries filled by decorators.

A plugin is exactly what a built-in is: a module whose functions are registered here, plus a
config file in the matching group (``loss/<name>.yaml``) found through Hydra's search path.
gaxp's own losses, stabilizers, architectures, data sources, metrics and tasks register with the
same decorators::

    import gaxp

    @gaxp.register.loss("soft_hinge")
    def soft_hinge():
        return gaxp.Loss(d=..., g=...)

Then ``gaxp-train plugins=[my_gan.ideas] loss=soft_hinge``. Every entry may declare its own typed
settings: a frozen dataclass given as ``params=``; config validation builds it from the keys of
the group node that gaxp's own spec does not have (``loss.margin=2`` for a loss whose params
have a ``margin`` field), so typos still stop with the list of valid keys.

This module imports nothing of gaxp but ``gaxp.errors``: every other module can register into it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from typing import Any, Callable, NamedTuple, Optional

from gaxp.errors import ConfigError, unknown
from gaxp.specs import PenaltyParams


class Registry(dict):
    """``name -> entry`` for one kind of extension, remembering where each name was registered."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind  # e.g. "loss", "data source": the word of its error messages
        self.where: dict[str, str] = {}

    def add(self, name: str, entry: Any, where: str) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"a {self.kind} name must be an identifier (got {name!r} at {where})")
        if name in self:
            raise ConfigError(f"{self.kind} {name!r} is registered twice: at {self.where[name]} and "
                              f"at {where}; rename one of them")
        self[name], self.where[name] = entry, where

    def entry(self, name: str, what: Optional[str] = None):
        """The entry, or ``unknown <kind> 'x'; valid: ...`` (plugins' names included)."""
        if name not in self:
            error = unknown(what or self.kind, name, self)
            raise ConfigError(f"{error}; an entry of your own needs its module in plugins=[...]")
        return self[name]


def _where(fn: Callable) -> str:
    """``module.function (file:line)`` of a decorated object, for duplicate-name errors."""
    try:
        line = inspect.getsourcelines(fn)[1]
        return f"{fn.__module__}.{fn.__qualname__} ({inspect.getsourcefile(fn)}:{line})"
    except (OSError, TypeError):
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _check_params(kind: str, name: str, params) -> None:
    if params is None:
        return
    if not (dataclasses.is_dataclass(params) and isinstance(params, type)
            and params.__dataclass_params__.frozen):
        raise ConfigError(f"{kind} {name!r}: params must be a frozen dataclass "
                          f"(@dataclasses.dataclass(frozen=True)), got {params!r}")


# ----------------------------------------------------------------------------- entries


class LossEntry(NamedTuple):
    make: Callable  # () -> Loss, or (params) -> Loss when params is set
    params: Optional[type] = None


class RegularizerEntry(NamedTuple):
    """A stabilizer. Each hook is optional; the step calls those an entry has:

    - ``penalty(d_fn, real, fake, key, p) -> scalar``: a gradient penalty; its params subclass
      ``gaxp.specs.PenaltyParams`` (``weight``, ``every``: lazy regularization);
    - ``d_term(ctx, p) -> (scalar, metrics)``: a term added to D's loss (``ctx``: ``DTermContext``);
    - ``view(x, key, step, p) -> (x, metrics)``: changes what D sees, real and fake, in both steps;
    - ``model(model_spec, p) -> {ModelSpec field: value}``: a stabilizer that lives in the networks;
    - ``check(path, p, loss_name)``: validation beyond the dataclass types (raise ConfigError);
    - ``phases(config) -> (Phase, ...)``: the stretches of the run it changes (D pre-training).
    """

    params: type
    penalty: Optional[Callable] = None
    d_term: Optional[Callable] = None
    view: Optional[Callable] = None
    model: Optional[Callable] = None
    check: Optional[Callable] = None
    order: int = 100  # position among the d_terms and views (the sum's order is part of a digest)
    phases: Optional[Callable] = None  # (config) -> tuple of gaxp.specs.Phase (D pre-training)


class ArchEntry(NamedTuple):
    build: Callable  # (ModelSpec, shape, image: bool, rngs) -> (G, D)
    check: Optional[Callable] = None  # (ModelSpec, shape, image) -> None, raises ConfigError; None: any shape
    # Stabilizers that need model support: PacGAN packing in D, minibatch stddev in D,
    # spectral norm in G (checked before anything is built).
    supports: frozenset = frozenset({"pack", "mbstd", "g_spectral_norm"})
    params: Optional[type] = None  # the arch's own hyperparameters: ModelSpec.params
    pixels: str = "signed"  # the images G makes and D reads: [-1, 1] or "unit" [0, 1] (gaxp.pixels)
    phases: Optional[Callable] = None  # (config) -> tuple of gaxp.specs.Phase (ProGAN's stages)


class SourceEntry(NamedTuple):
    build: Callable  # (name, *, split, image_size, data_dir, seed, process_index, process_count,
    #                  **extra) -> a dataset (gaxp.data.images.ImageDataset, toy2d.PointDataset)
    labeled: bool = False  # accepts labeled=True (toy points labelled with their mode)


class MetricEntry(NamedTuple):
    """An evaluation metric: ``compute(fake, real, ctx) -> {name: value}`` on host arrays of
    ``n_fake`` generated and ``n_real`` real samples (images in [-1, 1] NHWC, or 2D points drawn
    from the mixture with a fixed seed), ``kinds`` the data kinds it accepts (``image``, ``points``)."""

    compute: Callable
    kinds: tuple = ("image", "points")


class TaskEntry(NamedTuple):
    """What a run trains: the compiled step and what it needs around it (``gaxp.tasks``)."""

    step: Callable  # (state, batch, key, hp, *, spec, **extras) -> (state, metrics)
    archs: tuple  # the models this task trains; () = any noise -> sample arch
    needs_paired: bool = True  # c[i] must be the source of x[i]
    batch_keys: tuple = ("x", "c")
    grid: Optional[Callable] = None  # (run) -> an object with draw(g, stats) and write(x, path)
    evaluator: Optional[Callable] = None  # (config, dataset, mesh, spec) -> evaluator
    extras: Optional[Callable] = None  # (config) -> constants bound into the step
    phases: Optional[Callable] = None  # (config) -> tuple of gaxp.specs.Phase (SRGAN's pre-training)
    state: Optional[Callable] = None  # (config, shape) -> the task's own state pytree, or None


LOSSES = Registry("loss")
REGULARIZERS = Registry("regularizer")
ARCHS = Registry("model")
SOURCES = Registry("data source")
METRICS = Registry("metric")
TASKS = Registry("task")


class _Register:
    """``gaxp.register.<kind>(name, ...)``: decorators that add an entry to a registry."""

    @staticmethod
    def loss(name: str, *, params: Optional[type] = None):
        """Register ``fn() -> Loss`` (``fn(params) -> Loss`` with ``params``) as ``loss=<name>``."""
        def deco(fn):
            _check_params("loss", name, params)
            LOSSES.add(name, LossEntry(fn, params), _where(fn))
            return fn
        return deco

    @staticmethod
    def penalty(name: str, *, params: Optional[type] = None):
        """Register a gradient penalty ``fn(d_fn, real, fake, key, p) -> scalar`` as
        ``regularizer=<name>`` (and ``loss.penalty=<name>``); ``params`` subclasses PenaltyParams."""
        def deco(fn):

            p = params or PenaltyParams
            _check_params("regularizer", name, p)
            if not issubclass(p, PenaltyParams):
                raise ConfigError(f"penalty {name!r}: params must subclass gaxp.PenaltyParams "
                                  f"(weight, every), got {p.__name__}")
            REGULARIZERS.add(name, RegularizerEntry(p, penalty=fn), _where(fn))
            return fn
        return deco

    @staticmethod
    def regularizer(name: str, *, params: type, d_term=None, view=None, model=None, check=None,
                    order: int = 100, phases=None):
        """Register a stabilizer with any of the hooks of ``RegularizerEntry``; ``phases(config)``:
        its phases (``gaxp.specs.Phase``), each compiled on its own (D pre-training)."""
        _check_params("regularizer", name, params)
        hooks = (d_term, view, model, phases)
        where = _where(next((h for h in hooks if h is not None), params))
        REGULARIZERS.add(name, RegularizerEntry(params, None, d_term, view, model, check, order, phases),
                         where)
        return params

    @staticmethod
    def arch(name: str, *, check: Optional[Callable] = None,
             supports=("pack", "mbstd", "g_spectral_norm"), params: Optional[type] = None,
             pixels: str = "signed", phases: Optional[Callable] = None):
        """Register ``build(model_spec, shape, image, rngs) -> (G, D)`` as ``model=<name>``;
        ``check(model_spec, shape, image)`` raises ConfigError for shapes it cannot make (none:
        every shape is accepted); ``params``: the arch's own hyperparameters (``model.<key>``,
        read as ``spec.params``); ``pixels``: the range of the images G makes and D reads,
        ``signed`` [-1, 1] (tanh) or ``unit`` [0, 1] (sigmoid; see ``gaxp.pixels``);
        ``phases(config)``: the arch's phases (``gaxp.specs.Phase``), each compiled on its own."""
        def deco(fn):
            _check_params("model", name, params)
            if pixels not in ("signed", "unit"):
                raise unknown(f"pixel range of model {name!r}", pixels, ("signed", "unit"))
            ARCHS.add(name, ArchEntry(fn, check, frozenset(supports), params, pixels, phases),
                      _where(fn))
            return fn
        return deco

    @staticmethod
    def source(name: str, *, labeled: bool = False):
        """Register a data source ``build(name, *, split, image_size, data_dir, seed,
        process_index, process_count) -> dataset`` as ``data.source=<name>``."""
        def deco(fn):
            SOURCES.add(name, SourceEntry(fn, labeled), _where(fn))
            return fn
        return deco

    @staticmethod
    def metric(name: str, *, kinds=("image", "points")):
        """Register ``compute(fake, real, ctx) -> {key: value}`` as ``metrics.names=[<name>]``."""
        def deco(fn):
            METRICS.add(name, MetricEntry(fn, tuple(kinds)), _where(fn))
            return fn
        return deco

    @staticmethod
    def task(name: str, *, archs=(), needs_paired: bool = True, batch_keys=("x", "c"), grid=None,
             evaluator=None, extras=None, phases=None, state=None):
        """Register a train step ``step(state, batch, key, hp, *, spec) -> (state, metrics)`` as
        ``task=<name>`` (``hp``: a population member's traced hyperparameters, ``{}`` for one
        run), with the archs it trains, its batch keys, sample grid and evaluator; ``phases(config)
        -> (Phase, ...)``: its phases (``spec.phase`` names the active one); ``state(config,
        shape)``: its own part of the train state (``state.task_state``), or None."""
        def deco(fn):
            TASKS.add(name, TaskEntry(fn, tuple(archs), needs_paired, tuple(batch_keys), grid,
                                      evaluator, extras, phases, state), _where(fn))
            return fn
        return deco


register = _Register()


def load_plugins(modules) -> None:
    """Import each plugin module (its decorators register its entries). A module that is missing
    or fails to import is one ConfigError naming it."""
    for name in modules or ():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"plugins must be a list of module names, e.g. plugins=[my_gan.ideas] "
                              f"(got {name!r})")
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                raise ConfigError(f"plugin {name} not found: no module {e.name!r} on the Python "
                                  "path; install its package or add its directory to "
                                  "PYTHONPATH") from None
            raise ConfigError(f"plugin {name} failed to import: {type(e).__name__}: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"plugin {name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - a plugin's own bug, reported as one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ConfigError(f"plugin {name} failed to import: {type(e).__name__}: {first}") from None

