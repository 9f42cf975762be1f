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
    assert imports <= {"_socket", "posix", "select", "sys", "time"}
