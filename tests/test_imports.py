"""Layers that point one way (DESIGN.md): gaxp's import graph, every import counted (function-level
ones included, ``if TYPE_CHECKING`` blocks excluded), has no cycle; a function-level import of a
gaxp module says why it is deferred; evaluation never imports the training step."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gaxp"


def _modules() -> dict:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = _modules()


def _targets(module: str, node) -> list[str]:
    """The gaxp modules an import statement loads (``from a import b``: a, and a.b if a module)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    found = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append(name)
    return found


def _imports(module: str):
    """(target, function-level?, the source line) for every gaxp import of ``module``."""
    text = MODULES[module].read_text()
    lines = text.splitlines()

    def walk(node, in_function, type_checking):
        for child in ast.iter_child_nodes(node):
            tc = type_checking or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            fn = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not tc:
                for target in _targets(module, child):
                    yield target, in_function, lines[child.lineno - 1]
            yield from walk(child, fn, tc)

    yield from walk(ast.parse(text), False, False)


def _graph() -> dict:
    graph = {m: set() for m in MODULES}
    for m in MODULES:
        for target, in_function, _ in _imports(m):
            # a package's __init__ importing its own submodules at its top level is how a package
            # exposes them, not a dependency of the package on them
            if not (MODULES[m].name == "__init__.py" and target.startswith(m + ".") and not in_function):
                graph[m].add(target)
    return graph


def _cycle(graph: dict) -> list | None:
    """One cycle of ``graph`` as a list of modules, or None (depth-first search)."""
    state, path = {}, []

    def visit(v):
        state[v] = "open"
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == "open":
                return path[path.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        state[v] = "done"
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_function_level_imports_of_gaxp_say_why():
    unexplained = [f"{m}: {line.strip()}" for m in MODULES for _, in_function, line in _imports(m)
                   if in_function and "#" not in line]
    assert not unexplained, unexplained


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("gaxp.metrics.")
                                          and m != "gaxp.metrics.fid_cli"))
def test_evaluation_never_imports_the_training_step(module):
    """The metrics see samples and features; the helpers they share with training live below
    both (``gaxp.pixels``, ``gaxp.nets``). (``gaxp-fid`` loads a run's generator, an application.)"""
    step_modules = {"gaxp.step", "gaxp.tasks.steps", "gaxp.loop", "gaxp.training", "gaxp.population"}
    assert not {t for t, _, _ in _imports(module)} & step_modules


def test_benchmark_scripts_import_in_one_direction():
    """scripts/bench*.py: bench.py (the command) on top, bench_common.py the shared part below."""
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    names = {f.stem for f in scripts.glob("bench*.py")}
    graph = {n: set() for n in names}
    for n in names:
        for node in ast.walk(ast.parse((scripts / f"{n}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in names:
                graph[n].add(node.module)
            elif isinstance(node, ast.Import):
                graph[n] |= {a.name for a in node.names if a.name in names}
    assert _cycle(graph) is None, _cycle(graph)
    assert "bench_common" in graph["bench_population"] and "bench_common" in graph["bench_suite"]
    assert not graph["bench_common"] - {"bench_torch"}
