"""The Docker under test: the one interface through which the engine has documented commands executed.

`DockerUnderTest` (harness.docker.base) executes one documented step at a time and reports what Docker
answered and what it built; `EmulatedDocker` (harness.docker.emulated) compiles each command to plan
operations with libnetwork's semantics for one profile (`harness.docker.profiles`: docker-20.10,
moby-29, ...) and applies them through a backend session. The emulation itself lives beside it:
`cli` (docker command lines, pflag's rules), `ipam` (Docker's default IPAM), `driver` (the
macvlan/ipvlan driver and the daemon's network/endpoint bookkeeping).
"""
