"""Bringing BIRD's configuration in line with a rendered text, safely.

    apply(text):
      sha equal to what BIRD runs     -> nothing written, nothing reloaded (ok, reloaded=False)
      sha equal to the last rejection -> the same rejection again (BIRD is not asked twice)
      else: write bird.conf.new, `bird -p -c bird.conf.new`
        rejected -> bird.conf untouched (BIRD keeps its last good config); ok=False + BIRD's text
        accepted -> rename over bird.conf; if BIRD runs, `configure`; if BIRD refuses the
                    reconfiguration, put the previous bird.conf back and report it (and try
                    again on the next apply: that failure may pass)

bird.conf is therefore always a configuration `bird -p` accepted, which is what the
supervisor (re)starts BIRD with. bird.conf.loaded records the SHA-256 of the configuration
BIRD last loaded, so a calico-bgpd that died between rename and configure reconfigures the
adopted BIRD on its next apply instead of believing it runs the file on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from services.bgp.birdctl import BirdControl, BirdControlError
from services.bgp.render import config_sha256
from services.bgp.supervisor import BirdPaths

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 30.0
CONFIGURE_TIMEOUT_S = 60.0
# BIRD's answers to `configure` that mean the new configuration is (being) used.
_CONFIGURE_OK = {
    3,  # Reconfigured
    4,  # Reconfiguration in progress
    5,  # Reconfiguration already in progress, queueing new config
    18,  # Reconfiguration confirmed
    19,  # Nothing to do
}


@dataclass(frozen=True, slots=True)
class ApplyResult:
    ok: bool
    error: str
    finished_unix: float
    duration_seconds: float
    config_sha256: str
    reloaded: bool  # BIRD was reconfigured (or the file replaced for BIRD to start on)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ConfigApplier:
    """Applies rendered configurations to one BIRD directory. Not reentrant: one caller."""

    def __init__(self, paths: BirdPaths, bird: str = "bird") -> None:
        self.paths = paths
        self.bird = bird
        self.control = BirdControl(paths.control, timeout=CONFIGURE_TIMEOUT_S)
        paths.directory.mkdir(parents=True, exist_ok=True)
        on_disk = _read_text(paths.config)
        self.current_text: str | None = on_disk
        self.current_sha: str | None = None if on_disk is None else config_sha256(on_disk)
        loaded = _read_text(paths.loaded_marker)
        self.loaded_sha: str | None = loaded.strip() if loaded else None
        self._rejected: ApplyResult | None = None
        self.last: ApplyResult | None = None

    @property
    def has_config(self) -> bool:
        return self.current_text is not None

    @property
    def runs_loaded_config(self) -> bool:
        """bird.conf is what BIRD last loaded (per bird.conf.loaded): a checked config."""
        return self.current_sha is not None and self.loaded_sha == self.current_sha

    def mark_loaded(self) -> None:
        """BIRD (re)started on bird.conf: it runs the file on disk."""
        if self.current_sha is not None and self.loaded_sha != self.current_sha:
            _write_atomic(self.paths.loaded_marker, self.current_sha + "\n")
            self.loaded_sha = self.current_sha

    async def check(self, path: Path) -> str | None:
        """`bird -p -c path`: None when BIRD accepts the file, else BIRD's message."""
        proc = await asyncio.create_subprocess_exec(
            self.bird,
            "-p",
            "-c",
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), CHECK_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return f"bird -p timed out after {CHECK_TIMEOUT_S:.0f} s"
        if proc.returncode == 0:
            return None
        message = output.decode(errors="replace").strip()
        return message or f"bird -p exited with status {proc.returncode}"

    async def apply(self, text: str, bird_running: bool) -> ApplyResult:
        started = time.perf_counter()
        sha = config_sha256(text)

        def result(ok: bool, error: str = "", reloaded: bool = False) -> ApplyResult:
            self.last = ApplyResult(
                ok, error, time.time(), time.perf_counter() - started, sha, reloaded
            )
            return self.last

        if sha == self.current_sha and (not bird_running or self.loaded_sha == sha):
            return result(True)
        if self._rejected is not None and self._rejected.config_sha256 == sha:
            self.last = self._rejected
            return self._rejected
        if sha != self.current_sha:
            _write_atomic(self.paths.candidate, text)
            problem = await self.check(self.paths.candidate)
            if problem is not None:
                log.error(
                    "BIRD rejected the new configuration; keeping the running one: %s", problem
                )
                self._rejected = result(False, problem)
                return self._rejected
            previous = self.current_text
            os.replace(self.paths.candidate, self.paths.config)
            self.current_text, self.current_sha = text, sha
        else:
            previous = None  # same file, BIRD simply has not loaded it yet
        if not bird_running:
            return result(True, reloaded=True)  # the supervisor starts BIRD on it
        problem = await self._configure()
        if problem is not None:
            if previous is not None:
                _write_atomic(self.paths.config, previous)
                self.current_text, self.current_sha = previous, config_sha256(previous)
            # Not remembered as a rejection: a configure can fail for passing reasons (BIRD
            # restarting), so the next apply tries again.
            log.error("BIRD refused to reconfigure; previous configuration kept: %s", problem)
            return result(False, problem)
        self._rejected = None
        self.mark_loaded()
        return result(True, reloaded=True)

    def remembered(self, result: ApplyResult) -> bool:
        """`result` is a remembered rejection: BIRD refused this very text, so retrying it is
        useless until the intent (or the extra configuration) changes."""
        return self._rejected is not None and self._rejected.config_sha256 == result.config_sha256

    async def _configure(self) -> str | None:
        try:
            reply = await self.control.command("configure")
        except BirdControlError as exc:
            return str(exc)
        if reply.code in _CONFIGURE_OK:
            return None
        return reply.message() or f"configure answered code {reply.code}"
