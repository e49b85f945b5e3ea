"""The step loop: the compiled step (one program per combination of phases), then steps with
logs, sample grids, in-loop evaluation, checkpoints, preemption and the divergence guard.
``gaxp.training`` builds a run and hands it here; populations (``gaxp.population``) reuse it with
their vmapped step."""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

import jax
import numpy as np

from gaxp import phases, sharding, tasks, xla
from gaxp.checkpoint import Checkpointer
from gaxp.errors import Diverged, Preempted
from gaxp.preempt import StopRequests
from gaxp.run_dir import resume_command
from gaxp.state import GANState
from gaxp.step import StepSpec

if TYPE_CHECKING:
    from gaxp.training import Batches, Outputs, Run

log = logging.getLogger("gaxp")


def compile_step(run: Run, state: GANState, batch: dict, key: jax.Array, spec: StepSpec | None = None,
                 compiler_options: dict | None = None):
    """The train step lowered and compiled once for these shapes and shardings (donates state),
    as ``step(state, batch, key)``: one run's hyperparameters are the configured ones (``hp`` is
    ``{}``, no argument in the program). With phases, for one: ``spec`` bound by
    ``gaxp.phases.bind``, else the phases of ``state.step``. ``compiler_options``: XLA options
    for this program only (scripts/bench.py compares them against the defaults)."""
    t0 = time.perf_counter()
    spec = spec or phases.bind(run.spec, phases.active(run.phases, int(jax.device_get(state.step))))
    replicated = sharding.replicated(run.mesh)
    fn = jax.jit(functools.partial(tasks.step_fn(run.config, spec), hp={}), donate_argnums=0,
                 out_shardings=(replicated, replicated))
    compiled = fn.lower(state, batch, key).compile(
        compiler_options=xla.mesh_options(run.mesh, compiler_options))
    return compiled, time.perf_counter() - t0


