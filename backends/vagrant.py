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
the batch into an error naming the command, its exit code and its stderr. `capabilities()` asks the
running box's kernel once per instance; it does not boot a stopped box (`harness doctor` must stay
quick), it reports Vagrant's reason instead. Batches on one Vagrant directory take turns behind a file
lock, since Vagrant refuses two actions on one machine at once.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

from backends.base import Capability, CommandResult, adopt_records, stage_scenarios, unavailable_everywhere
from harness.errors import BackendUnavailable
from harness.model import Scenario
from harness.profiles import DEFAULT_PROFILE
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
    batch = True

    def __init__(self, vagrant_dir: str | os.PathLike | None = None, vagrant: str | None = None,
                 halt_after: bool = False):
        # Read at call time, not as parameter defaults, so that tests can point both somewhere else.
        self.vagrant_dir = Path(vagrant_dir).absolute() if vagrant_dir else DEFAULT_VAGRANT_DIR
        self.executable = vagrant or os.environ.get(ENV_EXECUTABLE) or "vagrant"
        self.halt_after = halt_after
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
        if self._kernel is None and self.available() is None:
            result = self._vagrant("ssh", "-c", "uname -r", timeout=SSH_TIMEOUT)
            if result.ok and result.stdout.strip():
                self._kernel = result.stdout.strip().splitlines()[-1]
        return self._kernel or "unknown"

    def capabilities(self) -> dict[str, Capability]:
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
            # Not cached: a stopped box is the usual cause, and the next batch brings it up.
            why = f"cannot ask the Vagrant box: {self._failure(result)}"
            return unavailable_everywhere(why)
        self._caps = {f: Capability(f, bool(v["available"]), v.get("detail", "")) for f, v in data.items()}
        return self._caps

    def session(self, label: str):
        raise BackendUnavailable("the vagrant backend runs scenarios in batches (one box for many): use run_batch")

    # -- the batch ----------------------------------------------------------------------------------

    def run_batch(self, scenarios: Sequence[Scenario], profile: str = DEFAULT_PROFILE,
                  matrix: bool = True) -> list[ScenarioResult]:
        """Bring the box up, run every scenario inside it, return one result per scenario, in order."""
        if not scenarios:
            return []
        reason = self.available()
        if reason:
            return [_result(s, "unknown", reason, status=SKIP) for s in scenarios]
        # .vagrant/ is Vagrant's own state directory for this Vagrantfile: the lock sits with the machine.
        (self.vagrant_dir / ".vagrant").mkdir(exist_ok=True)
        with FileLock(str(self.vagrant_dir / ".vagrant" / "harness-batch.lock")):
            return self._locked_batch(scenarios, profile, matrix)

    def _locked_batch(self, scenarios: Sequence[Scenario], profile: str, matrix: bool) -> list[ScenarioResult]:
        t0 = time.monotonic()
        self.staging_dir.mkdir(exist_ok=True)
        run_dir = self.staging_dir / f"run-{os.environ.get('HARNESS_RUN_ID', '')}{secrets.token_hex(4)}"
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
        """`vagrant ARGS` in the Vagrant directory, its whole process group killed at the deadline."""
        argv = (self.executable, *args)
        env = {**os.environ,
               "VAGRANT_NO_COLOR": "1",  # the output goes into result reasons, not a terminal
               "VAGRANT_CHECKPOINT_DISABLE": "1"}  # no version check over the network on every call
        start = time.time()
        try:
            # Own session: Vagrant starts ssh, rsync and provider tools; a timeout must stop them all.
            proc = subprocess.Popen(argv, cwd=self.vagrant_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
        except OSError as exc:
            return CommandResult("vagrant", argv, 127, "", str(exc), start, time.time())
        try:
            out, err = proc.communicate(timeout=timeout)
            return CommandResult("vagrant", argv, proc.returncode, out, err, start, time.time())
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # a daemon that left the group (an ssh master) holds the pipes
                proc.stdout.close()
                proc.stderr.close()
                proc.wait()
                out, err = "", ""
            return CommandResult("vagrant", argv, -signal.SIGKILL, out or "", err or "", start, time.time(),
                                 timed_out=True)
        except BaseException:  # Ctrl-C or SIGTERM: leave no Vagrant behind us
            _kill_group(proc)
            proc.wait()
            raise

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
    env = ["TERM=dumb", "COLUMNS=160"]
    if os.environ.get("HARNESS_RUN_ID"):
        env.append(f"HARNESS_RUN_ID={os.environ['HARNESS_RUN_ID']}")
    return f"cd {GUEST_ROOT} && " + shlex.join(["sudo", "env", *env, "python3", "-m", "harness", *args])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _result(scenario: Scenario, kernel: str, reason: str, status: str = ERROR) -> ScenarioResult:
    return ScenarioResult(scenario.name, scenario.path, VagrantBackend.name, kernel, status, reason=reason,
                          source=scenario.source)
