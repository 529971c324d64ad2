"""The outgoing-NAT manager: follows the pools (from the Felix syncer) and keeps the NAT rules
of the policy dataplane's kind (nftables or iptables) in this namespace's kernel, rewriting them
on every pool change and every refresh interval (which repairs a flushed rule). Without any
pool asking for NAT it only makes sure, once, that no rule of its own is left."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from libcalico.runtime.tasks import cancel_and_wait
from services.felix.natout.rules import IPT_CHAIN, render_iptables, render_nft
from services.felix.vxlan.view import VxlanView

log = logging.getLogger(__name__)

_RETRY_DELAY_S = 0.5
IPTABLES_SUFFIX = {"iptables": "-nft", "iptables-legacy": "-legacy"}


class NatOutgoingManager:
    def __init__(self, view: VxlanView, dataplane: str, refresh_interval: float) -> None:
        if dataplane != "nftables" and dataplane not in IPTABLES_SUFFIX:
            raise ValueError(f"dataplane {dataplane!r}: no outgoing NAT for it")
        self.view = view  # shared with the VXLAN manager; only its pools are used here
        self._dataplane = dataplane
        self._refresh_interval = refresh_interval
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        # The rules were removed (or found absent) and no pool asked for NAT since: the first
        # round always writes, which also clears what a previous Felix left.
        self._cleared = False
        # What the last round wrote: a view change that leaves it the same (a block claimed,
        # a node's VTEP) rewrites nothing until the refresh interval.
        self._applied: tuple[list[str], list[str]] | None = None

    def wake(self) -> None:
        """The view changed (and is in sync): check the pools soon."""
        self._changed.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="felix-nat-outgoing")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    def wanted(self) -> tuple[list[str], list[str]]:
        """(pools whose traffic is masqueraded, every IPv4 pool)."""
        pools = [p for p in self.view.pools.values() if p.cidr.version == 4]
        masquerade = sorted(str(p.cidr) for p in pools if p.nat_outgoing and not p.disabled)
        return masquerade, sorted(str(p.cidr) for p in pools)

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
            wanted = self.wanted()
            masquerade, pools = wanted
            if not masquerade and self._cleared:
                continue  # nothing to masquerade, and no rule of ours left since the last round
            if wanted == self._applied and not periodic:
                continue  # the pools did not change; the refresh repairs drift
            try:
                await self._apply(masquerade, pools)
                self._applied = wanted
                self._cleared = not masquerade
                self.rounds += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("nat-outgoing: programming failed; retrying")
                await asyncio.sleep(_RETRY_DELAY_S)
                self._changed.set()

    async def _apply(self, masquerade: list[str], pools: list[str]) -> None:
        if self._dataplane == "nftables":
            await _exec(["nft", "-f", "-"], render_nft(masquerade, pools))
            return
        suffix = IPTABLES_SUFFIX[self._dataplane]
        iptables = f"iptables{suffix}"
        jump = ["POSTROUTING", "-j", IPT_CHAIN]
        if not masquerade:
            # Remove the jump and the chain if a previous round (or Felix) left them.
            for args in (["-D", *jump], ["-F", IPT_CHAIN], ["-X", IPT_CHAIN]):
                with contextlib.suppress(RuntimeError):
                    await _exec([iptables, "-t", "nat", *args], "")
            return
        await _exec([f"{iptables}-restore", "--noflush"], render_iptables(masquerade, pools))
        try:
            await _exec([iptables, "-t", "nat", "-C", *jump], "")
        except RuntimeError:  # not there yet (or removed by hand)
            await _exec([iptables, "-t", "nat", "-A", *jump], "")


async def _exec(argv: list[str], stdin: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(stdin.encode())
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {err.decode().strip() or proc.returncode}")