class Loop:
    """The step loop: steps, logs, samples, checkpoints, preemption and the divergence guard."""

    def __init__(self, run: Run, batches: Batches, out: Outputs, ckpt: Checkpointer, meta: dict,
                 evaluator=None, *, key=None, compile_fn=None):
        """``key`` and ``compile_fn`` are a population's (``gaxp.population``): one key per
        member and the vmapped step (``compile_fn(state, batch, key, spec)``); the outputs,
        checkpointer and batches are then its too."""
        self.run, self.batches, self.out, self.ckpt, self.meta = run, batches, out, ckpt, meta
        self.evaluator = evaluator
        self.t = run.config.trainer
        self.key = jax.random.fold_in(jax.random.key(self.t.seed), 1) if key is None else key
        self.compile = compile_fn or functools.partial(compile_step, run)
        self.images_per_step = run.config.data.batch_size * run.config.loss.n_critic
        self.saved = -1  # the last step checkpointed
        self.t_run = time.perf_counter()
        self.programs, self.compile_s, self.phases = {}, 0.0, []  # compiled steps per phase
        self.eval_s = 0.0  # in-loop evaluation: not part of the training throughput

    def program(self, step: int, state: GANState, batch: dict):
        """The compiled step for the phases in force at ``step`` (``state.step``), compiled on
        first use: one program per combination of the task's and the arch's phases
        (``gaxp.phases``, as the task, arch and stabilizer entries declare them), one
        in all without phases."""
        active = phases.active(self.run.phases, step)
        if active not in self.programs:
            t0 = time.perf_counter()
            # a batch from ``take`` may be host arrays: lowered as the global arrays they stand for
            abstract = jax.tree.map(lambda v: v if isinstance(v, jax.Array) else jax.ShapeDtypeStruct(
                v.shape, v.dtype, sharding=self.batches.sharding), batch)
            spec = phases.bind(self.run.spec, active)
            self.programs[active], seconds = self.compile(state, abstract, self.key, spec)
            self.compile_s += seconds
            if active:
                names = " + ".join(phases.label(p) for p in active)
                values = [p.value for p in active if p.value is not None]
                self.phases.append({"phase": names, **({"value": values} if values else {}),
                                    "step": step, "t": t0, "compile_s": seconds})
                if self.run.is_main:
                    self.out.progress.bar.write(f"step {step}: {names}, compiled in {seconds:.1f} s")
        return self.programs[active]

    def _wall(self) -> float:
        return self.meta.get("wall_time_s", 0.0) + time.perf_counter() - self.t_run

    def save(self, step: int, state: GANState) -> bool:
        if step == self.saved:
            return True
        ok = self.ckpt.save(step, state, self.batches.iterator, self.meta | {"wall_time_s": self._wall()})
        self.saved = step if ok else self.saved
        return ok

    def run_steps(self, state: GANState, stop: StopRequests) -> dict:
        t = self.t
        start = step = step_of(state)
        self.rollbacks = int(np.max(jax.device_get(state.rollbacks)))
        batch = next(self.batches) if start < t.steps else None
        metrics, t_log, step_log = {}, time.perf_counter(), start
        while step < t.steps:
            step_fn = self.program(step, state, batch)  # compiles at the start and at phase switches
            step += 1
            state, m = step_fn(state, batch, self.key)
            stopping = stop.requested(step)
            if step % t.ckpt_every == 0 or step == t.steps or stopping:
                # Periodic checkpoints wait while the guard is skipping updates (a stalled state is
                # no rollback target); the final and the preemption checkpoint are always written.
                if (stopping or step == t.steps or self._guard_ok(m, 1)) and not self.save(step, state):
                    state, step, batch = self.rollback(state, step, "the state holds NaN/Inf")
                    t_log, step_log = time.perf_counter(), step
                    continue
            log_step = step % t.log_every == 0 or step == t.steps
            if stopping:
                # The resumed run starts after this step: its log row and sample grid are written
                # now (an evaluation due here is left out: preemption grace periods are short).
                if log_step:
                    self._log(step, m, step_log, t_log)
                if step % t.sample_every == 0:
                    self.out.samples_png(step, state)
                raise self.preempted(step, stop)
            if step < t.steps:
                batch = self.batches.take()  # host work overlaps the asynchronously running step
            if log_step:
                metrics = self._log(step, m, step_log, t_log)
                t_log, step_log = time.perf_counter(), step
                if not self._guard_ok(m, self.t.guard.patience):
                    why = (f"{self.t.guard.patience} consecutive steps with non-finite gradients "
                           "(trainer.guard.patience)")
                    state, step, batch = self.rollback(state, step, why)
                    t_log, step_log = time.perf_counter(), step
                    continue
            evaluating = self.evaluator is not None and self.evaluator.due(step, t.steps)
            if step % t.sample_every == 0 or step == t.steps or evaluating:
                self.out.samples_png(step, state)  # every evaluation has its grid (W&B image)
            if evaluating:
                echo = self.out.progress.bar.write if self.run.is_main else None
                t_eval = time.perf_counter()
                evals = self.evaluator(step, state.g_ema, state.g_stats, echo)
                self.eval_s += time.perf_counter() - t_eval
                self.out.log(step, evals)
                metrics = metrics | evals if step == t.steps else metrics
        wall = time.perf_counter() - self.t_run
        steps_run = t.steps - start
        figures = phases.figures(self.phases, t.steps, time.perf_counter(), self.images_per_step)
        return {"compile_s": self.compile_s, "run_s": wall, "state": state, "final": metrics,
                "devices": int(self.run.mesh.devices.size),
                "images_per_s": (steps_run * self.images_per_step / max(wall - self.eval_s, 1e-9)
                                 if steps_run else 0.0),
                **({"phases": figures} if figures else {})}

    def _log(self, step: int, m: dict, step_log: int, t_log: float) -> dict:
        """Writes one log row (console, metrics.jsonl, W&B) for the step's device metrics ``m``."""
        metrics = self.out.to_host(m)
        metrics["perf/images_per_s"] = (step - step_log) * self.images_per_step / (time.perf_counter() - t_log)
        metrics["progress/kimg"] = step * self.images_per_step / 1000
        self.out.log(step, metrics)
        self.out.show(step, metrics)
        return metrics

    def _guard_ok(self, m: dict, patience: int) -> bool:
        """False when the last ``patience`` steps (or more) all had non-finite gradients."""
        if "guard/consecutive" not in m:
            return True
        return int(np.max(jax.device_get(m["guard/consecutive"]))) < patience

    def rollback(self, state: GANState, step: int, why: str):
        """Back to the last good checkpoint with lower learning rates and new random keys, or
        ``Diverged`` when the guard says stop or the rollbacks are used up."""
        g, ckpt = self.t.guard, self.ckpt
        ckpt.wait()
        last = ckpt.latest_step()
        if g.action == "stop" or self.rollbacks >= g.max_rollbacks or last is None:
            where = f"the last good checkpoint is step {last}" if last else "no checkpoint was written yet"
            used = "" if g.action == "stop" else f" after {self.rollbacks} rollbacks"
            raise Diverged(f"the run diverged at step {step}{used}: {why}; {where}. Lower "
                           "optim.g.lr/optim.d.lr, add a regularizer, or raise trainer.guard.max_rollbacks")
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        state, meta = ckpt.restore_latest_good(abstract, self.batches.iterator)
        self.rollbacks += 1
        # every population member goes back together, with the same lower learning rates
        fill = lambda x, v: jax.device_put(np.full(x.shape, v, x.dtype), x.sharding)  # noqa: E731
        state = state.replace(lr_scale=fill(state.lr_scale, g.lr_factor ** self.rollbacks),
                              rollbacks=fill(state.rollbacks, self.rollbacks))
        back = step_of(state)
        self.saved = back
        log.warning("gaxp: step %d: %s; rollback %d/%d to step %d, learning rates x%g",
                    step, why, self.rollbacks, g.max_rollbacks, back, g.lr_factor ** self.rollbacks)
        self.out.rewind(back, {"guard/rollback": self.rollbacks, "guard/rolled_back_from": step})
        return state, back, next(self.batches)

    def preempted(self, step: int, stop: StopRequests) -> Preempted:
        self.ckpt.wait()
        where = self.run.dir
        return Preempted(f"stopped by {stop.name} at step {step}; checkpoint saved in "
                         f"{where / 'checkpoints'}; resume with: {resume_command(where)}",
                         stop.signum)


def step_of(state: GANState) -> int:
    """The train step of a state (of every member of a population: they step together)."""
    return int(np.max(jax.device_get(state.step)))

