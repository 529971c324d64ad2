"""Named network namespaces (as `ip netns` keeps them under /run/netns) and entering them.

Python 3.11 has no os.setns, so `setns` goes through libc. setns(CLONE_NEWNET) changes only the
calling thread; a socket keeps the namespace it was created in after the thread switches back,
which is what the prober relies on.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
IP = "ip"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsError(RuntimeError):
    pass


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return netns_path(name).exists()


def setns_fd(fd: int) -> None:
    """Move the calling thread into the network namespace open at `fd`."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter(name_or_path: str | Path) -> None:
    """Move the calling thread (for the CLI: the main thread, before any other thread or child
    exists, so they all inherit it) into a namespace for good."""
    path = Path(name_or_path) if "/" in str(name_or_path) else netns_path(str(name_or_path))
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_fd(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(path: str | Path) -> Iterator[None]:
    """Run a block in another network namespace, then return to the current one."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_fd(target)
        try:
            yield
        finally:
            # Failing to return would leave this thread in the wrong namespace: fatal.
            setns_fd(home)
    finally:
        os.close(target)
        os.close(home)


def run_ip(args: Sequence[str], netns: str | None = None, check: bool = True) -> str:
    """`ip [-n NETNS] ARGS...`; returns stdout, raises NetnsError with stderr on failure."""
    argv = [IP, *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def create(name: str) -> Path:
    """A new named namespace with its loopback up."""
    run_ip(["netns", "add", name])
    run_ip(["link", "set", "lo", "up"], netns=name)
    return netns_path(name)


def delete(name: str) -> None:
    """Remove a named namespace (idempotent). Its links go with it once no process holds it."""
    if exists(name):
        run_ip(["netns", "del", name])


def sysctl(netns: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl by writing /proc/sys from a process inside the namespace."""
    subprocess.run(
        ["nsenter", f"--net={netns_path(netns)}", "sysctl", "-qw", f"{key}={value}"],
        check=True,
        capture_output=True,
        timeout=30,
    )


def links(netns: str) -> list[str]:
    """Interface names inside a namespace."""
    out = run_ip(["-o", "link", "show"], netns=netns)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def routes(netns: str) -> list[str]:
    return [line.strip() for line in run_ip(["route", "show"], netns=netns).splitlines()]
