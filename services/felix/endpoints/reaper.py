"""Deletes host veths in the background, on a thread of its own.

Deleting a veth blocks the caller for 20-40 ms while the kernel waits out RCU grace periods,
which would be most of a CNI DEL's budget. The endpoint manager therefore takes the link
down (instant: the pod is cut off), answers, and hands the deletion to the reaper. Other
netlink work is not blocked meanwhile (the RTNL lock is released before the wait). A new
setup for the same pod name waits for a pending deletion of that name first.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from services.felix.endpoints.netlink import NetlinkSocket

log = logging.getLogger(__name__)


class LinkReaper:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="felix-reaper")
        self._sock: NetlinkSocket | None = None  # only touched on the reaper thread
        self._pending: dict[str, asyncio.Future[bool]] = {}

    def _delete(self, name: str) -> bool:
        if self._sock is None:
            self._sock = NetlinkSocket()
        return self._sock.delete_link(name)

    def schedule(self, name: str) -> None:
        """Delete link `name` soon; a no-op if that is already pending."""
        if name in self._pending:
            return
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._delete, name)
        self._pending[name] = future

        def done(f: asyncio.Future[bool]) -> None:
            if self._pending.get(name) is f:
                del self._pending[name]
            if not f.cancelled() and f.exception() is not None:
                log.error("deleting %s failed: %s", name, f.exception())

        future.add_done_callback(done)

    async def wait(self, name: str) -> None:
        """Return once no deletion of `name` is pending (errors were logged already)."""
        future = self._pending.get(name)
        if future is not None:
            await asyncio.wait([future])

    def pending(self) -> list[str]:
        return list(self._pending)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending.values()))

        def close_sock() -> None:
            if self._sock is not None:
                self._sock.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, close_sock)
        self._executor.shutdown(wait=True)
