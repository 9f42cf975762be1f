"""`harness bench` and `harness report`: macvlan measured against a Linux bridge (and a bare veth pair) with
iperf3 and a request/response probe, and the results compared with a baseline.

Modules, in the order a run uses them:

- `params`: `BenchParams` (what a run measures, `QUICK` for CI), `BenchError`, `BenchUnavailable`;
- `topologies`: `Topology` and `TOPOLOGIES`, the plan operations connecting the endpoints `a` and `b`;
- `runner`: `BenchRunner` (sessions, servers, macvlan/bridge pairs and spread full rounds, the adaptive stop), `Progress`;
- `parse`: iperf3 and probe output as `TcpResult`, `UdpResult`, `RrResult`, each in a `Sample`;
- `stats`: paired ratios (Hodges-Lehmann, signed-rank interval, detectable change), medians with bootstrap
  intervals, machine load, `NoiseRule`, `StopRule` (pure, seeded);
- `metrics`: which statistics the samples yield (`compute_stats`, `primary_id`);
- `document`: the results JSON (`build_document`, `SCHEMA_ID`, `SCHEMA_PATH`: docs/bench-schema.json);
- `cli`: the `harness bench` command (`add_arguments`, `main`, also with `--backend vm`);
- `compare`, `plots`, `report`: the `harness report` command (judging, matplotlib plots, Markdown/HTML);
- `rrprobe`: the request/response probe, a standalone script run inside the nodes (no harness imports).

`add_arguments(parser)` and `main(args)` here are the `harness bench` command.
"""

from harness.bench.cli import add_arguments, main

__all__ = ["add_arguments", "main"]
