"""Entering a network namespace from one thread, briefly, and coming back.

setns(CLONE_NEWNET) changes only the calling thread's namespace, so a worker thread can step
into a pod's namespace to open a netlink socket there (the socket stays bound to that
namespace after the thread steps back) and to write the pod's sysctls (/proc/sys/net shows
the namespace of the thread that opens the file). Python 3.11 has no os.setns: use libc.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


class NetnsError(OSError):
    """A namespace could not be opened or entered."""


class NamespaceEscapeError(RuntimeError):
    """The thread could not return to its own namespace: it must not do any more work."""


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise NetnsError(code, os.strerror(code))


def open_netns(path: str) -> int:
    """An fd for the namespace at `path`; FileNotFoundError when it does not exist."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    return fd


def is_netns(fd: int) -> bool:
    """Whether `fd` is a network namespace (NS_GET_NSTYPE answers CLONE_NEWNET)."""
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


def same_namespace(fd_a: int, fd_b: int) -> bool:
    a, b = os.fstat(fd_a), os.fstat(fd_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def current_netns_fd() -> int:
    """An fd for the calling thread's own namespace (to come back to)."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


@contextlib.contextmanager
def entered(target_fd: int, home_fd: int) -> Iterator[None]:
    """Run the block with the calling thread in `target_fd`'s namespace, then go home."""
    try:
        setns(target_fd)
    except NetnsError as exc:
        if exc.errno == errno.EINVAL:
            raise NetnsError(errno.EINVAL, "not a network namespace") from exc
        raise
    try:
        yield
    finally:
        try:
            setns(home_fd)
        except OSError as exc:  # pragma: no cover - only if the kernel refuses our own netns
            raise NamespaceEscapeError(f"cannot return to the node namespace: {exc}") from exc
