"""Progressive growing (Karras et al. 2018): the schedule of stages in steps, bound to one stage per
compiled program, with the fade-in alpha traced from the step.

``model.grow`` gives the resolutions and, in kimg of real images shown to D (``data.batch_size *
loss.n_critic`` per step), the length of each stage's fade-in and stable phase. Stage 0 (4x4) has
no fade-in; stage k > 0 fades its resolution in over ``fade_kimg`` (alpha rising linearly from 0
to 1, one value per train step) and then trains it for ``stable_kimg``; the last stage trains on
until ``trainer.steps``.

The stage is static: each stage is a phase of the arch (``phases``, ``gaxp.phases``), and the
train loop compiles one program per stage (``summary.json``'s ``step_traces`` counts them), each
exactly once, switching at stage boundaries. A stage's program holds the ``Growth`` bound to it as
``spec.schedule`` (``gaxp.specs.Schedule``): G's and D's stage and alpha, the reals, the figures.
Alpha is a traced function of ``state.step``, so a run resumed mid-stage recovers its stage and
fade-in from the step alone and matches an uninterrupted one bit for bit. Real images are
downsampled on device to the stage's resolution by 2x2 average pooling and, during a fade-in,
faded like G's output: ``(1 - alpha) * up(pool(x)) + alpha * x`` (the paper's appendix A.1).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Optional

import jax.numpy as jnp

from gaxp.specs import Config, Phase
from gaxp.errors import ConfigError
from gaxp.models.progan import downsample, lerp, upsample


@dataclass(frozen=True)
class Growth:
    """The schedule in steps; ``stage`` is the stage a compiled program runs (None: not bound).
    Bound, it is the stage's ``gaxp.specs.Schedule``."""

    resolutions: tuple  # (4, 8, 16, 32)
    starts: tuple  # first train step (0-based ``state.step``) of each stage
    fades: tuple  # fade-in steps of each stage (0 for the first)
    stage: Optional[int] = None

    def stage_at(self, step: int) -> int:
        return max(i for i, s in enumerate(self.starts) if s <= step)

    def alpha(self, step):
        """The fade-in of the bound stage at ``step`` (traced): 0 -> 1 over the fade-in, then 1."""
        s = self._bound()
        if self.fades[s] == 0:
            return jnp.float32(1.0)
        t = (step - self.starts[s]).astype(jnp.float32) / self.fades[s]
        return jnp.clip(t, 0.0, 1.0)

    def model_kwargs(self, step) -> dict:
        """What G and D take on top of their inputs: the static stage and the traced alpha."""
        return {"stage": self._bound(), "alpha": self.alpha(step)}

    def real(self, x, step):
        """Real images [..., H, W, C] at the data size -> the bound stage's resolution, faded."""
        s = self._bound()
        x = downsample(x, x.shape[-2] // self.resolutions[s])
        if s == 0:
            return x
        return lerp(upsample(downsample(x, 2), 2), x, self.alpha(step))

    def metrics(self, step) -> dict:
        return {"grow/resolution": jnp.float32(self.resolutions[self._bound()]),
                "grow/alpha": self.alpha(step)}

    def _bound(self) -> int:
        if self.stage is None:
            raise ValueError("progressive growing: the schedule has no stage; bind the stage's "
                             "phase (gaxp.phases.bind) before compiling")
        return self.stage


def _per_stage(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def growth(config: Config) -> Optional[Growth]:
    """The run's schedule in steps, or None when the model does not grow."""
    g = config.model.grow
    if g is None:
        return None
    if config.model.name != "progan":
        raise ConfigError(f"model.grow is the progressive-growing schedule of model=progan "
                          f"(got model={config.model.name}); drop it or use model=progan")
    per_step = config.data.batch_size * config.loss.n_critic / 1000.0  # kimg per train step
    n = len(g.resolutions)
    steps = lambda kimg: int(round(kimg / per_step)) if kimg > 0 else 0  # noqa: E731
    fades = [0] + [max(1, steps(k)) if k > 0 else 0 for k in _per_stage(g.fade_kimg, n)[1:]]
    stables = [steps(k) for k in _per_stage(g.stable_kimg, n)]
    starts = [0]
    for k in range(1, n):
        starts.append(starts[-1] + fades[k - 1] + stables[k - 1])
    return Growth(tuple(g.resolutions), tuple(starts), tuple(fades))


def bind_stage(spec, growth: Growth, stage: int):
    """``spec`` (a ``gaxp.step.StepSpec``) running ``stage`` of ``growth``: what the stage's
    program runs. Specs of different stages compile to different programs."""
    return dataclasses.replace(spec, schedule=dataclasses.replace(growth, stage=stage))


def phases(config: Config) -> tuple[Phase, ...]:
    """The growth stages as the arch's phases (``gaxp.phases``): one program per stage."""
    g = growth(config)
    if g is None:
        return ()
    return tuple(Phase(f"stage {i} ({r} px)", start, value=i,
                       bind=functools.partial(bind_stage, growth=g, stage=i))
                 for i, (r, start) in enumerate(zip(g.resolutions, g.starts)))
