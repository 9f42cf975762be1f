"""The bad-input catalog: every file of `bad_inputs/`, and the inputs generated below, is a clean error.

Each catalog file starts with the error it must produce:

    # error: <text that must appear in the output, whitespace-insensitive>
    # line: <the line the error must name as FILE:LINE, or - when it names the file only>

For every input, `harness validate`, `harness plan` and `harness run --backend dry-run` (through
`harness.cli.main`, in-process) must exit 1 or 2 with that text, name the file (and line), and print no
traceback. `test_the_whole_catalog_under_resource_limits` runs all of them again in one child process
under RLIMIT_AS and RLIMIT_CPU, from an empty working directory, and checks that nothing was created:
no file there, no namespace in /run/netns and no mount named after anything in the catalog.

What the generated inputs cover, which a text file cannot hold or which would bloat the repository:
non-UTF-8 bytes, a binary file, NUL, UTF-16, more than 1 MiB, thousands of nested `[` and `{`, a
symlink loop and a dangling symlink.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cli import main
from harness.loader import MAX_FILE_BYTES

ROOT = Path(__file__).resolve().parents[2]
CATALOG_DIR = Path(__file__).resolve().parent / "bad_inputs"
CATALOG = sorted(CATALOG_DIR.glob("*.yaml"))
GOOD = ROOT / "scenarios" / "macvlan-bridge.yaml"
COMMANDS = {
    "validate": ["validate"],
    "plan": ["plan"],
    "run": ["run", "--backend", "dry-run", "-q"],
}
_HEADER = re.compile(r"\A# error: (?P<error>.*)\n# line: (?P<line>\d+|-)\n")


@dataclass(frozen=True)
class Expected:
    error: str
    line: int | None


def expected_of(path: Path) -> Expected:
    m = _HEADER.match(path.read_text(encoding="utf-8"))
    assert m, f"{path.name} does not start with `# error: ...` and `# line: ...`"
    return Expected(m["error"], None if m["line"] == "-" else int(m["line"]))


# --- the generated inputs: name -> (bytes or a maker, the error, the line) ---------------------------------

_VALID_HEAD = "name: gen\nsource: tests/unit/test_bad_inputs.py\ncommands:\n  - docker network rm x\n"


def _symlink_loop(path: Path) -> None:
    os.symlink(path.name, path)  # x.yaml -> x.yaml


def _dangling(path: Path) -> None:
    os.symlink("nowhere-at-all.yaml", path)


GENERATED: dict[str, tuple[object, Expected]] = {
    "non-utf8-comment": (b"name: gen\nsource: s\n# caf\xe9 au lait\ncommands:\n  - docker network rm x\n",
                         Expected("not UTF-8 text: byte 0xe9 at offset 25", 3)),
    "non-utf8-name": (b"name: caf\xe9\nsource: s\ncommands:\n  - docker network rm x\n",
                      Expected("not UTF-8 text: byte 0xe9 at offset 9", 1)),
    "binary": (bytes(range(256)) * 64, Expected("not UTF-8 text: byte 0x80 at offset 128", 2)),
    "elf-header": (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56 + b"\n\xff\xfe", Expected("not UTF-8 text: byte 0xff", 2)),
    "nul-in-utf8": (("name: gen\nsource: s\x00\n" + "commands: [docker network rm x]\n").encode(),
                    Expected("special characters are not allowed", 2)),
    "utf16": ((_VALID_HEAD).encode("utf-16"), Expected("not UTF-8 text: byte 0xff at offset 0", 1)),
    "over-1mib": ((_VALID_HEAD + "description: |\n" + ("  " + "x" * 78 + "\n") * (MAX_FILE_BYTES // 80 + 1)).encode(),
                  Expected(f"larger than {MAX_FILE_BYTES} bytes", None)),
    "deep-brackets": ((_VALID_HEAD + "description: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
                      Expected("nested deeper than 32 levels", 5)),
    "deep-mappings": ((_VALID_HEAD + "description: " + "{a: " * 5000 + "x" + "}" * 5000 + "\n").encode(),
                      Expected("nested deeper than 32 levels", 5)),
    "deep-unclosed": ((_VALID_HEAD + "description: " + "[" * 100000 + "\n").encode(),
                      Expected("nested deeper than 32 levels", 5)),
    "symlink-loop": (_symlink_loop, Expected("symlink loop", None)),
    "dangling-symlink": (_dangling, Expected("dangling symlink to nowhere-at-all.yaml", None)),
}


def make_generated(directory: Path) -> list[tuple[Path, Expected]]:
    out = []
    for name, (content, expected) in GENERATED.items():
        path = directory / f"{name}.yaml"
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
        out.append((path, expected))
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, tuple[Path, Expected]]:
    directory = tmp_path_factory.mktemp("generated")
    return {p.stem: (p, e) for p, e in make_generated(directory)}


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    # main() installs its own handlers for the run; give pytest's back afterwards.
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in previous.items():
        signal.signal(s, handler)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def check_clean_error(path: Path, expected: Expected, code: int, output: str) -> None:
    assert code in (1, 2), output
    assert "Traceback" not in output and "harness bug" not in output, output
    flat = " ".join(output.split())
    assert " ".join(expected.error.split()) in flat, output
    where = f"{path}:{expected.line}:" if expected.line else f"{path}"
    assert where in flat, output


# --- the catalog ----------------------------------------------------------------------------------------


def test_the_catalog_holds_at_least_60_inputs_each_with_its_error():
    assert len(CATALOG) + len(GENERATED) >= 60
    assert len(CATALOG) >= 60
    for path in CATALOG:
        assert expected_of(path).error.strip(), path.name


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("path", CATALOG, ids=lambda p: p.stem)
def test_a_catalog_input_is_a_clean_error(path, command, capsys):
    expected = expected_of(path)
    code, output = run_cli(capsys, *COMMANDS[command], str(path))
    check_clean_error(path, expected, code, output)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", sorted(GENERATED))
def test_a_generated_input_is_a_clean_error(name, command, generated, capsys):
    path, expected = generated[name]
    started = time.monotonic()
    code, output = run_cli(capsys, *COMMANDS[command], str(path))
    check_clean_error(path, expected, code, output)
    assert time.monotonic() - started < 30


def test_a_directory_run_reports_every_bad_file_and_checks_the_others(tmp_path, capsys):
    for path in CATALOG:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    generated = make_generated(tmp_path)
    (tmp_path / "good.yaml").write_text(GOOD.read_text())
    code, output = run_cli(capsys, "validate", str(tmp_path))
    assert code == 1
    assert "Traceback" not in output
    flat = " ".join(output.split())
    assert f"valid {tmp_path / 'good.yaml'} (macvlan-bridge)" in flat
    for path in [tmp_path / p.name for p in CATALOG] + [p for p, _ in generated]:
        assert f"invalid {path}" in flat, path.name
    code, output = run_cli(capsys, "run", "--backend", "dry-run", "-q", str(tmp_path))
    assert code == 2 and "Traceback" not in output
    assert output.count("invalid ") >= len(CATALOG) + len(generated)


# --- all of it again, in one child under resource limits, creating nothing ------------------------------------

_CHILD = r"""
import json, resource, sys, time
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[2]), int(sys.argv[2])))
from harness.cli import main
commands = json.loads(sys.argv[3])
out = []
for path in sys.argv[4:]:
    for argv in commands:
        started = time.monotonic()
        try:
            code = main([*argv, path])
        except BaseException as exc:  # reported, not raised: the parent names the input
            code = f"raised {type(exc).__name__}: {exc}"
        out.append([path, argv[0], code, time.monotonic() - started])
