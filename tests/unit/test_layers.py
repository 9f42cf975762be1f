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
TOP = {"cli.py", "pytest_plugin.py", "__main__.py"}
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
        if rel.parts[0] == "bench" or str(rel) in TOP or str(rel) == "proc.py":
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
    assert any(m.startswith("backends") for m in imported_modules(HARNESS / "cli.py"))
