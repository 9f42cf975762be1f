"""The Vagrant backend: scenarios run for real inside a Debian 12 Vagrant box (libvirt or VirtualBox).

`VagrantBackend` is a batch backend, like `backends.vm.VMBackend`: one box serves many scenarios.
`run_batch(scenarios)` walks these steps, each one `vagrant` command (an argv list with a timeout, run
in the directory of `vagrant/Vagrantfile`):

1. copy the scenario files into a fresh run directory under `.harness-vagrant/` beside `vagrant/`
   (inside the project, which the Vagrantfile syncs to `/vagrant` in the box);
2. `vagrant up` (creates and provisions the box with `scripts/setup.sh` the first time, else a no-op);
3. `vagrant rsync`: the synced folder is rsync, one-way and only on request, so this is what carries
   the scenario files (and any change to the harness itself) into the box;
4. `vagrant ssh -c 'uname -r'`: the box's kernel release, for the results;
5. `vagrant ssh -c 'cd /vagrant && sudo env ... python3 -m harness run --backend netns --json ...'`;
6. `vagrant ssh -c 'cat .../results.json'`: rsync does not carry files back, so the JSON comes back on
   standard output;
7. `vagrant ssh -c 'sudo rm -rf .../<run>'`, then the host's run directory is removed, on every path;
   `vagrant halt` when the backend was made with `halt_after=True` (by default the box stays up, so the
   next batch skips the boot).

The box's JSON records come back as `ScenarioResult`s whose paths point at the files on this machine,
marked with backend `vagrant` and the box's kernel release. A step that fails turns every scenario of
the batch into an error naming the command, its exit code and its stderr.

`available()` only looks for the executable and the Vagrantfile. `prepare()` is `vagrant up` (the first
one downloads and provisions the box). `capabilities()` and `kernel_release()` ask the box once per
instance, answer included when it is Vagrant's reason for not answering (a stopped box): they never boot
it (`harness doctor` must stay quick); a successful `vagrant up` (`prepare`, a batch) makes them ask
again. Every `vagrant` command runs through `harness.proc` (its process group killed at the deadline).
Batches on one Vagrant directory take turns behind a file lock, since Vagrant refuses two actions on one
machine at once.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

from backends.base import BATCH, Capability, CommandResult, unavailable_everywhere
from backends.batch import adopt_records, stage_scenarios
from harness import proc, runid
from harness.docker.profiles import DEFAULT_PROFILE
from harness.errors import BackendUnavailable
from harness.model import Scenario
from harness.results import ERROR, SKIP, ScenarioResult

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAGRANT_DIR = PROJECT_ROOT / "vagrant"
STAGING = ".harness-vagrant"  # beside vagrant/, so inside the folder the Vagrantfile syncs
GUEST_ROOT = "/vagrant"  # where the Vagrantfile syncs the project
ENV_EXECUTABLE = "HARNESS_VAGRANT"
INSTALL_HINT = ("install Debian's package `vagrant` (apt-get install vagrant), with `vagrant-libvirt` and "
                "`libvirt-daemon-system`, or VirtualBox, for a provider")

# Seconds. The first `up` downloads the box and runs scripts/setup.sh (apt-get, pip): be generous.
UP_TIMEOUT = 1800.0
RSYNC_TIMEOUT = 300.0
SSH_TIMEOUT = 120.0  # a short command over `vagrant ssh`, Vagrant's own start-up included
HALT_TIMEOUT = 300.0
RUN_ALLOWANCE = 60.0  # on top of the per-scenario allowance: Vagrant, ssh and the harness's imports
PER_SCENARIO_ALLOWANCE = 20.0
TAIL = 3000  # characters of a failed command's output kept in a result's reason


class VagrantBackend:
    name = "vagrant"
    description = "a Debian 12 Vagrant box (libvirt or VirtualBox); runs the namespace backend inside it over `vagrant ssh`"
    kind = BATCH

    def __init__(self, vagrant_dir: str | os.PathLike | None = None, vagrant: str | None = None,
                 halt_after: bool = False):
        # Read at call time, not as parameter defaults, so that tests can point both somewhere else.
        self.vagrant_dir = Path(vagrant_dir).absolute() if vagrant_dir else DEFAULT_VAGRANT_DIR
        self.executable = vagrant or os.environ.get(ENV_EXECUTABLE) or "vagrant"
        self.halt_after = halt_after
        # What the box answered (or Vagrant's reason it did not), asked once; forgotten by a successful `up`.
        self._caps: dict[str, Capability] | None = None
        self._kernel: str | None = None

    @property
    def staging_dir(self) -> Path:
        # The Vagrantfile syncs "..": the parent of the Vagrant directory is /vagrant in the box.
        return self.vagrant_dir.parent / STAGING

    # -- availability -------------------------------------------------------------------------------

    def available(self) -> str | None:
        if shutil.which(self.executable) is None:
            return f"`{self.executable}` not found: {INSTALL_HINT}"
        if not (self.vagrant_dir / "Vagrantfile").is_file():
            return f"no Vagrantfile in {self.vagrant_dir}"
        return None

    def kernel_release(self) -> str:
        """The box's kernel release, asked once (a stopped box: "unknown" until a `vagrant up`)."""
        if self._kernel is None and self.available() is None:
            result = self._vagrant("ssh", "-c", "uname -r", timeout=SSH_TIMEOUT)
            self._kernel = result.stdout.strip().splitlines()[-1] if result.ok and result.stdout.strip() else ""
        return self._kernel or "unknown"

    def capabilities(self) -> dict[str, Capability]:
        """What the box's kernel can create, asked once; it never boots a stopped box."""
        if self._caps is not None:
            return self._caps
        reason = self.available()
        if reason:
            return unavailable_everywhere(reason)
        result = self._vagrant("ssh", "-c", _guest_harness("capabilities", "--backend", "netns", "--json"),
                               timeout=SSH_TIMEOUT)
        try:
            data = json.loads(result.stdout) if result.ok else None
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            # A stopped box is the usual cause; kept until a `vagrant up` (prepare, a batch) succeeds.
            self._caps = unavailable_everywhere(f"cannot ask the Vagrant box: {self._failure(result)}")
        else:
            self._caps = {f: Capability(f, bool(v["available"]), v.get("detail", "")) for f, v in data.items()}
        return self._caps

    def prepare(self) -> str:
        """`vagrant up`: creates and provisions the box the first time (slow), else starts or keeps it."""
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        with self._lock():
            up = self._vagrant("up", timeout=UP_TIMEOUT)
            if not up.ok:
                raise BackendUnavailable(f"vagrant step failed: {self._failure(up)}")
            self._box_is_up()
        return f"Vagrant box in {self.vagrant_dir} is up (kernel {self.kernel_release()})"

    def _box_is_up(self) -> None:
        """What was asked of a stopped box is stale now: ask again."""
        self._caps = None
        self._kernel = None

    def _lock(self) -> FileLock:
        # .vagrant/ is Vagrant's own state directory for this Vagrantfile: the lock sits with the machine.
        (self.vagrant_dir / ".vagrant").mkdir(exist_ok=True)
        return FileLock(str(self.vagrant_dir / ".vagrant" / "harness-batch.lock"))

    # -- the batch ----------------------------------------------------------------------------------

    def run_batch(self, scenarios: Sequence[Scenario], profile: str = DEFAULT_PROFILE,
                  matrix: bool = True) -> list[ScenarioResult]:
        """Bring the box up, run every scenario inside it, return one result per scenario, in order."""
        if not scenarios:
            return []
        reason = self.available()
        if reason:
            return [_result(s, "unknown", reason, status=SKIP) for s in scenarios]
        with self._lock():
            return self._locked_batch(scenarios, profile, matrix)

    def _locked_batch(self, scenarios: Sequence[Scenario], profile: str, matrix: bool) -> list[ScenarioResult]:
        t0 = time.monotonic()
        self.staging_dir.mkdir(exist_ok=True)
        run_dir = self.staging_dir / f"run-{runid.run_id()}{secrets.token_hex(4)}"
        run_dir.mkdir()
        guest_dir = f"{GUEST_ROOT}/{STAGING}/{run_dir.name}"
        box_touched = guest_touched = False
        try:
            (run_dir / "scenarios").mkdir()
            guest_paths = stage_scenarios(scenarios, run_dir / "scenarios", f"{guest_dir}/scenarios")

            box_touched = True  # even a failed `up` may leave a half-started box to halt
            up = self._vagrant("up", timeout=UP_TIMEOUT)
            if not up.ok:
                return self._failed(scenarios, up)
            self._box_is_up()
            up_seconds = up.end - up.start
            guest_touched = True  # an interrupted rsync may already have copied part of the run
            sync = self._vagrant("rsync", timeout=RSYNC_TIMEOUT)
            if not sync.ok:
                return self._failed(scenarios, sync)
            uname = self._vagrant("ssh", "-c", "uname -r", timeout=SSH_TIMEOUT)
            if not uname.ok or not uname.stdout.strip():
                return self._failed(scenarios, uname)
            self._kernel = kernel = uname.stdout.strip().splitlines()[-1]

            results_path = f"{guest_dir}/results.json"
            command = _guest_harness("run", "--backend", "netns", "--profile", profile, "--json", results_path,
                                     "--quiet", *([] if matrix else ["--no-matrix"]), *guest_paths)
            # Exit 1 means some scenario failed, which the records say; only missing records are an error.
            run = self._vagrant("ssh", "-c", command,
                                timeout=RUN_ALLOWANCE + PER_SCENARIO_ALLOWANCE * len(scenarios))
            run_note = "" if run.ok else f"\n{self._failure(run)}"
            fetch = self._vagrant("ssh", "-c", f"cat {shlex.quote(results_path)}", timeout=SSH_TIMEOUT)
            if not fetch.ok:
                # The run's own failure (exit code, stderr) explains a missing results file best.
                return self._failed(scenarios, *([fetch] if run.ok else [run, fetch]), kernel=kernel)
            try:
                records = json.loads(fetch.stdout)
            except json.JSONDecodeError as exc:
                return [_result(s, kernel, f"the box's results are not JSON ({exc}): {fetch.stdout[:300]!r}{run_note}")
                        for s in scenarios]
        finally:
            if guest_touched:
                self._cleanup_guest(guest_dir)
            if box_touched and self.halt_after:
                halt = self._vagrant("halt", timeout=HALT_TIMEOUT)
                if not halt.ok:
                    log.warning("%s", self._failure(halt))
            shutil.rmtree(run_dir, ignore_errors=True)
            try:
                self.staging_dir.rmdir()  # only when no other batch is using it
            except OSError:
                pass

        wall = round(time.monotonic() - t0, 3)
        out = adopt_records(scenarios, guest_paths, records, self.name, kernel,
                            lambda s: _result(s, kernel, f"the box returned no record for this scenario{run_note}"))
        for result in out:
            result.durations["vagrant_up"] = round(up_seconds, 3)
            result.durations["vagrant_batch_wall"] = wall
        return out

    # -- commands -----------------------------------------------------------------------------------

    def _vagrant(self, *args: str, timeout: float) -> CommandResult:
        """`vagrant ARGS` in the Vagrant directory, its whole process group killed at the deadline.

        Vagrant starts ssh, rsync and provider tools: `harness.proc` gives it a process group of its own
        and kills the group on a timeout, an exception or Ctrl-C. A missing executable is exit 127."""
        env = {**os.environ,
               "VAGRANT_NO_COLOR": "1",  # the output goes into result reasons, not a terminal
               "VAGRANT_CHECKPOINT_DISABLE": "1"}  # no version check over the network on every call
        return proc.run((self.executable, *args), cwd=self.vagrant_dir, env=env, timeout=timeout, node="vagrant")

    def _cleanup_guest(self, guest_dir: str) -> None:
        # Also removed by the next `vagrant rsync` (--delete), but a stopped box would keep it until then.
        result = self._vagrant("ssh", "-c", f"sudo rm -rf -- {shlex.quote(guest_dir)}", timeout=SSH_TIMEOUT)
        if not result.ok:
            log.warning("%s", self._failure(result))

    def _failure(self, result: CommandResult) -> str:
        """The failed command, where it ran, how it ended and the tail of what it said."""
        how = (f"timed out after {result.end - result.start:.0f} s" if result.timed_out
               else f"exited {result.exit_code}")
        said = (result.stderr.strip() or result.stdout.strip())[-TAIL:]
        return f"`{shlex.join(result.argv)}` (in {self.vagrant_dir}) {how}" + (f":\n{said}" if said else "")

    def _failed(self, scenarios: Sequence[Scenario], *steps: CommandResult,
                kernel: str = "unknown") -> list[ScenarioResult]:
        reason = "vagrant step failed: " + "\nthen: ".join(self._failure(r) for r in steps)
        return [_result(s, kernel, reason) for s in scenarios]


def _guest_harness(*args: str) -> str:
    """The harness as root in the box, from the synced project, as one remote shell command line."""
    # sudo resets the environment: pass the terminal settings (rich must not guess) and the run id
    # (so the box's namespace names show which run made them) explicitly.
    env = ["TERM=dumb", "COLUMNS=160", *(f"{k}={v}" for k, v in runid.child_env().items())]
    return f"cd {GUEST_ROOT} && " + shlex.join(["sudo", "env", *env, "python3", "-m", "harness", *args])


def _result(scenario: Scenario, kernel: str, reason: str, status: str = ERROR) -> ScenarioResult:
    return ScenarioResult(scenario.name, scenario.path, VagrantBackend.name, kernel, status, reason=reason,
                          source=scenario.source)
