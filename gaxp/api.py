"""The Python API: train, load, sample and evaluate from a notebook or a script.

``train`` runs exactly what ``gaxp-train`` runs (the same configs, checks, outputs and run
directory), and returns the summary also written to ``summary.json``::

    summary = gaxp.train(["loss=hinge", "trainer.steps=500"])
    g = gaxp.load(summary["run_dir"])
    images = g.sample(16, seed=0)              # [16, H, W, C] in [-1, 1]
    report = g.evaluate(["metrics=default"])   # {"metrics": {...}, "protocol": {...}, ...}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gaxp.errors import ConfigError
from gaxp import population, training
from gaxp.config import Config, plain
from gaxp.config import load as load_config
from gaxp.compose import compose_run
from gaxp.sample import OPTION_DEFAULTS, check, draw, requested_class
from gaxp.evaluate import evaluate, load_generator


def run(cfg) -> dict:
    """Train a composed config (a Hydra ``DictConfig``, the dict ``gaxp.config.load`` takes, or a
    ``gaxp.config.Config``): one run, or a population when ``trainer.population > 1``."""

    config = cfg if isinstance(cfg, Config) else load_config(cfg)
    if config.trainer.population > 1:
        source = asdict(config) if isinstance(cfg, Config) else plain(cfg)
        return population.train(config, source)
    return training.train(cfg)


def train(overrides: Sequence[str] = (), *, config_dir: str | None = None,
          config_name: str = "train") -> dict:
    """Compose the train config with command-line style ``overrides`` (``"loss=hinge"``,
    ``"plugins=[my_gan.ideas]"``, ``"hydra.searchpath=[pkg://my_gan.conf]"``,
    ``"hydra.run.dir=..."``), check it as ``gaxp-train`` does, and train. Raises ``ConfigError``
    (one line) on bad input, before anything is built."""

    if isinstance(overrides, str):
        raise ConfigError(f"gaxp.train takes a list of overrides, e.g. [{overrides!r}]")
    return run(compose_run(list(overrides), config_name=config_name, config_dir=config_dir))


@dataclass
class Generator:
    """A trained generator of a run directory (EMA weights unless ``ema=False``)."""

    loaded: Any  # gaxp.evaluate.Loaded
    _ema: bool = True  # EMA weights (what gaxp.load was asked for)

    @property
    def config(self):
        return self.loaded.config

    @property
    def run_dir(self) -> Path:
        return self.loaded.run_dir

    @property
    def step(self) -> int:
        return self.loaded.step

    def sample(self, n: int = 64, *, seed: int = 0, truncation: float | None = None,
               labels: str | int | None = None) -> np.ndarray:
        """``n`` samples in the data's range ([-1, 1] images NHWC, or 2D points), drawn exactly as
        ``gaxp-sample n=<n> seed=<seed>`` draws them. ``labels``: ``"all"`` (conditional runs: one
        row per class) or a class index."""

        o = OPTION_DEFAULTS | {"n": n, "seed": seed, "truncation": truncation,
                               "class": None if labels is None else str(labels)}
        check(o)
        o["class"] = requested_class(o["class"], self.loaded.spec.cond)
        return np.asarray(draw(self.loaded, o)[0])

    def evaluate(self, overrides: Sequence[str] = ("metrics=default",)) -> dict:
        """The metrics of ``overrides`` (``metrics=...``, ``metrics.n_fake=...``) for this
        generator, as ``gaxp-eval`` reports them: ``{"metrics", "protocol", "step", "run_dir"}``."""

        loaded = load_generator(str(self.loaded.run_dir), list(overrides), step=self.loaded.step,
                                ema=self._ema)
        return evaluate(loaded)


def load(run_dir: str | Path, *, step: int | None = None, ema: bool = True) -> Generator:
    """The generator of a run directory (its latest checkpoint, or ``step``)."""

    return Generator(load_generator(str(run_dir), ["metrics=none"], step=step, ema=ema), ema)
