"""The outgoing-NAT manager: follows the pools (from the Felix syncer) and keeps the NAT rules
of the policy dataplane's kind (nftables or iptables) in this namespace's kernel, rewriting them
on every pool change and every refresh interval (which repairs a flushed rule). Without any
pool asking for NAT it only makes sure, once, that no rule of its own is left."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from libcalico.runtime.tasks import cancel_and_wait
from libcalico.syncer.api import SyncerUpdate
from services.felix.natout.rules import IPT_CHAIN, render_iptables, render_nft
from services.felix.vxlan.view import VxlanView

log = logging.getLogger(__name__)

_RETRY_DELAY_S = 0.5
IPTABLES_SUFFIX = {"iptables": "-nft", "iptables-legacy": "-legacy"}


class NatOutgoingManager:
    def __init__(self, dataplane: str, refresh_interval: float) -> None:
        if dataplane != "nftables" and dataplane not in IPTABLES_SUFFIX:
            raise ValueError(f"dataplane {dataplane!r}: no outgoing NAT for it")
        self.view = VxlanView()  # only its pools are used here
        self._dataplane = dataplane
        self._refresh_interval = refresh_interval
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        # The rules were removed (or found absent) and no pool asked for NAT since: the first
        # round always writes, which also clears what a previous Felix left.
        self._cleared = False

    def observe(self, batch: list[SyncerUpdate]) -> None:
        if self.view.apply(batch) and self.view.in_sync:
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._refresh_interval)
            self._changed.clear()
            if not self.view.in_sync:
                continue
            masquerade, pools = self.wanted()
            if not masquerade and self._cleared:
                continue  # nothing to masquerade, and no rule of ours left since the last round
            try:
                await self._apply(masquerade, pools)
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
