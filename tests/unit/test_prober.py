"""harness/prober.py without the network: its arithmetic, its output format, its arguments.

The prober's probes themselves run in namespaces (tests/integration/test_scale.py runs documented scenarios
through it and a 200-container matrix); nothing here sends a packet.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from harness import prober

PROBER = Path(prober.__file__)


def test_checksum_is_the_internet_checksum():
    # An echo request, type 8, id 0x1234, seq 1, checksum field zero: RFC 1071 over the 16-bit words.
    header = bytes((8, 0, 0, 0)) + (0x1234).to_bytes(2, "big") + (1).to_bytes(2, "big")
    value = prober.checksum(header)
    packet = header[:2] + value.to_bytes(2, "big") + header[4:]
    assert prober.checksum(packet) == 0  # a correct checksum makes the sum all ones
    assert prober.checksum(b"\x01") == prober.checksum(b"\x01\x00")  # odd lengths are padded


def test_json_text_escapes_what_json_needs():
    for value in ('quote " and \\ backslash', "tab\there", "plain", None, 3, 1.5):
        assert json.loads(prober.json_text(value)) == (round(value, 3) if isinstance(value, float) else value)


def test_no_target_prints_only_the_socket_line(capsys):
    assert prober.main(["prober.py", "0.05", "3", "0.2", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [{"sockets": {}}]


def test_missing_arguments_are_a_usage_error(capsys):
    assert prober.main(["prober.py", "0.05"]) == 2
    assert "usage" in capsys.readouterr().err


def test_the_prober_imports_only_c_modules_of_the_stdlib():
    # It starts once per source node and wave (and under TCG in the VM): every import costs start-up time,
    # and `-I` keeps the project off sys.path, so it may import nothing of the harness.
    imports = set()
    for node in ast.walk(ast.parse(PROBER.read_text())):
        if isinstance(node, ast.Import):
            imports.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imports.add(node.module or "")
    # ctypes (setns: Python 3.11 has no os.setns) is imported by the batch mode only, when it enters namespaces.
    assert imports <= {"_heapq", "_socket", "posix", "select", "sys", "time", "ctypes"}
    top = {a.name for node in ast.parse(PROBER.read_text()).body if isinstance(node, ast.Import) for a in node.names}
    assert "ctypes" not in top


def test_the_batch_window_grows_with_the_slowest_reply_between_floor_and_cap():
    assert prober.isolation_window(0.1, 25.0, 10.0, 1000.0) == 25.0
    assert prober.isolation_window(7.0, 25.0, 10.0, 1000.0) == 70.0
    assert prober.isolation_window(500.0, 25.0, 10.0, 1000.0) == 1000.0


def test_a_batch_spec_names_window_namespaces_and_probes():
    params, paths, probes, observe, flush = prober.parse_batch("window 0.05 3 0.025 1 10 2 0.005\nns c1 /run/netns/x\n"
                                                        "probe c1 r 10.0.0.2\nprobe c1 i fd00::3\nobserve c1\n")
    assert params == [0.05, 3.0, 0.025, 1.0, 10.0, 2.0, 0.005]
    assert paths == {"c1": "/run/netns/x"} and probes == [("c1", True, "10.0.0.2"), ("c1", False, "fd00::3")]
    assert observe == ["c1"] and flush == []
    assert prober.main(["prober.py", "--batch", "probe c1 x 10.0.0.2"]) == 2


def test_a_batch_source_without_a_namespace_is_a_broken_probe_not_a_silent_one(capsys):
    assert prober.main(["prober.py", "--batch", "window 0.05 3 0.025 1 10 2 0.005", "probe c1 i 10.0.0.2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[1]["error"].startswith("cannot open an ICMP socket") and lines[1]["sent"] == 0
