#!/usr/bin/env bash
# Sets up a Debian 12 machine (as root) for the harness: the one list of system packages, the Python
# project and its dependencies, and the VM backend's kernel. README, CI and the Vagrant box all run this.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# iproute2/iputils-ping/util-linux: observation (ip -json, ping, nsenter); iperf3: the bench;
# qemu-system-x86, busybox-static, kmod, dash, binutils: the VM backend's guest image and boot.
apt-get install -y -qq \
    iproute2 iputils-ping util-linux kmod procps iperf3 \
    qemu-system-x86 busybox-static dash binutils cpio \
    python3 python3-pip python3-venv ca-certificates >/dev/null

# docker.io (Debian's Docker 20.10): the docker backend starts its own private dockerd inside a harness
# namespace. The package's own daemon must never start (it would make docker0 and iptables rules in the
# machine's root namespace): policy-rc.d refuses service starts during the install, and where systemd
# runs, the units are masked.
if ! command -v dockerd >/dev/null 2>&1; then
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null
    if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
if [ -d /run/systemd/system ]; then
    systemctl mask --now docker.service docker.socket containerd.service >/dev/null 2>&1 || true
fi

PYTHON=${PYTHON:-python3}
pip_flags=(-q)
# Debian's own python3 refuses system-wide pip installs (PEP 668); a pyenv or venv python does not.
if "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED")) else 1)'; then
    pip_flags+=(--break-system-packages)
fi
"$PYTHON" -m pip install "${pip_flags[@]}" -e ".[dev]"
# An editable install compiles nothing, and where PYTHONDONTWRITEBYTECODE is set no run ever writes a .pyc:
# every process (each pytest-xdist worker too) would compile the project's modules again (0.15 s a pytest
# process here). Python still reads these, and a source file changed since is compiled afresh (the .pyc
# records the source's mtime and size); compileall skips what is up to date.
"$PYTHON" -m compileall -q harness backends

# The VM backend boots Debian's kernel package: fetch and unpack it now, build the guest image and probe
# what its kernel can do (cached, nothing installed into /boot). Choosing a backend never downloads.
"$PYTHON" -m harness prepare --backend vm
# The kernel matrix's second kernel (Debian's 6.12 for bookworm): `harness run --kernels 6.1,6.12,host`.
"$PYTHON" -m harness prepare --backend vm --kernel 6.12
# The docker backend's offline image (a busybox rootfs; no registry is reachable).
"$PYTHON" -m harness prepare --backend docker
