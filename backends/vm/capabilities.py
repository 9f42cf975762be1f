"""What the guest kernel can create, known without booting it.

`from_config` derives the capabilities from the kernel's own build configuration (Debian's package
ships it as ``/boot/config-<release>``): a feature is there when its option is ``=y``, or ``=m`` with the
module among those the guest's /init loads. `ProbeCache` keeps the answer of the real probe that
`VMBackend.prepare` runs in the guest (``python3 -m harness capabilities --backend netns --json``),
which wins over the configuration when present: it is what the namespace backend actually created.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from pathlib import Path

from backends.base import Capability
from backends.vm.closure import GUEST_MODULES
from backends.vm.steps import write_atomic
from harness.plan import FEATURES

__all__ = ["FEATURE_CONFIG", "ProbeCache", "from_config", "parse_config"]

# feature -> (kernel option, module that provides it when the option is =m; None: a bool option)
FEATURE_CONFIG: dict[str, tuple[str, str | None]] = {
    "veth": ("CONFIG_VETH", "veth"),
    "bridge": ("CONFIG_BRIDGE", "bridge"),
    "macvlan": ("CONFIG_MACVLAN", "macvlan"),
    "vlan": ("CONFIG_VLAN_8021Q", "8021q"),
    "ipvlan": ("CONFIG_IPVLAN", "ipvlan"),
    "dummy": ("CONFIG_DUMMY", "dummy"),
    "bridge_vlan_filtering": ("CONFIG_BRIDGE_VLAN_FILTERING", None),  # needs the bridge too
    "ipv6": ("CONFIG_IPV6", "ipv6"),
}
_REQUIRES = {"bridge_vlan_filtering": "bridge"}


def parse_config(text: str) -> dict[str, str]:
    """``CONFIG_X=value`` lines of a kernel .config; "is not set" lines and comments are left out."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.startswith("CONFIG_"):
            values[key] = value.strip('"')
    return values


def from_config(text: str, source: str, modules: Collection[str] = GUEST_MODULES) -> dict[str, Capability]:
    """Every feature of `harness.plan.FEATURES`, judged from the kernel configuration `text`."""
    values = parse_config(text)
    caps: dict[str, Capability] = {}
    for feature, words in FEATURES.items():
        option, module = FEATURE_CONFIG.get(feature, (None, None))
        value = values.get(option) if option else None
        if option is None:
            caps[feature] = Capability(feature, False, f"no kernel option known for {words}: run "
                                                       "`python3 -m harness prepare --backend vm` to probe it")
        elif value == "y":
            caps[feature] = Capability(feature, True, f"{option}=y in {source}")
        elif value == "m" and module is not None and module in modules:
            caps[feature] = Capability(feature, True, f"{option}=m in {source}; the guest loads {module}")
        elif value == "m":
            caps[feature] = Capability(feature, False, f"{option}=m in {source}, but the guest image does not "
                                                       f"load {module or 'it'}")
        else:
            caps[feature] = Capability(feature, False, f"kernel lacks {words}")
    for feature, needed in _REQUIRES.items():
        if feature in caps and caps[feature].available and needed in caps and not caps[needed].available:
            caps[feature] = Capability(feature, False, f"kernel lacks {FEATURES[needed]}")
    return caps


def code_key(project_root: Path) -> str:
    """The probe runs the project's code: its answer is re-asked when backends/netns*.py changes."""
    digest = hashlib.sha256()
    for name in ("netns.py", "netns_owners.py"):
        digest.update((project_root / "backends" / name).read_bytes())
    return digest.hexdigest()[:12]


class ProbeCache:
    """The guest probe's answer for one kernel, in ``<cache>/capabilities-<kernel key>-<code key>.json``."""

    def __init__(self, cache_dir: Path, kernel_key: str, project_root: Path):
        self.path = cache_dir / f"capabilities-{kernel_key}-{code_key(project_root)}.json"

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def read(self) -> dict[str, Capability] | None:
        try:
            data = json.loads(self.path.read_text())
            return {f: Capability(f, bool(v["available"]), str(v.get("detail", ""))) for f, v in data.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def store(self, probe_json: str) -> dict[str, Capability]:
        """Keep the probe's JSON output (validated first); the capabilities it says."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(probe_json)
        caps = {f: Capability(f, bool(v["available"]), str(v.get("detail", ""))) for f, v in data.items()}
        write_atomic(self.path, probe_json.encode())
        return caps
