"""What `docker run` reads before the daemon acts: the CLI's checks of `--network` (its advanced syntax),
`--ip`/`--ip6`/`--mac-address` and `--restart`, in the words of the profile's Docker version.

`run_settings` gives each network's endpoint settings as the CLI sends them (or Docker's refusal);
`restart_policy` parses and checks `--restart NAME[:N]`; `network_opt_error` is the CLI's refusal of one
advanced `--network` value. Used by `harness.docker.containers.ContainersMixin`.
"""

from __future__ import annotations

import re

from harness.docker.common import MAC_ADDRESS
from harness.docker.profiles import Profile
from harness.errors import DockerError
from harness.model import ContainerRun, NetworkAttachment


def network_opt_error(att: NetworkAttachment, keys: tuple[str, ...]) -> str | None:
    """docker/cli's NetworkOpt.Set refusal of one advanced `--network` value, as pflag wraps it, for a CLI
    whose NetworkOpt knows `keys` (v20.10.24 opts/network.go:44-88, v28.0.0 opts/network.go:58-106)."""
    if not att.fields:
        return None

    def wrapped(why: str) -> str:
        return f'invalid argument "{att.text}" for "--network" flag: {why}'

    for field in att.fields:
        key, eq, val = field.lower().partition("=")
        key, val = key.strip(), val.strip()
        if not eq or not key:
            return wrapped(f"invalid field {field}")
        if key not in keys:
            return wrapped(f"invalid field key {key}")
        if key == "gw-priority" and not re.fullmatch(r"[+-]?[0-9]+", val):
            return wrapped(f'invalid gw-priority: strconv.Atoi: parsing "{val}": invalid syntax')
    if not att.target:
        return wrapped("network name/id is not specified")
    return None


def run_settings(cmd: ContainerRun, profile: Profile) -> list[dict]:
    """What the CLI of the profile's version refuses before it sends anything (docker/cli
    cli/command/container/opts.go parse, parseNetworkOpts, applyContainerOptions; opts/network.go
    NetworkOpt.Set), and each network's endpoint settings as the CLI sends them."""
    names = cmd.networks or ((cmd.network,) if cmd.network else ())
    attachments = cmd.attachments or tuple(NetworkAttachment(n, n) for n in names)
    for att in attachments:
        refusal = network_opt_error(att, profile.network_opt_keys)
        if refusal:
            raise DockerError(refusal)
    restart_policy(cmd.restart, profile)
    settings: list[dict] = []
    for i, att in enumerate(attachments):
        pairs = [(k.strip(), v.strip()) for k, _, v in (f.lower().partition("=") for f in att.fields)]
        fields = dict(pairs)  # a repeated key: the last one (alias: every one)
        cfg = {"name": att.target, "ip": fields.get("ip"), "ip6": fields.get("ip6"),
               "aliases": tuple(v for k, v in pairs if k == "alias"),
               "mac": fields.get("mac-address"), "gw_priority": int(fields.get("gw-priority") or 0)}
        if i == 0:
            # applyContainerOptions: --ip, --ip6 and (25+) --mac-address go to the first network.
            for flag, key, what, given in (("--ip", "ip", "IPv4 address", cmd.ip),
                                           ("--ip6", "ip6", "IPv6 address", cmd.ip6),
                                           ("--mac-address", "mac", "MAC address", cmd.mac_address)):
                if given is not None and cfg[key]:
                    raise DockerError(f"conflicting options: cannot specify both {flag} and per-network {what}")
                if given is not None:
                    cfg[key] = given
        if cfg["mac"] and not MAC_ADDRESS.fullmatch(cfg["mac"]):
            raise DockerError(f"{cfg['mac']} is not a valid mac address")  # v28.0.0 opts.go:883-886
        if any(c["name"] == att.target for c in settings):
            raise DockerError(f'network "{att.target}" is specified multiple times')
        settings.append(cfg)
    return settings

def restart_policy(text: str, profile: Profile) -> tuple[str, int]:
    """`--restart NAME[:N]`: the CLI's parse (docker/cli v20.10.24 and v29.0.0 opts/parse.go
    ParseRestartPolicy) and the daemon's check (moby v20.10.24 daemon/container.go:355-372; v25.0.0
    api/types/container/hostconfig.go ValidateRestartPolicy), in the profile's words."""
    texts = profile.restart_policy_texts
    if texts == "20.10":
        parts = text.split(":")
        if len(parts) > 2:
            raise DockerError("invalid restart policy format")
        name, count = parts[0], parts[1] if len(parts) == 2 else ""
        if len(parts) == 2 and not re.fullmatch(r"[+-]?[0-9]+", count):
            raise DockerError("maximum retry count must be an integer")
    else:
        name, colon, count = text.partition(":")
        if colon and not name:
            raise DockerError("invalid restart policy format: no policy provided before colon")
        if count and not re.fullmatch(r"[+-]?[0-9]+", count):
            raise DockerError("invalid restart policy format: maximum retry count must be an integer")
    retries = int(count or 0)
    if texts != "25":
        if name in ("always", "unless-stopped", "no") and retries:
            raise DockerError(f"maximum retry count cannot be used with restart policy '{name}'")
        if name == "on-failure" and retries < 0:
            raise DockerError("maximum retry count cannot be negative")
        if name not in ("always", "unless-stopped", "no", "on-failure", ""):
            raise DockerError(f"invalid restart policy '{name}'")
    else:
        if name in ("always", "unless-stopped", "no") and retries:
            raise DockerError("invalid restart policy: maximum retry count can only be used with 'on-failure'"
                              + (" and cannot be negative" if retries < 0 else ""))
        if name == "on-failure" and retries < 0:
            raise DockerError("invalid restart policy: maximum retry count cannot be negative")
        if name not in ("always", "unless-stopped", "no", "on-failure", ""):
            raise DockerError(f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', "
                              "'on-failure', or 'unless-stopped'")
    return name or "no", retries
