"""calico-bgpd's engine: syncer -> view -> intent -> render -> check -> reload, and BIRD's care.

Three tasks:
- consume: applies syncer batches to the ClusterView; once in sync, every change wakes the
  apply task.
- apply: builds the intent, renders, and hands the text to the ConfigApplier. A change applies
  at once unless the previous reload finished less than its own duration (at least
  `debounce` seconds) ago; then it waits out the rest: single changes are fast, bursts are
  batched, and BIRD spends at most about half its time reloading however large the config.
  Updates arriving during an apply are taken by the next one.
- watch: every `poll_interval` checks BIRD is alive and starts it again if not (backing off
  while it keeps failing to start).

SIGTERM stops the tasks and leaves BIRD running (routes stay while the agent restarts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from libcalico.runtime.tasks import cancel_and_wait
from libcalico.syncer.api import Syncer
from services.bgp.apply import ApplyResult, ConfigApplier
from services.bgp.bird_status import ProtocolStatus, parse_show_protocols
from services.bgp.birdctl import BirdControlError
from services.bgp.intent import PEER_TYPES, BGPIntent, PeerIntent, build_intent
from services.bgp.render import RenderOptions, render_config
from services.bgp.supervisor import BirdPaths, BirdSupervisor
from services.bgp.view import ClusterView

log = logging.getLogger(__name__)

DEFAULT_DEBOUNCE_S = 0.01
DEFAULT_POLL_S = 0.5
RETRY_AFTER_FAILURE_S = 2.0
MAX_START_BACKOFF_S = 10.0


@dataclass(frozen=True, slots=True)
class PeerStatus:
    intent: PeerIntent
    bird: ProtocolStatus | None  # None: BIRD did not report the protocol


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    node: str
    in_sync: bool
    intent: BGPIntent | None  # the intent BIRD's configuration was rendered from
    bird_running: bool
    bird_pid: int | None
    bird_restarts: int
    last_apply: ApplyResult | None
    peers: tuple[PeerStatus, ...] = ()
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    node: str
    bird_dir: Path
    bird: str = "bird"
    connect_retry: float | None = None  # CALICO_BGP_CONNECT_RETRY
    extra_config_file: Path | None = None  # CALICO_BGPD_EXTRA_CONFIG_FILE
    debounce: float = DEFAULT_DEBOUNCE_S
    poll_interval: float = DEFAULT_POLL_S


class BGPDaemon:
    def __init__(
        self,
        settings: DaemonSettings,
        syncer: Syncer,
        on_health: Callable[[bool], object] | None = None,
    ) -> None:
        self.settings = settings
        self.syncer = syncer
        self.view = ClusterView()
        self.paths = BirdPaths(settings.bird_dir)
        self.supervisor = BirdSupervisor(self.paths, settings.bird, settings.poll_interval)
        self.applier = ConfigApplier(self.paths, settings.bird)
        self.running_intent: BGPIntent | None = None
        self.latest_intent: BGPIntent | None = None
        self.applies = 0
        self._on_health = on_health
        self._healthy: bool | None = None
        self._changed = asyncio.Event()
        self._apply_lock = asyncio.Lock()
        self._last_apply_end = 0.0
        self._last_reload_seconds = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._start_backoff = 0.0
        self._next_start_attempt = 0.0
        self.failed: BaseException | None = None

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.settings.bird_dir.mkdir(parents=True, exist_ok=True)
        await self.supervisor.adopt()
        self._tasks = [
            asyncio.create_task(self._consume(), name="bgpd-syncer"),
            asyncio.create_task(self._apply_loop(), name="bgpd-apply"),
            asyncio.create_task(self._watch_loop(), name="bgpd-watch"),
        ]

    async def stop(self) -> None:
        """Stop following the datastore; BIRD keeps running."""
        await cancel_and_wait(self._tasks)
        await self.syncer.close()

    def request_apply(self) -> None:
        """Re-render and apply (SIGHUP: e.g. the extra configuration file changed)."""
        if self.view.in_sync:
            self._changed.set()

    # -- tasks ------------------------------------------------------------------------------

    async def _consume(self) -> None:
        try:
            async for batch in self.syncer.updates():
                if self.view.apply(batch) and self.view.in_sync:
                    self._changed.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("syncer failed")
            self.failed = exc
            raise

    async def _apply_loop(self) -> None:
        while True:
            await self._changed.wait()
            gap = max(self.settings.debounce, self._last_reload_seconds)
            wait = self._last_apply_end + gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._changed.clear()
            try:
                result = await self.apply_now()
            except Exception:
                log.exception("apply failed")
                result = None
            if result is None or not result.ok or result.reloaded:
                # The pause paces BIRD reloads; a render that changed nothing (say a
                # pending block claim, confirmed a moment later) must not delay the next.
                self._last_apply_end = time.monotonic()
                self._last_reload_seconds = result.duration_seconds if result else 0.0
            if result is None or (not result.ok and not self.applier.remembered(result)):
                # A passing failure (BIRD restarting, I/O): try again soon.
                asyncio.get_running_loop().call_later(RETRY_AFTER_FAILURE_S, self.request_apply)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            if self.supervisor.pid is None or self.supervisor.running:
                self._start_backoff = 0.0
                self._report_health()
                continue
            self._report_health()
            if time.monotonic() < self._next_start_attempt:
                continue
            async with self._apply_lock:
                if await self.supervisor.restart_if_dead():
                    self.applier.mark_loaded()
                    self._start_backoff = 0.0
                else:
                    self._start_backoff = min(
                        MAX_START_BACKOFF_S, max(1.0, self._start_backoff * 2)
                    )
                    self._next_start_attempt = time.monotonic() + self._start_backoff
            self._report_health()

    # -- applying ---------------------------------------------------------------------------

    def render_options(self) -> RenderOptions:
        extra = ""
        path = self.settings.extra_config_file
        if path is not None:
            try:
                extra = path.read_text()
            except OSError as exc:
                log.warning("cannot read extra BIRD configuration %s: %s", path, exc)
        return RenderOptions(
            bird_dir=str(self.settings.bird_dir),
            connect_retry=self.settings.connect_retry,
            extra_config=extra,
        )

    async def apply_now(self) -> ApplyResult:
        """Render the current view and bring BIRD in line with it."""
        async with self._apply_lock:
            intent = build_intent(self.view, self.settings.node)
            text = render_config(intent, self.render_options())
            self.latest_intent = intent
            result = await self.applier.apply(text, self.supervisor.running)
            self.applies += 1
            if result.ok:
                self.running_intent = intent
                if not self.supervisor.running and await self._start_bird():
                    self.applier.mark_loaded()
            log.info(
                "config applied" if result.ok else "config rejected",
                extra={
                    "sha256": result.config_sha256[:12],
                    "reloaded": result.reloaded,
                    "seconds": round(result.duration_seconds, 4),
                    "peers": len(intent.peers),
                    "advertised": len(intent.advertised),
                },
            )
            self._report_health()
            return result

    async def _start_bird(self) -> bool:
        # A BIRD that ran before and died counts (and logs) as a restart.
        if self.supervisor.pid is not None:
            return await self.supervisor.restart_if_dead()
        return await self.supervisor.start()

    def _report_health(self) -> None:
        # Serving: BIRD runs a configuration that passed `bird -p` (ours, or an adopted one's
        # a rejected update left in place) and the datastore still feeds us.
        healthy = self.applier.last is not None and self.supervisor.running
        runs_checked_config = self.running_intent is not None or self.applier.runs_loaded_config
        healthy = healthy and runs_checked_config and self.failed is None
        if healthy != self._healthy:
            self._healthy = healthy
            if self._on_health is not None:
                self._on_health(healthy)

    # -- status -----------------------------------------------------------------------------

    async def status(self) -> DaemonStatus:
        intent = self.running_intent
        protocols: dict[str, ProtocolStatus] = {}
        notes: list[str] = [] if intent is None else list(intent.notes)
        running = self.supervisor.running
        if running:
            try:
                reply = await self.supervisor.control.command("show protocols all", within=5.0)
                protocols = parse_show_protocols(reply.text)
            except BirdControlError as exc:
                notes.append(f"BIRD did not answer: {exc}")
        elif self.supervisor.last_start_error:
            notes.append(f"BIRD failed to start: {self.supervisor.last_start_error}")
        if self.failed is not None:
            notes.append(f"datastore updates stopped: {self.failed!r}")
        if not self.view.in_sync:
            notes.append("waiting for the datastore snapshot")
        elif intent is None:
            notes.append("no configuration applied yet")
        if intent is not None:
            peers = tuple(PeerStatus(p, protocols.get(p.protocol)) for p in intent.peers)
        else:
            # BIRD adopted from an earlier calico-bgpd and no configuration of ours applied
            # yet (say the first was rejected): BIRD still runs the last good one, whose
            # sessions its own listing names.
            peers = tuple(
                PeerStatus(peer_from_bird(p), p) for p in protocols.values() if p.proto == "BGP"
            )
        return DaemonStatus(
            node=self.settings.node,
            in_sync=self.view.in_sync,
            intent=intent,
            bird_running=running,
            bird_pid=self.supervisor.pid if running else None,
            bird_restarts=self.supervisor.restarts,
            last_apply=self.applier.last,
            peers=peers,
            notes=tuple(notes),
        )


def peer_from_bird(protocol: ProtocolStatus) -> PeerIntent:
    """A session as BIRD reports it, for a configuration whose intent this process never held.

    The type comes from the `description` calico-bgpd renders ("<type> [<node>]")."""
    peer_type = next(
        (t for t in PEER_TYPES if protocol.description.startswith(t)), "unknown (from BIRD)"
    )
    node = protocol.description[len(peer_type) :].strip() or None
    # BIRD lists "Neighbor port" only when it is not 179; our names carry it too.
    _, has_port, port = protocol.name.rpartition("_port_")
    return PeerIntent(
        protocol=protocol.name,
        address=protocol.neighbor_address,
        port=int(port) if has_port and port.isdigit() else protocol.neighbor_port,
        as_number=protocol.neighbor_as,
        type=peer_type,
        node=node if peer_type in PEER_TYPES else None,
    )
