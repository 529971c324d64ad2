"""Validate a resource object and return it normalized, with Calico's defaults applied.

    validate(obj) -> dict       a new object; the input is never modified
    ValidationError             .path ("spec.ingress[0].action"), .message, .index

Per kind, a body validator checks every top-level field except apiVersion/kind/metadata; for
most kinds that is just `spec`, checked by the spec validator of the kind's module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from libcalico.datastore.keys import GROUP_CALICO, GROUP_CORE, GROUP_DISCOVERY, GROUP_NETWORKING
from libcalico.resources.kinds import KindInfo, UnknownKindError, kind_of
from libcalico.resources.validation import (
    bgp_filter,
    config,
    endpoints,
    ipam,
    kube_controllers,
    kubernetes,
    policy,
    services,
)
from libcalico.resources.validation.errors import ValidationError
from libcalico.resources.validation.fields import Fields, as_mapping
from libcalico.resources.validation.metadata import validate_metadata

__all__ = ["ValidationError", "check_update", "validate"]

SpecValidator = Callable[[Any, dict[str, Any]], dict[str, Any]]
BodyValidator = Callable[[Fields, dict[str, Any]], dict[str, Any]]
UpdateCheck = Callable[[dict[str, Any], dict[str, Any]], None]


@dataclass(frozen=True)
class _KindRules:
    body_fields: frozenset[str]
    body: BodyValidator
    on_update: UpdateCheck | None = None


def _spec_body(spec: SpecValidator, *extra_fields: str) -> _KindRules:
    """The usual shape: a `spec` (always present in the result) and maybe a free `status`."""

    def body(fields: Fields, meta: dict[str, Any]) -> dict[str, Any]:
        out = {"spec": spec(fields.get("spec"), meta)}
        if fields.has("status"):
            out["status"] = dict(as_mapping(fields.get("status"), "status"))
        return out

    return _KindRules(frozenset({"spec", *extra_fields}), body)


_RULES: dict[tuple[str, str], _KindRules] = {
    (GROUP_CALICO, "IPPool"): _KindRules(
        frozenset({"spec"}),
        _spec_body(ipam.validate_ippool_spec).body,
        ipam.ippool_immutable_fields,
    ),
    (GROUP_CALICO, "IPAMConfiguration"): _spec_body(ipam.validate_ipam_config_spec),
    (GROUP_CALICO, "Node"): _spec_body(endpoints.validate_node_spec, "status"),
    (GROUP_CALICO, "WorkloadEndpoint"): _spec_body(endpoints.validate_workload_endpoint_spec),
    (GROUP_CALICO, "HostEndpoint"): _spec_body(endpoints.validate_host_endpoint_spec),
    (GROUP_CALICO, "NetworkPolicy"): _spec_body(policy.validate_network_policy_spec),
    (GROUP_CALICO, "GlobalNetworkPolicy"): _spec_body(policy.validate_global_network_policy_spec),
    (GROUP_CALICO, "NetworkSet"): _spec_body(endpoints.validate_network_set_spec),
    (GROUP_CALICO, "GlobalNetworkSet"): _spec_body(endpoints.validate_global_network_set_spec),
    (GROUP_CALICO, "Profile"): _spec_body(policy.validate_profile_spec),
    (GROUP_CALICO, "FelixConfiguration"): _spec_body(config.validate_felix_configuration_spec),
    (GROUP_CALICO, "BGPConfiguration"): _spec_body(config.validate_bgp_configuration_spec),
    (GROUP_CALICO, "BGPPeer"): _spec_body(config.validate_bgp_peer_spec),
    (GROUP_CALICO, "BGPFilter"): _spec_body(bgp_filter.validate_bgp_filter_spec),
    (GROUP_CALICO, "ClusterInformation"): _spec_body(config.validate_cluster_information_spec),
    (GROUP_CALICO, "KubeControllersConfiguration"): _spec_body(
        kube_controllers.validate_kube_controllers_configuration_spec, "status"
    ),
    (GROUP_CORE, "Namespace"): _KindRules(
        frozenset({"spec", "status"}), kubernetes.validate_namespace_body
    ),
    (GROUP_CORE, "Pod"): _KindRules(frozenset({"spec", "status"}), kubernetes.validate_pod_body),
    (GROUP_CORE, "ServiceAccount"): _KindRules(
        frozenset({"secrets", "imagePullSecrets", "automountServiceAccountToken"}),
        kubernetes.validate_service_account_body,
    ),
    (GROUP_NETWORKING, "NetworkPolicy"): _spec_body(kubernetes.validate_k8s_network_policy_spec),
    (GROUP_CORE, "Service"): _KindRules(
        frozenset({"spec", "status"}), services.validate_service_body
    ),
    (GROUP_DISCOVERY, "EndpointSlice"): _KindRules(
        frozenset({"addressType", "endpoints", "ports"}), services.validate_endpoint_slice_body
    ),
}


def _rules_for(info: KindInfo) -> _KindRules:
    try:
        return _RULES[(info.group, info.kind)]
    except KeyError:
        raise ValidationError("kind", f"no validator for kind {info.kind}") from None


def resolve(obj: Any) -> KindInfo:
    """The object's kind, failures reported as ValidationError at `kind`/`apiVersion`."""
    mapping = as_mapping(obj, "")
    try:
        return kind_of(mapping)
    except UnknownKindError as exc:
        raise ValidationError(exc.field or "kind", exc.reason) from None


def validate(obj: Mapping[str, Any]) -> dict[str, Any]:
    info = resolve(obj)
    rules = _rules_for(info)
    fields = Fields(obj, "", {"apiVersion", "kind", "metadata", *rules.body_fields})
    if not fields.has("metadata"):
        raise ValidationError("metadata", "required")
    meta = validate_metadata(fields.get("metadata"), info)
    out: dict[str, Any] = {"apiVersion": info.api_version, "kind": info.kind, "metadata": meta}
    out.update(rules.body(fields, meta))
    return out


def check_update(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Checks that compare a replacement with the stored object (immutable fields)."""
    check = _rules_for(resolve(new)).on_update
    if check is not None:
        check(old, new)
