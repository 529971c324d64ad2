"""The VXLAN manager: keeps this node's VTEP published and its overlay programmed.

It observes the Felix syncer's batches (`observe`), and on every change, and every refresh
interval, (1) makes sure the Node carries a VTEP address from a VXLAN pool when there is one
(tunnel_addr), (2) computes the intent (intent.compute) and (3) reconciles the kernel with it
(kernel.VxlanKernel). A failed round is logged and retried; the periodic round counts the
repairs it had to make (drift: a route flushed by hand comes back within the interval).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from libcalico.datastore import Datastore
from libcalico.runtime.tasks import cancel_and_wait
from services.felix.vxlan.intent import VxlanIntent, compute, vtep_pools
from services.felix.vxlan.kernel import VxlanKernel
from services.felix.vxlan.tunnel_addr import ensure_vtep
from services.felix.vxlan.view import VxlanView

log = logging.getLogger(__name__)

_RETRY_DELAY_S = 0.5


class VxlanManager:
    def __init__(
        self,
        view: VxlanView,
        datastore: Datastore,
        ipam_socket: str,
        node: str,
        refresh_interval: float,
    ) -> None:
        self.view = view  # shared with the NAT manager; daemon.py applies the syncer to it
        self._datastore = datastore
        self._ipam_socket = ipam_socket
        self._node = node
        self._refresh_interval = refresh_interval
        self._kernel = VxlanKernel()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._published_pools: tuple[str, ...] | None = None
        self.intent = VxlanIntent()
        self.rounds = 0
        self.last_repairs = 0
        self.last_error = ""
        self.vtep_problem = ""  # why this node has no VTEP although there are VXLAN pools
        self._mtu_listener: Callable[[int | None], None] | None = None

    def on_mtu(self, listener: Callable[[int | None], None]) -> None:
        """Call `listener` with vxlan.calico's MTU (None without a device) now and whenever
        it changes: pods created after that get it on their veths."""
        self._mtu_listener = listener
        listener(self._kernel.device_mtu)

    def wake(self) -> None:
        """The view changed (and is in sync): reconcile soon."""
        self._changed.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="felix-vxlan")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        await self._kernel.close()

    async def _run(self) -> None:
        while True:
            periodic = False
            try:
                await asyncio.wait_for(self._changed.wait(), self._refresh_interval)
            except TimeoutError:
                periodic = True
            self._changed.clear()
            if not self.view.in_sync:
                continue
            try:
                changes = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("vxlan: programming failed; retrying")
                self.last_error = str(exc) or type(exc).__name__
                await asyncio.sleep(_RETRY_DELAY_S)
                self._changed.set()
                continue
            self.last_error = ""
            self.rounds += 1
            if periodic:
                self.last_repairs = changes
                if changes:
                    log.warning("vxlan: refresh repaired %d differences in the kernel", changes)

    async def _round(self) -> int:
        pools, self.vtep_problem = vtep_pools(self.view)
        if self.vtep_problem and self._published_pools != pools:
            log.warning("vxlan: %s", self.vtep_problem)
        me = self.view.nodes.get(self._node)
        published = me is not None and me.vtep_ip is not None
        # Nothing to allocate or release without VXLAN pools, unless the Node still shows a
        # VTEP (a pool's vxlanMode went back to Never, or it stopped allowing Tunnel).
        wanted = bool(pools) or published
        if wanted and (pools != self._published_pools or published != bool(pools)):
            # The Node update that follows comes back through the syncer and triggers the
            # round that programs the device.
            await ensure_vtep(self._datastore, self._ipam_socket, self._node, pools)
        self._published_pools = pools
        self.intent = compute(self.view, self._node)
        before = self._kernel.device_mtu
        try:
            return await self._kernel.reconcile(self.intent)
        finally:
            if self._mtu_listener is not None and self._kernel.device_mtu != before:
                self._mtu_listener(self._kernel.device_mtu)
