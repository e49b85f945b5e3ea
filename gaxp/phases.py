"""A run's phases: the stretches that compile to programs of their own, as the task entry and the
arch entry declare them (``gaxp.register.task(..., phases=)``, ``register.arch(..., phases=)``;
``gaxp.specs.Phase``). SRGAN's MSE pre-training and ProGAN's growth stages are phases; so is a
plugin's warm-up that trains D alone.

The loop asks ``active(phases, step)`` for the phases in force at a step (one per declaring
entry), compiles ``bind(spec, active)`` once per combination, and reports each phase's figures.
A resumed run finds its phases from the step alone.
"""

from __future__ import annotations

import dataclasses

from gaxp.errors import ConfigError
from gaxp.registry import ARCHS, TASKS
from gaxp.specs import Config, Phase

TRAINS = ("both", "g", "d")


def of(config: Config) -> tuple[tuple[Phase, ...], ...]:
    """The run's phases: one timeline per entry that declares any (the task's, then the arch's),
    each sorted by start and checked (names, starts from 0, what each trains)."""
    timelines = []
    for kind, entry in (("task", TASKS.entry(config.task.name)), ("model", ARCHS.entry(config.model.name))):
        declared = entry.phases(config) if getattr(entry, "phases", None) is not None else ()
        if declared:
            timelines.append(_checked(f"{kind}={getattr(config, kind).name}", tuple(declared)))
    return tuple(timelines)


def _checked(who: str, phases: tuple) -> tuple[Phase, ...]:
    phases = tuple(sorted(phases, key=lambda p: p.start))  # stable: ties keep their order
    if not all(isinstance(p, Phase) for p in phases):
        raise ConfigError(f"{who}: phases must be gaxp.specs.Phase objects")
    if phases[0].start != 0:
        raise ConfigError(f"{who}: the first phase must start at step 0 (got {phases[0].start})")
    for p in phases:
        if p.trains not in TRAINS:
            raise ConfigError(f"{who}: phase {p.name!r} trains {p.trains!r}; valid: {', '.join(TRAINS)}")
    return phases


def active(timelines: tuple, step: int) -> tuple[Phase, ...]:
    """The phase of each timeline in force at ``step`` (a step counts the updates done so far); of
    phases with the same start, the one declared last."""
    return tuple([p for p in line if p.start <= step][-1] for line in timelines)


def bind(spec, phases: tuple[Phase, ...]):
    """``spec`` (a ``gaxp.step.StepSpec``) for these active phases: each phase's own ``bind``, or
    else ``spec.phase`` set to its name."""
    for p in phases:
        spec = p.bind(spec) if p.bind is not None else dataclasses.replace(spec, phase=p.name)
    return spec


def figures(records: list, end_step: int, end_time: float, images_per_step: int) -> list:
    """Per phase combination of this run: steps, wall seconds (compilation included), compile
    seconds and images/s (without compilation). ``records``: dicts with name, step, t, compile_s
    (and the phases' own fields) in the order the phases started."""
    out = []
    for i, r in enumerate(records):
        nxt = records[i + 1] if i + 1 < len(records) else {"step": end_step, "t": end_time}
        steps, wall = nxt["step"] - r["step"], nxt["t"] - r["t"]
        run = max(wall - r["compile_s"], 1e-9)
        extra = {k: v for k, v in r.items() if k not in ("step", "t", "compile_s")}
        out.append(extra | {"from_step": r["step"], "steps": steps, "wall_s": round(wall, 2),
                            "compile_s": round(r["compile_s"], 2),
                            "images_per_s": round(steps * images_per_step / run, 1) if steps else 0.0})
    return out
