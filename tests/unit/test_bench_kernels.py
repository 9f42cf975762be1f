"""`harness bench --kernels 6.1,6.12,host`: the bench on each kernel in turn (host: netns here, the others
in a VM booting that kernel), one results document per kernel, the ratios side by side. The runs are
replaced by a recorded document; nothing is measured or booted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

import harness.bench.cli as bench_cli

REPO = Path(__file__).resolve().parents[2]
DOC = json.loads((REPO / "bench" / "baselines" / "netns-6.18-2vcpu.json").read_text())


def args(tmp_path: Path, **over) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    ns = parser.parse_args(["--kernels", "6.1,6.12,host", "--quick", "--json", str(tmp_path / "b.json")])
    for k, v in over.items():
        setattr(ns, k, v)
    return ns


def test_each_kernel_in_turn_one_document_each(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_vm(sub, err, kernel=None):
        calls.append(("vm", kernel, sub.backend, sub.json, sub.kernels))
        Path(sub.json).write_text(json.dumps({**DOC, "backend": "vm"}))
        return 0

    real_main = bench_cli.main

    def fake_main(sub):
        if sub.kernels:
            return real_main(sub)
        calls.append(("host", None, sub.backend, sub.json, sub.kernels))
        Path(sub.json).write_text(json.dumps(DOC))
        return 0

    monkeypatch.setattr(bench_cli, "_main_in_vm", fake_vm)
    monkeypatch.setattr(bench_cli, "main", fake_main)
    assert bench_cli.main(args(tmp_path)) == 0
    assert calls == [("vm", "6.1", "vm", str(tmp_path / "b-6.1.json"), None),
                     ("vm", "6.12", "vm", str(tmp_path / "b-6.12.json"), None),
                     ("host", None, "netns", str(tmp_path / "b-host.json"), None)]
    out = capsys.readouterr().out
    assert "bench ratios per kernel" in out and "tcp" in out.lower()


def test_the_ratio_table_has_a_column_per_kernel():
    table = bench_cli.ratios_by_kernel({"6.1": {**DOC, "backend": "vm"}, "host": DOC})
    console = Console(width=250, record=True)
    console.print(table)
    text = console.export_text()
    ratio = next(m for m in DOC["stats"]["metrics"] if m["kind"] == "ratio")
    assert ratio["id"] in text and text.count(f"{ratio['median']:.3f}") == 2
    assert "6.1 (" in text and "host (" in text


def test_kernel_paths_and_the_option_stays_on_this_machine():
    assert bench_cli.kernel_path("results/b.json", "6.12") == "results/b-6.12.json"
    assert bench_cli.kernel_path("b.json", "linux-image-6.12.*+deb12-amd64") == "b-linux_image_6.12._+deb12_amd64.json"
    ns = argparse.Namespace(**{**vars(args(Path("/tmp"))), "kernels": "6.1"})
    assert "--kernels" not in bench_cli._forwarded(ns)  # the guest runs its own bench, not a matrix
