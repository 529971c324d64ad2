"""Shared by tests/kube: who the test users are, and whether the API server can run here."""

from __future__ import annotations

from lab.apiserver import missing_binaries

NO_RIGHTS_USER = "nobody"  # has a token, and no RBAC rights


def kube_binaries_missing() -> str | None:
    """Why the tests here cannot run (printed when they skip), or None."""
    return missing_binaries()
