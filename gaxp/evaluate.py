"""``gaxp-eval <run dir or checkpoint> [metrics=...] [key=value ...]``: evaluate a trained
generator (EMA weights by default) against a dataset split; prints a table and writes JSON.

Options: ``step=<N>`` (checkpoint; default the latest, or the one named by the path; ``best``: the
checkpoint whose in-loop ``by`` metric, default ``eval/kid``, is lowest in ``metrics.jsonl``),
``by=<metric key>`` (what ``step=best`` minimizes),
``ema=false`` (the raw generator weights), ``json=<path>`` (default ``<run>/eval/step_<N>.json``),
``metrics=<group option>`` (default: the run's own metrics, else ``default``), ``metrics.<key>=``
and ``data.<key>=`` overrides (e.g. ``metrics.n_fake=1000``, ``data.data_dir=<mnist test dir>``).

``load_generator`` (shared with ``gaxp-sample``) reads the run's config from ``run.json`` (or
Hydra's ``.hydra/config.yaml``) and restores only the train state from its Orbax checkpoint.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gaxp.errors import ConfigError
from gaxp.randomness import gaxp_draws
from gaxp.compose import compose_node, fail, parse_options
from gaxp.config import load
from gaxp import sharding
from gaxp.checkpoint import Checkpointer, abstract_like
from gaxp.run import assemble
from gaxp.state import init_state
from gaxp.metrics.evaluator import Evaluator
from gaxp.nets import sample_images
from gaxp.tasks import TASKS

OPTIONS = {"step": str, "by": str, "ema": bool, "json": str}


@dataclass
class Loaded:
    config: Any
    run_dir: Path
    step: int
    params: Any  # generator parameters (EMA unless ema=false)
    stats: Any
    spec: Any  # StepSpec
    dataset: Any
    mesh: Any


def locate(path: str) -> tuple[Path, int | None]:
    """A run dir, its checkpoints/ folder or one checkpoint -> (run dir, step or None)."""
    p = Path(path).expanduser()
    if p.name.isdigit() and p.parent.name == "checkpoints":
        return p.parent.parent, int(p.name)
    if p.name == "checkpoints":
        return p.parent, None
    if (p / "population.json").exists():
        raise ConfigError(f"{path} is a population; give one member's directory, e.g. "
                          f"{p / 'members' / '00'}")
    if not (p / "checkpoints").is_dir():
        raise ConfigError(f"{path} is not a gaxp run directory or checkpoint (no checkpoints/ in it)")
    return p, None


def run_node(run_dir: Path) -> dict:
    """The run's composed config as a plain dict."""
    try:
        node = json.loads((run_dir / "run.json").read_text()).get("config")
    except (OSError, ValueError):
        node = None
    if node is None and (run_dir / ".hydra" / "config.yaml").exists():
        from omegaconf import OmegaConf

        node = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"),
                                      resolve=False)
        node["out_dir"] = str(run_dir)
    if node is None:
        raise ConfigError(f"{run_dir} has no config (run.json or .hydra/config.yaml)")
    return node


def with_overrides(node: dict, overrides: list[str]) -> Any:
    """Apply ``metrics=``/``metrics.*``/``data.*`` overrides to a run's config; validate it."""
    from omegaconf import OmegaConf

    group = [o for o in overrides if o.startswith("metrics=")]
    dotted = [o for o in overrides if not o.startswith("metrics=")]
    if group or not (node.get("metrics") or {}).get("names"):
        node["metrics"] = compose_node(group or ["metrics=default"])["metrics"]
    merged = OmegaConf.merge(OmegaConf.create(node), OmegaConf.from_dotlist(dotted))
    node = OmegaConf.to_container(merged, resolve=True)
    node["trainer"]["devices"] = None  # evaluate on this machine's devices
    return load(node)


@gaxp_draws
def load_state(path: str, overrides: list[str] = (), *, step: int | None = None):
    """(the run assembled as training assembles it (``gaxp.run.Run``), step, the whole GANState)
    of a run directory's checkpoint (the latest, or ``step``, or the one ``path`` names)."""
    import jax

    run_dir, named = locate(path)
    config = with_overrides(run_node(run_dir), list(overrides))
    run = assemble(config, sharding.make_mesh(None), directory=run_dir)  # as training built it
    config, nets = run.config, run.spec.nets
    ckpt = Checkpointer(run_dir / "checkpoints", config.trainer.keep, async_save=False)
    try:
        step = step if step is not None else named if named is not None else ckpt.latest_step()
        if step is None or step not in ckpt.manager.all_steps():
            raise ConfigError(f"no checkpoint {step if step is not None else ''} in "
                              f"{run_dir / 'checkpoints'}; steps: {list(ckpt.manager.all_steps())}")
        make = functools.partial(init_state, config, nets, run.shape, run.image)
        abstract = abstract_like(jax.eval_shape(make, jax.random.key(0)),
                                 sharding.replicated(run.mesh))
        state = ckpt.restore_state(step, abstract)
    finally:
        ckpt.close()
    return run, step, state


