"""The documented Python API in one pytest process: train, load, sample and evaluate; importing
gaxp changes no JAX setting; the import graph of gaxp/ has no cycle."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gaxp

RING = ("model=mlp", "data=ring", "data.batch_size=64", "model.g_width=32", "model.d_width=32",
        "trainer.steps=6", "trainer.ckpt_every=3", "trainer.log_every=3", "trainer.progress=false",
        "logger=none")


def test_train_load_sample_evaluate(tmp_path):
    summary = gaxp.train([*RING, f"hydra.run.dir={tmp_path / 'run'}", f"runs_root={tmp_path}"])
    assert summary["steps"] == 6 and summary["run_dir"] == str(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["digest"] == summary["digest"]
    g = gaxp.load(tmp_path / "run")
    assert g.step == 6 and g.config.model.name == "mlp"
    a, b = g.sample(100, seed=1), g.sample(100, seed=1)
    assert a.shape == (100, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)  # the same seed draws the same samples
    assert not np.array_equal(a, g.sample(100, seed=2))
    assert not np.array_equal(gaxp.load(tmp_path / "run", step=3).sample(100, seed=1), a)
    report = g.evaluate(["metrics=default", "metrics.names=[modes]", "metrics.n_fake=500"])
    assert report["step"] == 6 and report["protocol"]["n_fake"] == 500
    assert 0 <= report["metrics"]["eval/modes"] <= 8
    assert 0.0 <= report["metrics"]["eval/hq_frac"] <= 1.0


def test_api_errors_are_one_line_config_errors(tmp_path):
    with pytest.raises(gaxp.ConfigError, match=r"^unknown loss 'nope'; valid: hinge, lsgan"):
        gaxp.train(["loss=nope", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(gaxp.ConfigError, match=r"takes a list of overrides"):
        gaxp.train("loss=hinge")
    assert not (tmp_path / "run").exists()


def test_importing_gaxp_changes_no_jax_setting():
    code = """
import jax
names = [n for n in dir(jax.config) if n.startswith("jax_")]
before = {n: repr(getattr(jax.config, n)) for n in names}
import gaxp, gaxp.api, gaxp.training, gaxp.population, gaxp.evaluate, gaxp.cli
gaxp.register
after = {n: repr(getattr(jax.config, n)) for n in names}
print([n for n in names if before[n] != after[n]])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _import_graph(root: Path) -> dict:
    """gaxp module -> the gaxp modules it imports (any depth, TYPE_CHECKING blocks aside; a
    package's own __init__ importing its children is not an edge)."""
    mods = {".".join(f.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): f
            for f in root.rglob("*.py")}
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]

        def visit(node, in_type_checking=False):
            for child in ast.iter_child_nodes(node):
                skip = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
                if isinstance(child, (ast.Import, ast.ImportFrom)) and not in_type_checking:
                    if isinstance(child, ast.Import):
                        targets = [a.name for a in child.names]
                    else:
                        base = child.module or ""
                        if child.level:
                            parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                            base = ".".join(parts + ([base] if base else []))
                        targets = [base] + [f"{base}.{a.name}" for a in child.names]
                    for t in targets:
                        while t and t not in mods:
                            t = t.rpartition(".")[0]
                        if t and t != m and not (f.name == "__init__.py" and t.startswith(m + ".")):
                            graph[m].add(t)
                visit(child, in_type_checking or skip)

        visit(ast.parse(f.read_text()))
    return graph


def test_gaxp_has_no_import_cycle():
    graph = _import_graph(Path(gaxp.__file__).resolve().parent)
    assert "gaxp.api" in graph and "gaxp.config" in graph["gaxp.compose"]
    state, cycle = {}, []

    def dfs(m, path):
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycle.append(path[path.index(t):] + [t])
            elif t not in state:
                dfs(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])
    assert not cycle, " -> ".join(cycle[0])
