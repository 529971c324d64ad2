"""BIRD's life: adopt a running one, start one, notice it died and start it again.

BIRD runs detached from calico-bgpd (its own session, stdin from /dev/null, stdout/stderr to
DIR/bird.log) as `bird -f -c DIR/bird.conf -s DIR/bird.ctl -P DIR/bird.pid`, so it outlives
calico-bgpd: a node keeps routing while its agent restarts, and a SIGTERM to calico-bgpd never
reaches BIRD. A restarted calico-bgpd adopts the BIRD named by bird.pid when that process is
alive, is a bird started for this DIR, and answers on bird.ctl.

BIRD is started with subprocess.Popen, not asyncio's subprocess: asyncio kills a child whose
transport is closed when the loop shuts down, and BIRD must survive calico-bgpd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from services.bgp.birdctl import BirdControl

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
ADOPT_PATIENCE_S = 3.0  # a live BIRD of ours that does not answer yet (busy): wait this long


@dataclass(frozen=True, slots=True)
class BirdPaths:
    """The files of one BIRD instance, all in one directory."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "bird.conf"

    @property
    def candidate(self) -> Path:
        return self.directory / "bird.conf.new"

    @property
    def loaded_marker(self) -> Path:
        """The SHA-256 of the configuration BIRD last loaded (written after start/configure)."""
        return self.directory / "bird.conf.loaded"

    @property
    def control(self) -> Path:
        return self.directory / "bird.ctl"

    @property
    def pid(self) -> Path:
        return self.directory / "bird.pid"

    @property
    def log(self) -> Path:
        return self.directory / "bird.log"


def process_alive(pid: int) -> bool:
    """A live (not zombie) process: a BIRD whose parent died may linger as a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself contain spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def is_bird_for(pid: int, paths: BirdPaths) -> bool:
    """`pid` runs a bird whose command line names this directory's files."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in argv if a]
    return (
        bool(args) and os.path.basename(args[0]).startswith("bird") and str(paths.control) in args
    )


def read_pid(paths: BirdPaths) -> int | None:
    try:
        return int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None


class BirdSupervisor:
    def __init__(self, paths: BirdPaths, bird: str = "bird", poll_interval: float = 0.5) -> None:
        self.paths = paths
        self.bird = bird
        self.poll_interval = poll_interval
        self.control = BirdControl(paths.control)
        self.pid: int | None = None
        self.restarts = 0
        self.adopted = False
        self._child: subprocess.Popen[bytes] | None = None
        self.last_start_error = ""

    @property
    def running(self) -> bool:
        if self.pid is None:
            return False
        if self._child is not None and self._child.pid == self.pid:
            return self._child.poll() is None  # reaps our own child when it exits
        return process_alive(self.pid)

    async def adopt(self) -> bool:
        """Take over the BIRD of a previous calico-bgpd, if one runs for this directory."""
        pid = read_pid(self.paths)
        if pid is None or not process_alive(pid) or not is_bird_for(pid, self.paths):
            return False
        deadline = time.monotonic() + ADOPT_PATIENCE_S
        while not await self.control.alive():
            if time.monotonic() > deadline or not process_alive(pid):
                log.warning("BIRD %d does not answer on %s: replacing it", pid, self.paths.control)
                await self._terminate(pid)
                return False
            await asyncio.sleep(0.2)
        self.pid = pid
        self.adopted = True
        log.info("adopted running BIRD", extra={"pid": pid})
        return True

    async def start(self, recovery: bool = False) -> bool:
        """Start BIRD on DIR/bird.conf (which must exist and have passed `bird -p`); True once
        it answers on its control socket.

        `recovery` (after a crash) starts it with -R, graceful restart recovery: the kernel
        protocol keeps the routes the dead BIRD left until the BGP sessions are back (or the
        configuration's `graceful restart wait`), and peers are told our forwarding state was
        preserved, so a BIRD crash does not blink the routes. Not on a first start: there is
        nothing to preserve, and recovery would hold back the first kernel routes.
        """
        child = self._spawn(recovery)
        self._child = child
        self.pid = child.pid
        self.adopted = False
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if child.poll() is not None:
                self.last_start_error = self._log_tail() or f"BIRD exited with {child.returncode}"
                log.error("BIRD failed to start: %s", self.last_start_error)
                return False
            if await self.control.alive(within=1.0):
                self.last_start_error = ""
                log.info("started BIRD", extra={"pid": child.pid})
                return True
            await asyncio.sleep(0.05)
        self.last_start_error = f"BIRD did not answer on {self.paths.control} in time"
        log.error("%s", self.last_start_error)
        return False

    def _spawn(self, recovery: bool) -> subprocess.Popen[bytes]:
        self.paths.directory.mkdir(parents=True, exist_ok=True)
        argv = [self.bird, "-f", "-c", str(self.paths.config)]
        argv += ["-s", str(self.paths.control), "-P", str(self.paths.pid)]
        if recovery:
            argv.append("-R")
        with open(self.paths.log, "ab") as log_file:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: no signal to us reaches it
                close_fds=True,
            )

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.paths.log.read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
        return ""

    async def _terminate(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not process_alive(pid):
                return
            await asyncio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def restart_if_dead(self) -> bool:
        """If BIRD (once started or adopted) died, start it again. True when it restarted."""
        if self.pid is None or self.running:
            return False
        log.warning("BIRD exited; restarting", extra={"pid": self.pid})
        self.restarts += 1
        return await self.start(recovery=True)
