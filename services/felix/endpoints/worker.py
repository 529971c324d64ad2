"""Runs pod plumbing off the event loop, on one dedicated thread.

One thread because the node namespace's netlink socket is not thread-safe and because the
thread briefly steps into pod namespaces (setns is per thread): keeping that on a thread of
its own means no other code ever runs in a pod's namespace by accident. Netlink requests
take microseconds each, so serialising them costs little next to the datastore writes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from services.felix.endpoints.netlink import Link
from services.felix.endpoints.sysctls import PROC_SYS_NET
from services.felix.endpoints.veth import PlumbedInterface, PodInterfaceSpec, PodPlumber

T = TypeVar("T")


class PlumbingWorker:
    """Async access to a PodPlumber living on its own thread."""

    def __init__(self, sysctl_dir: str = PROC_SYS_NET) -> None:
        self._sysctl_dir = sysctl_dir
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="felix-netlink")
        self._plumber: PodPlumber | None = None

    async def start(self) -> None:
        self._plumber = await self._call(functools.partial(PodPlumber, self._sysctl_dir))

    async def close(self) -> None:
        if self._plumber is not None:
            await self._call(self._plumber.close)
            self._plumber = None
        self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _plumbing(self) -> PodPlumber:
        if self._plumber is None:
            raise RuntimeError("plumbing worker not started")
        return self._plumber

    async def setup(self, spec: PodInterfaceSpec) -> PlumbedInterface:
        return await self._call(functools.partial(self._plumbing().setup, spec))

    async def teardown(self, host_name: str) -> bool:
        return await self._call(functools.partial(self._plumbing().teardown, host_name))

    async def disable(self, host_name: str) -> bool:
        return await self._call(functools.partial(self._plumbing().disable, host_name))

    async def check(self, spec: PodInterfaceSpec) -> list[str]:
        return await self._call(functools.partial(self._plumbing().check, spec))

    async def interface_mtus(self, spec: PodInterfaceSpec) -> tuple[int, int]:
        return await self._call(functools.partial(self._plumbing().interface_mtus, spec))

    async def host_link(self, host_name: str) -> Link | None:
        return await self._call(functools.partial(self._plumbing().host_link, host_name))

    async def default_route_mtu(self, fallback: int) -> int:
        return await self._call(functools.partial(self._plumbing().default_route_mtu, fallback))

    async def host_veths(self) -> list[Link]:
        return await self._call(self._plumbing().host_veths)
