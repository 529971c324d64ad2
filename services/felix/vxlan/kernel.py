"""Programming the VXLAN intent into this namespace's kernel with pyroute2, and repairing it.

`reconcile` reads what is there (the device, its address, the routes Felix owns on it, its
permanent neighbours and FDB entries), changes only what differs from the intent and returns
how many changes it made: the first call programs everything, a periodic call repairs drift
(a route flushed by hand) and counts the repairs. Routes carry protocol 80, the number
Calico's Felix gives its routes, so that routes of anyone else (the kernel's, BIRD's, the pod
routes' RTPROT_BOOT) are never touched; every protocol-80 route in the main table is the
overlay's, whether it leaves by the overlay device or (CrossSubnet, same subnet) the uplink.

pyroute2 and not Felix's raw netlink client: this runs in Felix's own namespace, off the
per-pod path, where pyroute2's import and helper costs do not matter (services/felix/DESIGN.md).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterable, Iterable
from typing import Any

from pyroute2 import AsyncIPRoute

from services.felix.vxlan.intent import DEVICE, OVERHEAD, PORT, VNI, DeviceIntent, VxlanIntent

log = logging.getLogger(__name__)

RTPROT_FELIX = 80
MAIN_TABLE = 254
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
FALLBACK_UPLINK_MTU = 1500


async def _collect(result: Any) -> list[Any]:
    """pyroute2 answers some calls with a list, dumps with an async iterator."""
    if isinstance(result, AsyncIterable):
        return [item async for item in result]
    return list(result) if isinstance(result, Iterable) else [result]


class VxlanKernel:
    """One netlink socket in the namespace Felix runs in."""

    def __init__(self) -> None:
        self._ipr: AsyncIPRoute | None = None
        self.device_mtu: int | None = None  # vxlan.calico's MTU as last programmed

    async def _conn(self) -> AsyncIPRoute:
        if self._ipr is None:
            ipr = AsyncIPRoute()
            await ipr.setup_endpoint()
            self._ipr = ipr
        return self._ipr

    async def close(self) -> None:
        ipr, self._ipr = self._ipr, None
        if ipr is not None:
            ipr.close()

    async def reconcile(self, intent: VxlanIntent) -> int:
        """Make the kernel match `intent`; returns the number of changes made."""
        ipr = await self._conn()
        changes = 0
        # The device each route leaves by: the overlay device, or the uplink (None) for
        # direct routes. A route whose device is not there is left out (and removed).
        devices: dict[str | None, int] = {}
        if intent.device is None:
            self.device_mtu = None
            changes += await self._remove_device(ipr)
        else:
            index, changes = await self._ensure_device(ipr, intent.device)
            changes += await self._sync_fdb(ipr, index, intent.fdb)
            changes += await self._sync_neighbours(ipr, index, intent.neighbours)
            devices[DEVICE] = index
        if intent.local is not None and any(r.device is None for r in intent.routes.values()):
            uplink = await self._address_index(ipr, intent.local)
            if uplink is None:
                log.warning("overlay: no interface holds %s; no direct routes", intent.local)
            else:
                devices[None] = uplink
        want = {
            cidr: (route.via, devices[route.device], route.device is not None)
            for cidr, route in intent.routes.items()
            if route.device in devices
        }
        changes += await self._sync_routes(ipr, want)
        return changes

    # -- the device --------------------------------------------------------------------------

    async def _device_index(self, ipr: AsyncIPRoute) -> int | None:
        found = await ipr.link_lookup(ifname=DEVICE)
        return int(found[0]) if found else None

    async def _remove_device(self, ipr: AsyncIPRoute) -> int:
        index = await self._device_index(ipr)
        if index is None:
            return 0
        log.info("vxlan: no VXLAN pool (or no VTEP for this node): removing %s", DEVICE)
        await ipr.link("del", index=index)
        return 1

    async def _address_index(self, ipr: AsyncIPRoute, local: str) -> int | None:
        """The index of the interface holding `local` (the uplink: the outer packets' and the
        direct routes' way out)."""
        for msg in await _collect(await ipr.addr("dump", family=socket.AF_INET)):
            if msg.get("address") == local:
                return int(msg["index"])
        return None

    async def uplink_mtu(self, local: str) -> int:
        """The MTU of the interface holding this node's address."""
        ipr = await self._conn()
        index = await self._address_index(ipr, local)
        if index is None:
            return FALLBACK_UPLINK_MTU
        links = await _collect(await ipr.link("get", index=index))
        return int(links[0].get("mtu"))

    async def _ensure_device(self, ipr: AsyncIPRoute, want: DeviceIntent) -> tuple[int, int]:
        changes = 0
        mtu = await self.uplink_mtu(want.local) - OVERHEAD
        index = await self._device_index(ipr)
        if index is not None and not await self._device_matches(ipr, index, want):
            log.info("vxlan: %s differs from the intent; re-creating it", DEVICE)
            await ipr.link("del", index=index)
            index = None
        if index is None:
            await ipr.link(
                "add",
                ifname=DEVICE,
                kind="vxlan",
                vxlan_id=VNI,
                vxlan_port=PORT,
                vxlan_local=want.local,
                vxlan_learning=0,
                address=want.vtep_mac,
                mtu=mtu,
            )
            changes += 1
            index = await self._device_index(ipr)
            if index is None:
                raise RuntimeError(f"{DEVICE} was created but cannot be found")
        link = (await _collect(await ipr.link("get", index=index)))[0]
        if int(link.get("mtu")) != mtu:
            await ipr.link("set", index=index, mtu=mtu)
            changes += 1
        if not int(link["flags"]) & 1:  # IFF_UP
            await ipr.link("set", index=index, state="up")
            changes += 1
        changes += await self._sync_address(ipr, index, want.vtep_ip)
        self.device_mtu = mtu
        return index, changes

    async def _device_matches(self, ipr: AsyncIPRoute, index: int, want: DeviceIntent) -> bool:
        link = (await _collect(await ipr.link("get", index=index)))[0]
        info = link.get("linkinfo")
        data = info.get("data") if info is not None else None
        if info is None or info.get("kind") != "vxlan" or data is None:
            return False
        return bool(
            data.get("vxlan_id") == VNI
            and data.get("vxlan_port") == PORT
            and not data.get("vxlan_learning")
            and data.get("vxlan_local") == want.local
            and str(link.get("address")).lower() == want.vtep_mac
        )

    async def _sync_address(self, ipr: AsyncIPRoute, index: int, vtep_ip: str) -> int:
        changes = 0
        present = False
        for msg in await _collect(await ipr.addr("dump", family=socket.AF_INET, index=index)):
            if msg.get("index") != index:
                continue
            address, prefixlen = msg.get("address"), int(msg["prefixlen"])
            if address == vtep_ip and prefixlen == 32:
                present = True
            else:
                await ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
                changes += 1
        if not present:
            await ipr.addr("add", index=index, address=vtep_ip, prefixlen=32)
            changes += 1
        return changes

    # -- forwarding state --------------------------------------------------------------------

    async def _sync_fdb(self, ipr: AsyncIPRoute, index: int, want: dict[str, str]) -> int:
        have: dict[str, str] = {}
        for msg in await _collect(await ipr.fdb("dump", ifindex=index)):
            mac, dst = msg.get("lladdr"), msg.get("dst")
            if msg.get("ifindex") == index and mac and dst:
                have[str(mac).lower()] = str(dst)
        changes = 0
        for mac, dst in have.items():
            if want.get(mac) != dst:
                await ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst, flags=NTF_SELF)
                changes += 1
        for mac, dst in want.items():
            if have.get(mac) != dst:
                await ipr.fdb(
                    "replace",
                    ifindex=index,
                    lladdr=mac,
                    dst=dst,
                    flags=NTF_SELF,
                    state=NUD_PERMANENT,
                )
                changes += 1
        return changes

    async def _sync_neighbours(self, ipr: AsyncIPRoute, index: int, want: dict[str, str]) -> int:
        have: dict[str, tuple[str, int]] = {}
        for msg in await _collect(await ipr.neigh("dump", ifindex=index, family=socket.AF_INET)):
            if msg.get("ifindex") == index and msg.get("dst"):
                have[str(msg.get("dst"))] = (str(msg.get("lladdr") or "").lower(), msg["state"])
        changes = 0
        for ip, (_mac, state) in have.items():
            if ip not in want and state & NUD_PERMANENT:
                await ipr.neigh("del", ifindex=index, dst=ip)
                changes += 1
        for ip, mac in want.items():
            if have.get(ip) != (mac, NUD_PERMANENT):
                await ipr.neigh("replace", ifindex=index, dst=ip, lladdr=mac, state=NUD_PERMANENT)
                changes += 1
        return changes

    async def _sync_routes(self, ipr: AsyncIPRoute, want: dict[str, tuple[str, int, bool]]) -> int:
        """`want`: block CIDR -> (next hop, outgoing interface index, onlink). Every route of
        protocol 80 in the main table is the overlay's (pod routes are RTPROT_BOOT): those not
        wanted are removed, whatever their device; other protocols are never touched."""
        have: dict[str, tuple[str | None, int | None]] = {}
        for msg in await _collect(
            await ipr.route("dump", family=socket.AF_INET, table=MAIN_TABLE, proto=RTPROT_FELIX)
        ):
            if msg["proto"] != RTPROT_FELIX or msg.get("table") != MAIN_TABLE:
                continue
            have[f"{msg.get('dst')}/{msg['dst_len']}"] = (msg.get("gateway"), msg.get("oif"))
        changes = 0
        for cidr in [c for c in have if c not in want]:
            await ipr.route("del", dst=cidr, table=MAIN_TABLE, proto=RTPROT_FELIX)
            changes += 1
        for cidr, (via, oif, onlink) in want.items():
            if have.get(cidr) != (via, oif):
                await ipr.route(
                    "replace",
                    dst=cidr,
                    gateway=via,
                    oif=oif,
                    flags=RTNH_F_ONLINK if onlink else 0,
                    table=MAIN_TABLE,
                    proto=RTPROT_FELIX,
                )
                changes += 1
        return changes