def best_step(run_dir: Path, by: str = "eval/kid") -> int:
    """The checkpointed step whose logged ``by`` value (``metrics.jsonl``) is lowest: model
    selection by a cheap in-loop score before an expensive final evaluation. Ties: the earliest."""
    folder = run_dir / "checkpoints"
    kept = {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()
    rows = []
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else ():
        row = json.loads(line) if line.strip() else {}
        value = row.get(by)
        if row.get("step") in kept and isinstance(value, (int, float)) and value == value:
            rows.append((value, row["step"]))
    if not rows:
        raise ConfigError(f"step=best: no checkpoint of {run_dir} has a logged {by!r} in "
                          f"metrics.jsonl (checkpoints: {sorted(kept)}); evaluate in the loop "
                          "(metrics.every) with checkpoints at those steps, or give step=<N>")
    return min(rows)[1]


def pick_step(run_dir: Path, step: str | None, by: str | None) -> int | None:
    """``step=`` as given: None (the latest), a number, or ``best`` (``best_step``)."""
    if step is None or step.isdigit():
        if by is not None:
            raise ConfigError("by= goes with step=best; drop it or add step=best")
        return None if step is None else int(step)
    if step != "best":
        raise ConfigError(f"step must be a checkpoint number or best, got {step!r}")
    return best_step(run_dir, by or "eval/kid")


def load_generator(path: str, overrides: list[str], *, step: int | None = None,
                   ema: bool = True) -> Loaded:
    run, step, state = load_state(path, overrides, step=step)
    params = state.g_ema if ema else state.g_params
    return Loaded(run.config, run.dir, step, params, state.g_stats, run.spec, run.dataset, run.mesh)


@gaxp_draws
def evaluate(loaded: Loaded) -> dict:
    """Every configured metric of the loaded generator -> the JSON report."""

    task = TASKS.entry(loaded.config.task.name)
    if task.evaluator is not None:  # the task's own metrics (image-to-image: held-out pairs)
        ev = task.evaluator(loaded.config, loaded.dataset, loaded.mesh, loaded.spec)
        return {"run_dir": str(loaded.run_dir), "step": loaded.step, "protocol": ev.protocol,
                "metrics": ev(loaded.step, loaded.params, loaded.stats)}
    sample = lambda p, s, z, y=None: sample_images(loaded.spec, p, s, z, y)  # noqa: E731
    cond = loaded.spec.cond
    ev = Evaluator(loaded.config, loaded.dataset, loaded.mesh, sample, loaded.config.model.z_dim,
                   num_classes=cond and cond.num_classes)
    metrics = ev(loaded.step, loaded.params, loaded.stats)
    return {"run_dir": str(loaded.run_dir), "step": loaded.step, "protocol": ev.protocol,
            "metrics": metrics}


def table(report: dict, weights: str) -> str:
    p = report["protocol"]
    ref = f" vs {p['reference']} ({p['n_real']} real)" if "reference" in p else ""
    what = f"{p['pairs']} held-out pairs ({p['split']})" if "pairs" in p else f"{p['n_fake']} samples"
    lines = [f"{report['run_dir']} step {report['step']} ({weights} generator): "
             f"{what}{ref}", f"{'metric':<24} value"]
    lines += [f"{k:<24} {v:.6g}" for k, v in report["metrics"].items()]
    return "\n".join(lines)


def main(argv: list[str]) -> None:

    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        options, overrides = parse_options(argv[1:], OPTIONS, passthrough=("metrics", "data"))
        ema = options.get("ema", True)
        step = pick_step(locate(argv[0])[0], options.get("step"), options.get("by"))
        loaded = load_generator(argv[0], overrides, step=step, ema=ema)
        report = evaluate(loaded) | {"weights": "ema" if ema else "raw"}
        if not ema:  # the Evaluator's protocol names the EMA weights it scores in training
            report["protocol"]["generator"] = "raw weights (ema=false), fixed noise"
    except ConfigError as e:
        fail("gaxp-eval", str(e))
    out = Path(options.get("json") or loaded.run_dir / "eval" / f"step_{loaded.step:07d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(table(report, report["weights"]))
    print(f"gaxp-eval: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
