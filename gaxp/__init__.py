"""gaxp: a JAX research framework for GAN experiments.

The Python API (``docs/api``)::

    import gaxp

    summary = gaxp.train(["loss=hinge", "trainer.steps=500"])   # one run (or a population)
    g = gaxp.load(summary["run_dir"])                            # its generator
    images = g.sample(16, seed=0)
    report = g.evaluate(["metrics=default"])

Extensions register with ``gaxp.register`` (``docs/extending.md``). Importing gaxp is cheap and
changes no global JAX setting: the names below are loaded on first use.
"""

__version__ = "0.1.0"

_LAZY = {
    "train": "gaxp.api", "load": "gaxp.api", "run": "gaxp.api", "Generator": "gaxp.api",
    "register": "gaxp.registry", "Loss": "gaxp.losses", "DTermContext": "gaxp.regularizers",
    "PenaltyParams": "gaxp.specs", "ModelSpec": "gaxp.specs", "Phase": "gaxp.specs", "Schedule": "gaxp.specs",
    "ConfigError": "gaxp.errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gaxp' has no attribute {name!r}")