# VmHWM: this program's own peak. ru_maxrss would also count the memory of the process it was started from
# (the kernel folds the pre-exec image's peak into it), which is a long-running pytest worker's.
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("RESULT " + json.dumps({"runs": out, "peak_kib": peak_kib}))
"""

MEMORY_LIMIT = 1536 << 20  # address space of the whole child; python, rich, jsonschema and pyroute2 use ~400 MiB
CPU_SECONDS = 300


def _names_the_catalog_could_create() -> set[str]:
    """Every word of the catalog that could become a namespace, file or mount name (a container name, a
    path component of one), plus the generated inputs' names."""
    words: set[str] = set()
    for path in CATALOG:
        for word in re.findall(r"[^\s'\"=,{}\[\]]+", path.read_text(encoding="utf-8")):
            words.update(part for part in word.split("/") if part not in ("", ".", ".."))
    return words | set(GENERATED)


def _mounts() -> set[str]:
    try:
        return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    except OSError:
        return set()


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except OSError:
        return set()


def test_the_whole_catalog_under_resource_limits(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    paths = [str(p) for p in CATALOG] + [str(p) for p, _ in make_generated(inputs)]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    candidates = _names_the_catalog_could_create()
    netns_before = _netns() & candidates
    mounts_before = _mounts()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(MEMORY_LIMIT), str(CPU_SECONDS),
         json.dumps([argv for argv in COMMANDS.values()]), *paths],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=CPU_SECONDS + 60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    result = json.loads(proc.stdout.rsplit("RESULT ", 1)[1])
    bad = [run for run in result["runs"] if run[2] not in (1, 2)]
    assert bad == [], bad
    assert len(result["runs"]) == len(paths) * len(COMMANDS)
    slowest = max(result["runs"], key=lambda run: run[3])
    assert slowest[3] < 30, slowest
    assert result["peak_kib"] < 256 * 1024, result["peak_kib"]  # measured: about 45 MiB
    assert elapsed < CPU_SECONDS
    # Nothing created: no file in the working directory, no namespace or mount named from the catalog.
    assert list(cwd.iterdir()) == []
    assert _netns() & candidates == netns_before
    new_mounts = _mounts() - mounts_before
    assert not [m for m in new_mounts if str(tmp_path) in m or Path(m).name in candidates], new_mounts
