"""The pytest plugin's kernel matrix (`--kernels`): one scenario item per kernel, the kernel in its id, so
`-k "scenario and 6.12"` selects one kernel. Collection only (pytester): nothing runs, nothing boots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]


def plugin_args() -> list[str]:
    args = ["-p", "no:benchmark", "-p", "no:cacheprovider", "--no-docker-items"]
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        args += ["-p", "harness.pytest_plugin"]
    return args


@pytest.fixture
def scenarios(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "no-cache"))  # nothing prepared: collection still works
    directory = pytester.path / "scenarios"
    directory.mkdir()
    for name in ("macvlan-bridge.yaml", "ipvlan-l2.yaml"):
        (directory / name).write_text((REPO / "scenarios" / name).read_text())
    return directory


def ids(result: pytest.RunResult) -> list[str]:
    return sorted(line for line in result.outlines if "::" in line and " " not in line)


def test_one_item_per_kernel_with_the_kernel_in_its_id(pytester, scenarios):
    result = pytester.runpytest(*plugin_args(), "--kernels", "6.1,6.12,host", "--collect-only", "-q")
    assert ids(result) == sorted(f"scenarios/{f}::scenario[{k}]" for f in ("ipvlan-l2.yaml", "macvlan-bridge.yaml")
                                 for k in ("vm-6.1", "vm-6.12", "netns-host"))


def test_k_selects_one_kernel(pytester, scenarios):
    result = pytester.runpytest(*plugin_args(), "--kernels", "6.1,6.12,host", "--collect-only", "-q",
                                "-k", "scenario and 6.12")
    assert ids(result) == ["scenarios/ipvlan-l2.yaml::scenario[vm-6.12]",
                           "scenarios/macvlan-bridge.yaml::scenario[vm-6.12]"]
    result = pytester.runpytest(*plugin_args(), "--kernels", "6.1,6.12,host", "--collect-only", "-q",
                                "-k", "macvlan-bridge and host")
    assert ids(result) == ["scenarios/macvlan-bridge.yaml::scenario[netns-host]"]


def test_without_kernels_the_ids_are_as_before(pytester, scenarios):
    result = pytester.runpytest(*plugin_args(), "--backend", "dry-run", "--collect-only", "-q")
    assert ids(result) == ["scenarios/ipvlan-l2.yaml::scenario[dry-run]",
                           "scenarios/macvlan-bridge.yaml::scenario[dry-run]"]


def test_an_unprepared_kernel_skips_with_the_command_that_prepares_it(pytester, scenarios, monkeypatch):
    monkeypatch.setattr("backends.vm.backend.qemu_available", lambda: None)  # pytester runs in this process
    result = pytester.runpytest(*plugin_args(), "--kernels", "6.12", "-rs", "-k", "macvlan")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*prepare --backend vm --kernel 6.12*"])
