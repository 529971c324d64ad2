"""Run kernel-facing work inside a chosen network namespace, never by accident in the host's.

A namespace is joined per *thread* (setns affects only the calling thread), so a dedicated
worker thread enters it once and every netlink socket it opens afterwards lives there.
Subprocesses get ``nsenter --net=<path>`` in front of their command.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def netns_path(netns: str | None) -> str | None:
    """A namespace name ("node1") or path ("/run/netns/node1", "/proc/1/ns/net")."""
    if not netns:
        return None
    return netns if "/" in netns else f"/run/netns/{netns}"


def enter_netns(path: str) -> None:
    """Move the calling thread into the namespace at ``path`` (raises on failure)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsWorker:
    """One thread, inside the namespace (or the process's own when ``path`` is None)."""

    def __init__(self, path: str | None, name: str = "netns-worker") -> None:
        self.path = path
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name, initializer=self._init
        )
        # Enter the namespace now, so a bad path fails at construction.
        self._pool.submit(lambda: None).result()
        if self._error is not None:
            raise self._error

    def _init(self) -> None:
        try:
            if self.path is not None:
                enter_netns(self.path)
        except BaseException as exc:
            self._error = exc
            raise

    def call(self, fn: Callable[[], T]) -> T:
        if self._error is not None:
            raise self._error
        return self._pool.submit(fn).result()

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        if self._error is not None:
            raise self._error
        return self._pool.submit(fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def command_in_netns(path: str | None, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={path}", *argv] if path else argv
