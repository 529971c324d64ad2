"""Object metadata: name rules per kind, namespace presence, labels and annotations."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from libcalico.datastore.keys import GROUP_CALICO, GROUP_CORE
from libcalico.resources.kinds import KindInfo
from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import (
    Fields,
    as_int,
    as_list,
    as_str,
    as_str_list,
    check_annotations,
    check_dns_label,
    check_dns_subdomain,
    check_labels,
)

# Kubernetes ObjectMeta; Calico's resources embed the same struct.
METADATA_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
# Calico: a label, or label.label (tier.name); Kubernetes-converted policies keep a prefix.
_NETWORK_POLICY_NAME_RE = re.compile(
    rf"^(({_LABEL})(\.{_LABEL})?|((?:knp|ossg)\.default\.({_SUBDOMAIN})))$"
)
_GLOBAL_NETWORK_POLICY_NAME_RE = re.compile(rf"^({_LABEL}\.)?{_LABEL}$")

NameCheck = Callable[[Any, str], str]


def _policy_name(pattern: re.Pattern[str]) -> NameCheck:
    def check(value: Any, path: str) -> str:
        text = check_dns_subdomain(value, path)
        if not pattern.match(text):
            raise ValidationError(
                path,
                f"{text!r} must consist of lower case alphanumeric characters or '-' "
                f"(regex: {_LABEL}), optionally with one '.' separating a tier prefix",
            )
        return text

    return check


def _exactly_default(kind: str) -> NameCheck:
    def check(value: Any, path: str) -> str:
        text = as_str(value, path, allow_empty=False)
        if text != "default":
            raise ValidationError(path, f"{kind} must be named 'default', not {text!r}")
        return text

    return check


_NAME_CHECKS: dict[tuple[str, str], NameCheck] = {
    (GROUP_CALICO, "NetworkPolicy"): _policy_name(_NETWORK_POLICY_NAME_RE),
    (GROUP_CALICO, "GlobalNetworkPolicy"): _policy_name(_GLOBAL_NETWORK_POLICY_NAME_RE),
    (GROUP_CALICO, "IPAMConfiguration"): _exactly_default("IPAMConfiguration"),
    (GROUP_CALICO, "ClusterInformation"): _exactly_default("ClusterInformation"),
    (GROUP_CALICO, "KubeControllersConfiguration"): _exactly_default(
        "KubeControllersConfiguration"
    ),
    (GROUP_CORE, "Namespace"): check_dns_label,
}

# Labels Calico derives itself and refuses on network sets.
_RESERVED_NETWORK_SET_LABELS = {"projectcalico.org/namespace"}


def validate_metadata(value: Any, info: KindInfo) -> dict[str, Any]:
    fields = Fields(value, "metadata", METADATA_FIELDS)
    out: dict[str, Any] = dict(fields.values)

    if not fields.has("name"):
        raise ValidationError("metadata.name", "required")
    check_name = _NAME_CHECKS.get((info.group, info.kind), check_dns_subdomain)
    out["name"] = check_name(fields.get("name"), "metadata.name")

    if info.namespaced:
        if not fields.has("namespace") or fields.get("namespace") == "":
            raise ValidationError(
                "metadata.namespace", f"required: {info.kind} is a namespaced resource"
            )
        out["namespace"] = check_dns_label(fields.get("namespace"), "metadata.namespace")
    elif fields.get("namespace") not in (None, ""):
        raise ValidationError(
            "metadata.namespace", f"must not be set: {info.kind} is not namespaced"
        )
    else:
        out.pop("namespace", None)

    if fields.has("labels"):
        out["labels"] = check_labels(fields.get("labels"), "metadata.labels")
        if info.kind in ("NetworkSet", "GlobalNetworkSet") and info.group == GROUP_CALICO:
            for key in out["labels"]:
                if key in _RESERVED_NETWORK_SET_LABELS:
                    raise ValidationError(
                        f"metadata.labels.{key}", f"{key} is not a valid label name"
                    )
    if fields.has("annotations"):
        out["annotations"] = check_annotations(fields.get("annotations"), "metadata.annotations")
    for key in ("resourceVersion", "uid", "creationTimestamp", "generateName", "selfLink"):
        if fields.has(key):
            out[key] = as_str(fields.get(key), fields.at(key))
    if fields.has("generation"):
        out["generation"] = as_int(fields.get("generation"), fields.at("generation"), 0)
    if fields.has("finalizers"):
        out["finalizers"] = as_str_list(fields.get("finalizers"), fields.at("finalizers"))
    for key in ("ownerReferences", "managedFields"):
        if fields.has(key):
            out[key] = as_list(fields.get(key), fields.at(key))
    return out
