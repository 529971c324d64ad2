"""Small object builders for the resource tests, and a helper asserting an error's path."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from libcalico.resources.validation import ValidationError, validate
from tests.fixtures.shared import CONFORMANCE_DIR as CONFORMANCE_DIR

CALICO = "projectcalico.org/v3"


def calico(kind: str, name: str, spec: Any, namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": CALICO, "kind": kind, "metadata": metadata, "spec": spec}


def gnp(spec: Any, name: str = "policy") -> dict[str, Any]:
    return calico("GlobalNetworkPolicy", name, spec)


def np(spec: Any, name: str = "policy", namespace: str = "x") -> dict[str, Any]:
    return calico("NetworkPolicy", name, spec, namespace)


def pool(spec: Any, name: str = "pool") -> dict[str, Any]:
    return calico("IPPool", name, spec)


def k8s_np(spec: Any, name: str = "policy", namespace: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def with_field(obj: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of obj with the dotted path (list indexes as numbers) set to value."""
    out = copy.deepcopy(dict(obj))
    target: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return out


def assert_invalid(obj: Any, path: str, message: str | None = None) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        validate(obj)
    assert caught.value.path == path, str(caught.value)
    if message is not None:
        assert re.search(message, caught.value.message), caught.value.message
    expected = f"{path}: {caught.value.message}" if path else caught.value.message
    assert str(caught.value) == expected
    return caught.value


# ---- the conformance cases' objects, placeholders filled in as a runner would ----

_POD_IP = "10.244.1.5"


def _fill(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v) for v in value]
    if isinstance(value, str) and value.startswith("{{") and value.endswith("}}"):
        kind, _, rest = value[2:-2].partition(":")
        if kind == "ip":
            return _POD_IP
        if kind == "hostcidr":
            return f"{_POD_IP}/32"
        if kind == "supernet":
            length = int(rest.rpartition(":")[2])
            return str(ipaddress.ip_network(f"{_POD_IP}/{length}", strict=False))
    return value


# Case files whose kinds belong to an issue not done yet: their objects are reported as skipped
# (with this reason), not silently left out, so the skip disappears when the issue lands.
PENDING_CONFORMANCE_FILES = {
    "calico-tiers-public.json": "Tier / AdminNetworkPolicy kinds: issue 16 (policy completeness)",
}


def conformance_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(CONFORMANCE_DIR.glob("*.json")):
        pending = PENDING_CONFORMANCE_FILES.get(path.name)
        for case in json.loads(path.read_text()):
            for step_number, step in enumerate(case["steps"]):
                for n, obj in enumerate(step["apply"]):
                    filled = _fill(obj)
                    if pending:
                        filled["__pending__"] = pending
                    yield f"{case['id']}/{step_number}/{n}", filled
