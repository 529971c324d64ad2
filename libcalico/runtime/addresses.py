"""gRPC addresses: Unix socket paths versus host:port, and the socket file's life cycle."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path

# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107
SOCKET_MODE = 0o660
SOCKET_DIR_MODE = 0o750


class AddressError(ValueError):
    """A listen address or socket path that cannot be used."""


def unix_path_of(target: str) -> str | None:
    """The socket path if `target` names a Unix socket, else None (it is host:port).

    Accepts `unix:///abs/path`, `unix:/abs/path`, `unix:rel/path` and a bare path (one that
    contains a `/` and no `:`, or starts with `.` or `/`).
    """
    if target.startswith("unix://"):
        return target[len("unix://") :]
    if target.startswith("unix:"):
        return target[len("unix:") :]
    if target.startswith(("/", "./", "../")) or ("/" in target and ":" not in target):
        return target
    return None


def channel_target(target: str) -> str:
    """The target string grpc expects: `unix:<abs path>` for sockets, host:port untouched."""
    path = unix_path_of(target)
    if path is None:
        return target
    return f"unix:{os.path.abspath(path)}"


def _is_live_socket(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()
    return True


def prepare_socket_path(path: str | os.PathLike[str]) -> Path:
    """Make `path` ready to bind: parent dir created, stale socket from a dead process removed.

    Refuses a path held by a live server (gRPC would silently unlink it and steal the name)
    and a path that exists but is not a socket.
    """
    sock = Path(path).absolute()
    if len(os.fsencode(sock)) > MAX_UNIX_PATH:
        raise AddressError(f"unix socket path longer than {MAX_UNIX_PATH} bytes: {sock}")
    if not sock.parent.exists():
        sock.parent.mkdir(mode=SOCKET_DIR_MODE, parents=True, exist_ok=True)
    try:
        mode = sock.lstat().st_mode
    except FileNotFoundError:
        return sock
    if not stat.S_ISSOCK(mode):
        raise AddressError(f"{sock} exists and is not a socket")
    if _is_live_socket(str(sock)):
        raise AddressError(f"{sock} is in use by a running server")
    sock.unlink()
    return sock


def socket_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the socket file, to remove only the one we created."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def remove_socket(path: Path, identity: tuple[int, int] | None) -> None:
    """Remove the socket file if it is still ours (not replaced by another process's)."""
    if identity is not None and socket_identity(path) == identity:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
