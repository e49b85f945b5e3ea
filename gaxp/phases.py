"""A run's phases: the stretches that compile to programs of their own, as the task, the arch and
the stabilizer entries declare them (``gaxp.register.task(..., phases=)``, ``register.arch``,
``register.regularizer``; ``gaxp.specs.Phase``). SRGAN's MSE pre-training, ProGAN's growth
stages and D pre-training (``regularizer=d_pretrain``) are phases; so is a plugin's warm-up.

The loop asks ``active(phases, step)`` for the phases in force at a step (one per declaring
entry), compiles ``bind(spec, active)`` once per combination, and reports each phase's figures.
A resumed run finds its phases from the step alone. The step reads what the active phases train
as ``spec.trains``, the task's phase as ``spec.phase`` and an arch phase's schedule as
``spec.schedule``; it never asks which task, arch or stabilizer declared them.
"""

from __future__ import annotations

import dataclasses

from gaxp.errors import ConfigError
from gaxp.registry import ARCHS, REGULARIZERS, TASKS
from gaxp.specs import Config, Phase

TRAINS = ("both", "g", "d")


def of(config: Config) -> tuple[tuple[Phase, ...], ...]:
    """The run's phases: one timeline per entry that declares any (the task's, the arch's, then
    the stabilizers' by name), each sorted by start and checked (names, starts from 0, what each
    trains), and no two phases in force together that train different networks alone. Only the
    task's phases name ``spec.phase``; the others bind what their own ``bind`` does."""
    entries = [("task", config.task.name, TASKS.entry(config.task.name)),
               ("model", config.model.name, ARCHS.entry(config.model.name))]
    entries += [("regularizer", name, REGULARIZERS.entry(name)) for name in config.regularizer.names]
    timelines = []
    for kind, name, entry in entries:
        declared = entry.phases(config) if getattr(entry, "phases", None) is not None else ()
        if declared:
            line = _checked(f"{kind}={name}", tuple(declared))
            if kind != "task":  # the task's phase alone is spec.phase
                line = tuple(p if p.bind is not None else dataclasses.replace(p, bind=_same) for p in line)
            timelines.append((f"{kind}={name}", line))
    for step in sorted({p.start for _, line in timelines for p in line}):
        now = [(who, active((line,), step)[0]) for who, line in timelines]
        alone = {p.trains for _, p in now} - {"both"}
        if len(alone) > 1:
            raise ConfigError("phases that train different networks alone overlap at step "
                              f"{step}: " + ", ".join(f"{who} {p.name!r} trains {p.trains.upper()} only"
                                                      for who, p in now if p.trains != "both")
                              + "; change one of their schedules so that they do not overlap")
    return tuple(line for _, line in timelines)


def _same(spec):
    """The bind of a phase that only says what it trains (``spec.trains``)."""
    return spec


def _checked(who: str, phases: tuple) -> tuple[Phase, ...]:
    if not all(isinstance(p, Phase) for p in phases):
        raise ConfigError(f"{who}: phases must be gaxp.specs.Phase objects")
    phases = tuple(sorted(phases, key=lambda p: p.start))  # stable: ties keep their order
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
    else ``spec.phase`` set to its name; ``spec.trains``: what they train together (``both``
    unless one trains G or D alone)."""
    for p in phases:
        spec = p.bind(spec) if p.bind is not None else dataclasses.replace(spec, phase=p.name)
    alone = [p.trains for p in phases if p.trains != "both"]
    return dataclasses.replace(spec, trains=alone[0] if alone else "both")


def updates(config: Config, net: str) -> int:
    """The updates of network ``net`` (``"g"`` or ``"d"``: ``loss.n_critic`` per step) in the whole
    run: its steps outside the phases that train the other network alone."""
    steps, timelines = config.trainer.steps, of(config)
    edges = sorted({0, steps} | {p.start for line in timelines for p in line if p.start < steps})
    other = "d" if net == "g" else "g"
    count = sum(b - a for a, b in zip(edges, edges[1:])
                if other not in {p.trains for p in active(timelines, a)})
    return count * (config.loss.n_critic if net == "d" else 1)


def label(p: Phase) -> str:
    """The phase's name as the log and ``summary.json`` give it: ``warmup (trains D only)``."""
    return p.name + ("" if p.trains == "both" else f" (trains {p.trains.upper()} only)")


def describe(timelines: tuple, total_steps: int) -> str:
    """One line: each timeline's phases and their first steps, and the phases the run ends in."""
    parts = ["; ".join(f"{label(p)} from step {p.start}" for p in line if p.start < total_steps)
             for line in timelines]
    ends = [line[-1] for line in timelines if line[-1].start >= total_steps]
    note = "" if not ends else f" (trainer.steps={total_steps} ends before " + \
        ", ".join(label(p) for p in ends) + ")"
    return "phases: " + " | ".join(parts) + note


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
