"""Layers point one way: model -> Docker under test -> engine -> backends. Checked on the import statements.

Nothing in `harness/` below the CLI, the pytest plugin and the bench may reach a backend, netlink or a
process: the one module that starts processes is `harness/proc.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "harness"
# Above the layers: they choose backends and run them.
TOP = {"pytest_plugin.py", "__main__.py"}
FORBIDDEN = ("backends", "pyroute2", "subprocess")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _below_the_cli() -> list[str]:
    out = []
    for path in sorted(HARNESS.rglob("*.py")):
        rel = path.relative_to(HARNESS)
        if rel.parts[0] in ("bench", "cli") or str(rel) in TOP or str(rel) == "proc.py":
            continue
        out.append(str(rel))
    return out


@pytest.mark.parametrize("module", _below_the_cli())
def test_no_layer_below_the_cli_imports_a_backend_netlink_or_processes(module):
    imports = imported_modules(HARNESS / module)
    offending = sorted(m for m in imports if m.split(".")[0] in FORBIDDEN)
    assert offending == [], f"harness/{module} imports {offending}"


def test_the_engine_and_the_emulation_are_checked():
    checked = _below_the_cli()
    assert {"engine.py", "oracle.py", "docker/driver.py", "docker/ipam.py", "model.py"} <= set(checked)


def test_only_proc_starts_processes():
    starters = sorted(str(p.relative_to(ROOT)) for top in ("harness", "backends") for p in (ROOT / top).rglob("*.py")
                      if "subprocess" in imported_modules(p))
    assert starters == ["harness/proc.py"]


def test_the_check_sees_imports():
    # The checker must be able to fail: the CLI does import backends.
    assert any(m.startswith("backends") for m in imported_modules(HARNESS / "cli" / "run.py"))


def _module_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level (function-level imports are deferred)."""
    modules = {}
    for top in ("harness", "backends"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, stack, found = {}, [], []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_circle():
    assert _cycles(_module_graph()) == []


def test_the_circle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
