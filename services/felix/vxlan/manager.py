"""The overlay manager: keeps this node's tunnel addresses published and its overlay (VXLAN
and IPIP) programmed.

It observes the Felix syncer's batches (`observe`), and on every change, and every refresh
interval, (1) makes sure the Node carries a VTEP address from a VXLAN pool when there is one,
and a tunl0 address from an IPIP pool when there is one and the kernel has ipip
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
from services.felix.vxlan.felixconfig import effective
from services.felix.vxlan.intent import OverlayIntent, compute, tunnel_pools
from services.felix.vxlan.kernel import VxlanKernel
from services.felix.vxlan.tunnel_addr import IPIP, VXLAN, TunnelEncap, ensure_tunnel_addr
from services.felix.vxlan.view import VxlanView

log = logging.getLogger(__name__)

_RETRY_DELAY_S = 0.5


class OverlayManager:
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
        self._published_pools: dict[str, tuple[str, ...]] = {}  # per encapsulation
        self.intent = OverlayIntent()
        self.programmed = OverlayIntent()  # the intent the kernel last matched
        self.rounds = 0
        self.last_repairs = 0
        self.last_error = ""
        self.vtep_problem = ""  # why this node has no VTEP although there are VXLAN pools
        self.ipip_addr_problem = ""  # the same for tunl0's address and IPIP pools
        self.ipip_supported: bool | None = None  # known after the first round
        self._mtu_listener: Callable[[int], None] | None = None
        self._pod_mtu: int | None = None
        self.detected_mtu: int | None = None

    def on_mtu(self, listener: Callable[[int], None]) -> None:
        """Call `listener` with the veth MTU for new pods (intent.pod_mtu: the enabled
        encapsulations' smallest, else the detected uplink MTU) once the first round has
        computed it and whenever it changes: pods created after that get it."""
        self._mtu_listener = listener
        if self._pod_mtu is not None:
            listener(self._pod_mtu)

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
        self.ipip_supported = await self._kernel.ipip_supported()
        me = self.view.nodes.get(self._node)
        pools, self.vtep_problem = tunnel_pools(self.view.vxlan_pools(), "VXLAN")
        await self._ensure_tunnel_addr(VXLAN, pools, me is not None and me.vtep_ip is not None)
        if self.ipip_supported:  # else no address: nothing could use it
            pools, self.ipip_addr_problem = tunnel_pools(self.view.ipip_pools(), "IPIP")
            await self._ensure_tunnel_addr(IPIP, pools, me is not None and me.ipip_ip is not None)
        config = effective(self.view.felix_configs, self._node)
        self.detected_mtu = await self._kernel.detect_mtu(config.mtu_iface_regex)
        self.intent = compute(self.view, self._node, self.detected_mtu, self.ipip_supported)
        if self.intent.pod_mtu != self._pod_mtu:
            self._pod_mtu = self.intent.pod_mtu
            if self._mtu_listener is not None:
                self._mtu_listener(self._pod_mtu)
        changes = await self._kernel.reconcile(self.intent)
        self.programmed = self.intent
        return changes

    @property
    def ipip_state(self) -> str:
        """ "supported", "unsupported: kernel has no ipip module (...)", or "" before the
        first round asked the kernel."""
        if self.ipip_supported is None:
            return ""
        return "supported" if self.ipip_supported else self._kernel.ipip_problem

    @property
    def vxlan_mtu(self) -> int | None:
        """vxlan.calico's MTU as last programmed (None without the device)."""
        return self._kernel.device_mtu

    async def _ensure_tunnel_addr(
        self, encap: TunnelEncap, pools: tuple[str, ...], published: bool
    ) -> None:
        """Allocate, keep or release `encap`'s tunnel address when its pools changed (or the
        Node's field disagrees with having pools). Nothing to do without pools unless the Node
        still shows an address (a pool's mode went back to Never, or stopped allowing Tunnel).
        The Node update that follows comes back through the syncer and triggers the round
        that programs the device."""
        problem = self.vtep_problem if encap is VXLAN else self.ipip_addr_problem
        if problem and self._published_pools.get(encap.name) != pools:
            log.warning("%s: %s", encap.name, problem)
        wanted = bool(pools) or published
        if wanted and (pools != self._published_pools.get(encap.name) or published != bool(pools)):
            await ensure_tunnel_addr(self._datastore, self._ipam_socket, self._node, pools, encap)
        self._published_pools[encap.name] = pools
