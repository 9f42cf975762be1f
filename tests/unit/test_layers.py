"""Layers point one way: model -> compile -> engine -> backends. Checked on the import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "harness"
# Everything below the CLI, pytest plugin and bench: none of it may reach a backend or the kernel.
BELOW_CLI = ["model", "loader", "dockercli", "ipam", "driver", "profiles", "plan", "world", "engine",
             "oracle", "checks", "observe", "results", "errors"]
FORBIDDEN = ("backends", "pyroute2", "subprocess")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", BELOW_CLI)
def test_no_layer_below_the_cli_imports_a_backend_netlink_or_processes(module):
    imports = imported_modules(HARNESS / f"{module}.py")
    offending = sorted(m for m in imports if m.split(".")[0] in FORBIDDEN)
    assert offending == [], f"harness/{module}.py imports {offending}"


def test_the_check_sees_imports():
    # The checker must be able to fail: the CLI does import backends.
    assert "backends.base" in imported_modules(HARNESS / "cli.py")
