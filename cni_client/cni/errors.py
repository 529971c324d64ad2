"""CNI error codes (spec "Well-known Error Codes") and the exception that carries one."""

from __future__ import annotations

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
PLUGIN_NOT_AVAILABLE_LIMITED = 51

# Plugin-specific codes (the spec leaves 100 and up to plugins).
DAEMON_ERROR = 100  # a daemon refused or failed a request for a reason not listed below
ADDRESSES_EXHAUSTED = 101  # IPAM found no free address
CHECK_FAILED = 102  # CHECK found the endpoint differs from prevResult
ADDRESS_CONFLICT = 103  # IPAM: the address is taken
INTERNAL = 999  # a bug in the plugin


class CniError(Exception):
    """Becomes the spec's error object on stdout: {cniVersion, code, msg, details}."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, object]:
        out: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out
