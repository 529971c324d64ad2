"""CNI spec versions this plugin speaks and which commands each allows."""

from __future__ import annotations

from cni_client.cni.errors import INCOMPATIBLE_VERSION, CniError

LATEST = "1.1.0"
SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
# The first version that has each command (the spec's "introduced in" for CHECK, STATUS, GC).
COMMAND_SINCE = {"CHECK": (0, 4, 0), "STATUS": (1, 1, 0), "GC": (1, 1, 0)}


def as_tuple(version: str) -> tuple[int, ...]:
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return (0,)
    return tuple(int(p) for p in parts)


def check_supported(version: str, command: str) -> None:
    if version not in SUPPORTED:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI version {version!r}: this plugin supports {', '.join(SUPPORTED)}",
        )
    since = COMMAND_SINCE.get(command)
    if since is not None and as_tuple(version) < since:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"CNI version {version} does not have {command}"
            f" (needs {'.'.join(map(str, since))} or later)",
        )


def is_legacy_result(version: str) -> bool:
    """0.3.x and 0.4.0 results carry an IP "version" field that 1.0.0 dropped."""
    return as_tuple(version) < (1, 0, 0)


def has_interface_mtu(version: str) -> bool:
    """1.1.0 added `mtu` to the result's interfaces; older results must not carry it."""
    return as_tuple(version) >= (1, 1, 0)


def version_info() -> dict[str, object]:
    """The VERSION command's answer."""
    return {"cniVersion": LATEST, "supportedVersions": list(SUPPORTED)}
