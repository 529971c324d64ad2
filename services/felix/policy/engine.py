"""The policy engine: feeds syncer batches to the calc graph and applies deltas.

One task consumes the syncer; another applies: it waits for changes, takes the graph's
delta and hands it to the dataplane, so updates arriving during an apply are batched into
the next one. The first apply after InSync is a full reconcile with the kernel (nothing is
flushed before that: on restart the previous rules keep enforcing policy). A periodic
refresh reconciles again to repair drift.

The endpoint API awaits ``wait_programmed(interface)`` before answering a pod ADD.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass

from libcalico.runtime.tasks import cancel_and_wait
from libcalico.syncer.api import Syncer
from services.felix.calc import CalcGraph
from services.felix.calc.model import EndpointPolicy, StateDelta
from services.felix.dataplane.base import PolicyDataplane

log = logging.getLogger(__name__)

DEFAULT_REFRESH_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class EngineStatus:
    in_sync: bool
    dataplane: str
    endpoints: int  # local endpoints with policy programmed
    known_endpoints: int  # all endpoints in the datastore
    active_policies: int
    ipsets: int
    last_apply_seconds: float
    applies: int
    last_refresh_repairs: int
    live: bool
    ready: bool


class PolicyEngine:
    def __init__(
        self,
        syncer: Syncer,
        nodename: str,
        dataplane: PolicyDataplane,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL_S,
    ) -> None:
        self.graph = CalcGraph(nodename)
        self.dataplane = dataplane
        self._syncer = syncer
        self._refresh_interval = refresh_interval
        self._changed = asyncio.Event()
        self._apply_lock = asyncio.Lock()
        self._applied = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._reconciled = False
        self._pending = StateDelta()
        self.last_apply_seconds = 0.0
        self.applies = 0
        self.last_refresh_repairs = 0
        self._failed: BaseException | None = None
        self._programmed: dict[str, EndpointPolicy] = {}  # as last written to the kernel

    # -- running ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.dataplane.start()
        self._tasks = [
            asyncio.create_task(self._consume(), name="felix-syncer"),
            asyncio.create_task(self._apply_loop(), name="felix-apply"),
            asyncio.create_task(self._refresh_loop(), name="felix-refresh"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        await self._syncer.close()
        await self.dataplane.close()

    async def _consume(self) -> None:
        try:
            async for batch in self._syncer.updates():
                self.graph.apply(batch)
                if self.graph.in_sync:
                    self._changed.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("syncer failed")
            self._failed = exc
            raise

    async def _apply_loop(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.apply_now()

    async def apply_now(self) -> None:
        """Apply everything pending (a full reconcile the first time)."""
        async with self._apply_lock:
            await self._apply_locked()

    async def _apply_locked(self) -> None:
        if not self.graph.in_sync:
            return
        self._pending.merge(self.graph.flush())
        # The dataplane renders synchronously before its first await: this is what it writes.
        snapshot = dict(self.graph.state.endpoints)
        started = time.perf_counter()
        try:
            if not self._reconciled:
                await self.dataplane.reconcile(self.graph.state)
                self._reconciled = True
            elif self._pending:
                await self.dataplane.apply(self.graph.state, self._pending)
            self._pending = StateDelta()
        except Exception:
            log.exception("dataplane apply failed; retrying with a full reconcile")
            self._reconciled = False
            await asyncio.sleep(0.2)
            self._changed.set()
            return
        self.last_apply_seconds = time.perf_counter() - started
        self.applies += 1
        self._programmed = snapshot
        async with self._applied:
            self._applied.notify_all()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            if not self._reconciled:
                continue
            try:
                async with self._apply_lock:
                    repairs = await self.dataplane.reconcile(self.graph.state)
            except Exception:
                log.exception("refresh failed")
                continue
            self.last_refresh_repairs = repairs
            if repairs:
                log.warning("refresh repaired %d differences in the kernel", repairs)

    # -- queries ---------------------------------------------------------------------------

    def is_programmed(self, interface: str, ips: Collection[str] | None = None) -> bool:
        """The endpoint's current intended policy is in the kernel.

        With ``ips`` (CIDRs as the calc graph normalises them), only an endpoint with exactly
        those addresses counts: a pod re-created under the same name reuses the interface
        name, and must not be reported programmed from its predecessor's state.
        """
        if not self._reconciled:
            return False
        intended = self.graph.state.endpoints.get(interface)
        if intended is None or self._programmed.get(interface) != intended:
            return False
        return ips is None or frozenset(intended.ips) == frozenset(ips)

    async def wait_programmed(
        self, interface: str, wait_s: float, ips: Collection[str] | None = None
    ) -> bool:
        """Wait until the endpoint on ``interface`` (with ``ips``) has its policy programmed."""
        deadline = asyncio.get_running_loop().time() + wait_s
        async with self._applied:
            while not self.is_programmed(interface, ips):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._applied.wait(), min(remaining, 0.5))
        return True

    @property
    def live(self) -> bool:
        return self._failed is None and all(not t.done() for t in self._tasks)

    @property
    def ready(self) -> bool:
        return self.live and self._reconciled

    def status(self) -> EngineStatus:
        return EngineStatus(
            in_sync=self.graph.in_sync,
            dataplane=self.dataplane.name,
            endpoints=len(self.dataplane.programmed_interfaces()),
            known_endpoints=self.graph.endpoint_count,
            active_policies=self.graph.active_policy_count,
            ipsets=self.dataplane.ipset_count(),
            last_apply_seconds=self.last_apply_seconds,
            applies=self.applies,
            last_refresh_repairs=self.last_refresh_repairs,
            live=self.live,
            ready=self.ready,
        )
