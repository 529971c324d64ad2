"""IPAM errors; the gRPC server maps each to a status code (see server.py)."""

from __future__ import annotations


class IpamError(Exception):
    """Base class; the message says what was wrong."""


class InvalidRequestError(IpamError):
    """Bad input: malformed address, unknown pool, missing handle (INVALID_ARGUMENT)."""


class PoolsExhaustedError(IpamError):
    """No free address could be found in the eligible pools (RESOURCE_EXHAUSTED)."""


class AddressInUseError(IpamError):
    """AssignIP of an address that is already allocated (ALREADY_EXISTS)."""


class TooManyConflictsError(IpamError):
    """Compare-and-swap kept failing after the bounded number of retries (ABORTED)."""
