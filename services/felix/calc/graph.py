"""The calculation graph: syncer updates in, intended dataplane state and deltas out.

Two label indexes do the matching incrementally:
- ``_local``: this node's endpoints against every policy's effective selector. A policy
  matching at least one local endpoint is *active* and gets compiled; each local endpoint's
  ordered policy lists come from here.
- ``_members``: every endpoint and network set (local and remote) against the selectors of
  the IP sets that active policies and profiles reference. Its callbacks keep each set's
  members current (reference counted, so overlapping contributions are safe).

Services and EndpointSlices go to ``services.ServiceIndex`` (kube-proxy's ServicePorts, kept
in ``state.service_ports``); enabled IPv4 IPPools make ``state.pod_cidrs``.

Every change records what it touched in a ``StateDelta``; ``flush()`` hands it over.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Any

from libcalico.datastore.keys import ResourceKey, parse_resource_key
from libcalico.resources.invalid import InvalidObjects
from libcalico.selector import NAMESPACE_LABEL, LabelIndex, Selector
from libcalico.syncer.api import Delete, InSync, SyncerUpdate, Update
from services.felix.calc import inputs
from services.felix.calc.inputs import Endpoint, NamedPort, PodInfo, PolicyDef
from services.felix.calc.model import (
    Action,
    DataplaneState,
    EndpointPolicy,
    IPSetKind,
    IPSetSpec,
    PolicyProgram,
    Rule,
    StateDelta,
)
from services.felix.calc.rules import RuleCompiler, RuleError
from services.felix.calc.services import ServiceIndex

log = logging.getLogger(__name__)

_ALLOW_ALL = PolicyProgram("", (Rule(Action.ALLOW),), (Rule(Action.ALLOW),))


class CalcGraph:
    def __init__(self, nodename: str) -> None:
        self.nodename = nodename
        self.in_sync = False
        self.state = DataplaneState()
        self._delta = StateDelta()

        self._endpoints: dict[str, Endpoint] = {}
        self._pods: dict[tuple[str, str], PodInfo] = {}
        self._netsets: dict[str, tuple[str, ...]] = {}
        self._policies: dict[str, PolicyDef] = {}
        self._stored_profiles: dict[str, dict[str, Any]] = {}
        self._active_policies: set[str] = set()
        self._activity_dirty: set[str] = set()
        self._profile_users: Counter[str] = Counter()

        # Set id -> spec/selector while referenced; member refcounts.
        self._ipset_refs: Counter[str] = Counter()
        self._ipset_selector: dict[str, Selector] = {}
        self._member_counts: dict[str, Counter[str]] = {}
        self._program_ipsets: dict[str, set[str]] = {}  # program key -> set ids it uses

        self._local: LabelIndex[str, str] = LabelIndex(self._local_started, self._local_stopped)
        self._members: LabelIndex[str, str] = LabelIndex(self._member_started, self._member_stopped)
        self._dirty_endpoints: set[str] = set()  # endpoint keys
        self._invalid = InvalidObjects(log, "felix calculation graph")
        self._services = ServiceIndex(nodename, self.state.service_ports)
        self._pools: dict[str, str] = {}  # IPPool name -> CIDR (enabled IPv4 pools)

    # -- input -----------------------------------------------------------------------------

    def apply(self, batch: Iterable[SyncerUpdate]) -> None:
        for update in batch:
            if isinstance(update, InSync):
                self.in_sync = True
                continue
            try:
                rkey = parse_resource_key(update.key)
            except ValueError:
                continue
            try:
                if isinstance(update, Update):
                    self._on_update(rkey, update.key, inputs.load(update.value), update.revision)
                elif isinstance(update, Delete):
                    self._on_delete(rkey, update.key)
                self._invalid.usable(update.key)
            except (ValueError, KeyError, TypeError) as exc:
                value = update.value if isinstance(update, Update) else None
                self._invalid.skipped(update.key, value, exc)
        self._settle()

    def flush(self) -> StateDelta:
        """The keys changed since the last flush (the state already holds their values)."""
        self._settle()
        delta, self._delta = self._delta, StateDelta()
        return delta

    # -- dispatch --------------------------------------------------------------------------

    def _on_update(self, rkey: ResourceKey, key: str, obj: dict[str, Any], revision: int) -> None:
        kind = (rkey.group, rkey.plural)
        if kind == inputs.ENDPOINT_KIND:
            ep = inputs.parse_endpoint(rkey, key, obj, revision)
            self._set_endpoint(key, ep, ep.ports)
        elif kind in inputs.POLICY_KINDS:
            self._set_policy(inputs.parse_policy(rkey, obj))
        elif kind in inputs.NETWORK_SET_KINDS:
            self._set_netset(rkey, key, obj)
        elif kind == inputs.NAMESPACE_KIND:
            parent = inputs.namespace_parent(rkey.name)
            labels = inputs.namespace_parent_labels(rkey.name, inputs.labels_of(obj))
            self._local.update_parent_labels(parent, labels)
            self._members.update_parent_labels(parent, labels)
        elif kind == inputs.SERVICE_ACCOUNT_KIND:
            sa_parent = inputs.service_account_parent(rkey.namespace or "", rkey.name)
            labels = inputs.service_account_parent_labels(rkey.name, inputs.labels_of(obj))
            self._local.update_parent_labels(sa_parent, labels)
            self._members.update_parent_labels(sa_parent, labels)
        elif kind == inputs.POD_KIND:
            pod = (rkey.namespace or "", rkey.name)
            self._pods[pod] = inputs.parse_pod(obj, revision)
            self._refresh_pod(pod)
        elif kind == inputs.PROFILE_KIND:
            self._stored_profiles[rkey.name] = obj.get("spec") or {}
            self._refresh_profile(rkey.name)
        elif kind == inputs.SERVICE_KIND:
            ns = rkey.namespace or ""
            self._delta.service_ports |= self._services.update_service(ns, rkey.name, obj)
        elif kind == inputs.ENDPOINT_SLICE_KIND:
            ns = rkey.namespace or ""
            self._delta.service_ports |= self._services.update_slice(ns, rkey.name, obj)
        elif kind == inputs.IPPOOL_KIND:
            self._set_pool(rkey.name, inputs.enabled_ipv4_pool(obj))

    def _on_delete(self, rkey: ResourceKey, key: str) -> None:
        kind = (rkey.group, rkey.plural)
        if kind == inputs.ENDPOINT_KIND:
            self._delete_endpoint(key)
        elif kind in inputs.POLICY_KINDS:
            self._delete_policy(inputs.policy_id(rkey))
        elif kind in inputs.NETWORK_SET_KINDS:
            if key in self._netsets:
                self._withdraw(key)
                del self._netsets[key]
                self._members.delete_labels(key)
        elif kind == inputs.NAMESPACE_KIND:
            parent = inputs.namespace_parent(rkey.name)
            self._local.delete_parent_labels(parent)
            self._members.delete_parent_labels(parent)
        elif kind == inputs.SERVICE_ACCOUNT_KIND:
            sa_parent = inputs.service_account_parent(rkey.namespace or "", rkey.name)
            self._local.delete_parent_labels(sa_parent)
            self._members.delete_parent_labels(sa_parent)
        elif kind == inputs.POD_KIND:
            pod = (rkey.namespace or "", rkey.name)
            if self._pods.pop(pod, None) is not None:
                self._refresh_pod(pod)
        elif kind == inputs.PROFILE_KIND:
            self._stored_profiles.pop(rkey.name, None)
            self._refresh_profile(rkey.name)
        elif kind == inputs.SERVICE_KIND:
            ns = rkey.namespace or ""
            self._delta.service_ports |= self._services.delete_service(ns, rkey.name)
        elif kind == inputs.ENDPOINT_SLICE_KIND:
            ns = rkey.namespace or ""
            self._delta.service_ports |= self._services.delete_slice(ns, rkey.name)
        elif kind == inputs.IPPOOL_KIND:
            self._set_pool(rkey.name, None)

    # -- pools -----------------------------------------------------------------------------

    def _set_pool(self, name: str, cidr: str | None) -> None:
        if cidr is None:
            self._pools.pop(name, None)
        else:
            self._pools[name] = cidr
        cidrs = tuple(sorted(set(self._pools.values()), key=ipaddress.ip_network))
        if cidrs != self.state.pod_cidrs:
            self.state.pod_cidrs = cidrs
            self._delta.pod_cidrs = True

    # -- endpoints -------------------------------------------------------------------------

    def _effective_labels(self, ep: Endpoint) -> dict[str, str]:
        """The WorkloadEndpoint's labels, or its Pod's when those were written later."""
        labels = ep.labels
        pod = self._pods.get((ep.namespace, ep.pod))
        if pod is not None and pod.revision > ep.revision:
            labels = pod.labels
        return {**labels, **ep.automatic_labels()}

    def _with_pod_ports(self, ep: Endpoint) -> Endpoint:
        """Named ports from the Pod when the WorkloadEndpoint does not list them."""
        pod = self._pods.get((ep.namespace, ep.pod))
        if ep.ports or pod is None or not pod.ports:
            return ep
        return dataclasses.replace(ep, ports=pod.ports)

    def _refresh_pod(self, pod: tuple[str, str]) -> None:
        for ep in list(self._endpoints.values()):
            if (ep.namespace, ep.pod) == pod:
                self._set_endpoint(ep.key, ep, ep.raw_ports)

    def _is_local(self, ep: Endpoint) -> bool:
        return ep.node == self.nodename and bool(ep.interface)

    def _set_endpoint(self, key: str, ep: Endpoint, raw_ports: tuple[NamedPort, ...]) -> None:
        ep = self._with_pod_ports(dataclasses.replace(ep, ports=raw_ports, raw_ports=raw_ports))
        old = self._endpoints.get(key)
        labels = self._effective_labels(ep)
        parents: list[Hashable] = list(ep.parents())
        # Addresses first: a changed address moves within the sets the endpoint is in.
        moved = old is not None and (old.nets, old.ports) != (ep.nets, ep.ports)
        if moved:
            self._withdraw(key)
        self._endpoints[key] = ep
        if moved:
            self._contribute(key)
        self._members.update_labels(key, labels, parents)
        if self._is_local(ep):
            self._local.update_labels(key, labels, parents)
            self._dirty_endpoints.add(key)
            if old is None or old.profiles != ep.profiles or not self._is_local(old):
                if old is not None and self._is_local(old):
                    self._release_profiles(old.profiles)
                self._use_profiles(ep.profiles)
        elif old is not None and self._is_local(old):
            self._local.delete_labels(key)
            self._release_profiles(old.profiles)
        if old is not None and self._is_local(old) and old.interface != ep.interface:
            self._drop_endpoint_state(old.interface)

    def _delete_endpoint(self, key: str) -> None:
        old = self._endpoints.get(key)
        if old is None:
            return
        self._withdraw(key)
        del self._endpoints[key]  # the stops fired below then contribute nothing
        self._members.delete_labels(key)
        if self._is_local(old):
            self._local.delete_labels(key)
            self._release_profiles(old.profiles)
            self._drop_endpoint_state(old.interface)
            self._dirty_endpoints.discard(key)

    def _drop_endpoint_state(self, interface: str) -> None:
        if self.state.endpoints.pop(interface, None) is not None:
            self._delta.endpoints.add(interface)

    def _local_started(self, policy: str, endpoint: str) -> None:
        self._dirty_endpoints.add(endpoint)
        self._activity_dirty.add(policy)

    def _local_stopped(self, policy: str, endpoint: str) -> None:
        self._dirty_endpoints.add(endpoint)
        self._activity_dirty.add(policy)

    def _render_endpoint(self, key: str) -> None:
        ep = self._endpoints.get(key)
        if ep is None or not self._is_local(ep):
            return
        matching = [self._policies[p] for p in self._local.matching_selectors(key)]
        matching.sort(key=lambda p: p.sort_key)
        policy = EndpointPolicy(
            interface=ep.interface,
            endpoint_key=key,
            ips=ep.nets,
            ingress_policies=tuple(p.id for p in matching if p.ingress_enabled),
            egress_policies=tuple(p.id for p in matching if p.egress_enabled),
            profiles=ep.profiles,
        )
        if self.state.endpoints.get(ep.interface) != policy:
            self.state.endpoints[ep.interface] = policy
            self._delta.endpoints.add(ep.interface)

    # -- network sets ----------------------------------------------------------------------

    def _set_netset(self, rkey: ResourceKey, key: str, obj: dict[str, Any]) -> None:
        labels = inputs.labels_of(obj)
        parents: list[Hashable] = []
        if rkey.namespace:
            labels[NAMESPACE_LABEL] = rkey.namespace
            parents.append(inputs.namespace_parent(rkey.namespace))
        nets = inputs.cidrs((obj.get("spec") or {}).get("nets"))
        moved = key in self._netsets and self._netsets[key] != nets
        if moved:
            self._withdraw(key)
        self._netsets[key] = nets
        if moved:
            self._contribute(key)
        self._members.update_labels(key, labels, parents)

    # -- IP set members --------------------------------------------------------------------

    def _item_contribution(self, set_id: str, item: str) -> list[str]:
        spec = self.state.ipsets[set_id]
        ep = self._endpoints.get(item)
        nets = ep.nets if ep is not None else self._netsets.get(item, ())
        if spec.kind is IPSetKind.NETS:
            return list(nets)
        if ep is None:
            return []
        return _named_port_members(nets, ep.ports, spec)

    def _withdraw(self, key: str) -> None:
        """Remove an item's contributions from the sets it is in (from its stored data)."""
        for set_id in self._members.matching_selectors(key):
            self._remove_members(set_id, self._item_contribution(set_id, key))

    def _contribute(self, key: str) -> None:
        for set_id in self._members.matching_selectors(key):
            self._add_members(set_id, self._item_contribution(set_id, key))

    def _member_started(self, set_id: str, item: str) -> None:
        self._add_members(set_id, self._item_contribution(set_id, item))

    def _member_stopped(self, set_id: str, item: str) -> None:
        if set_id in self.state.ipsets:
            self._remove_members(set_id, self._item_contribution(set_id, item))

    def _add_members(self, set_id: str, members: list[str]) -> None:
        if not members:
            return
        counts = self._member_counts[set_id]
        current = self.state.ipset_members[set_id]
        for member in members:
            counts[member] += 1
            if counts[member] == 1:
                current.add(member)
                self._delta.ipsets.add(set_id)

    def _remove_members(self, set_id: str, members: list[str]) -> None:
        counts = self._member_counts.get(set_id)
        if counts is None:
            return
        current = self.state.ipset_members[set_id]
        for member in members:
            counts[member] -= 1
            if counts[member] <= 0:
                del counts[member]
                current.discard(member)
                self._delta.ipsets.add(set_id)

    # -- IP set lifecycle ------------------------------------------------------------------

    def _reference_ipsets(
        self, program: str, specs: dict[str, IPSetSpec], selectors: dict[str, Selector]
    ) -> None:
        """Make ``program`` use exactly ``specs``, creating and releasing sets as needed."""
        old = self._program_ipsets.get(program, set())
        new = set(specs)
        for set_id in new - old:
            self._ipset_refs[set_id] += 1
            if self._ipset_refs[set_id] == 1:
                self.state.ipsets[set_id] = specs[set_id]
                self.state.ipset_members[set_id] = set()
                self._member_counts[set_id] = Counter()
                self._ipset_selector[set_id] = selectors[set_id]
                self._delta.ipsets.add(set_id)
                self._members.update_selector(set_id, selectors[set_id])
        for set_id in old - new:
            self._ipset_refs[set_id] -= 1
            if self._ipset_refs[set_id] <= 0:
                del self._ipset_refs[set_id]
                self._members.delete_selector(set_id)
                del self.state.ipsets[set_id]
                del self.state.ipset_members[set_id]
                del self._member_counts[set_id]
                del self._ipset_selector[set_id]
                self._delta.ipsets.add(set_id)
        if new:
            self._program_ipsets[program] = new
        else:
            self._program_ipsets.pop(program, None)

    # -- policies --------------------------------------------------------------------------

    def _set_policy(self, policy: PolicyDef) -> None:
        old = self._policies.get(policy.id)
        self._policies[policy.id] = policy
        if old is not None and old.evaluation != policy.evaluation:
            self._dirty_endpoints.update(self._local.matching_items(policy.id))
        if old is None or old.selector != policy.selector:
            self._local.update_selector(policy.id, policy.selector)
        self._activity_dirty.add(policy.id)
        if policy.id in self._active_policies and (
            old is None
            or (old.ingress, old.egress, old.namespace)
            != (policy.ingress, policy.egress, policy.namespace)
        ):
            self._compile_policy(policy)

    def _delete_policy(self, policy_id: str) -> None:
        if policy_id not in self._policies:
            return
        self._local.delete_selector(policy_id)
        self._activity_dirty.add(policy_id)
        self._settle_activity()
        del self._policies[policy_id]

    def _settle_activity(self) -> None:
        while self._activity_dirty:
            policy_id = self._activity_dirty.pop()
            policy = self._policies.get(policy_id)
            active = policy is not None and bool(self._local.matching_items(policy_id))
            if active and policy is not None and policy_id not in self._active_policies:
                self._active_policies.add(policy_id)
                self._compile_policy(policy)
            elif not active and policy_id in self._active_policies:
                self._active_policies.discard(policy_id)
                self._reference_ipsets("policy:" + policy_id, {}, {})
                self.state.policies.pop(policy_id, None)
                self._delta.policies.add(policy_id)

    def _compile_policy(self, policy: PolicyDef) -> None:
        compiler = RuleCompiler(policy.namespace)
        program = PolicyProgram(
            policy.id,
            _compile_rules(compiler, policy.ingress, True, policy.id),
            _compile_rules(compiler, policy.egress, False, policy.id),
        )
        self._reference_ipsets("policy:" + policy.id, compiler.ipsets, compiler.selectors)
        if self.state.policies.get(policy.id) != program:
            self.state.policies[policy.id] = program
            self._delta.policies.add(policy.id)

    # -- profiles --------------------------------------------------------------------------

    def _use_profiles(self, names: Iterable[str]) -> None:
        for name in names:
            self._profile_users[name] += 1
            if self._profile_users[name] == 1:
                self._refresh_profile(name)

    def _release_profiles(self, names: Iterable[str]) -> None:
        for name in names:
            self._profile_users[name] -= 1
            if self._profile_users[name] <= 0:
                del self._profile_users[name]
                self._refresh_profile(name)

    def _refresh_profile(self, name: str) -> None:
        if name not in self._profile_users:
            self._reference_ipsets("profile:" + name, {}, {})
            if self.state.profiles.pop(name, None) is not None:
                self._delta.profiles.add(name)
            return
        spec = self._stored_profiles.get(name)
        if spec is None:
            # Kubernetes namespace profiles allow everything; other unknown ones nothing.
            program = (
                PolicyProgram(name, _ALLOW_ALL.inbound, _ALLOW_ALL.outbound)
                if name.startswith("kns.")
                else PolicyProgram(name)
            )
            self._reference_ipsets("profile:" + name, {}, {})
        else:
            compiler = RuleCompiler(None)
            program = PolicyProgram(
                name,
                _compile_rules(compiler, tuple(spec.get("ingress") or ()), True, name),
                _compile_rules(compiler, tuple(spec.get("egress") or ()), False, name),
            )
            self._reference_ipsets("profile:" + name, compiler.ipsets, compiler.selectors)
        if self.state.profiles.get(name) != program:
            self.state.profiles[name] = program
            self._delta.profiles.add(name)

    # -- settling --------------------------------------------------------------------------

    def _settle(self) -> None:
        self._settle_activity()
        while self._dirty_endpoints:
            self._render_endpoint(self._dirty_endpoints.pop())

    # -- status ----------------------------------------------------------------------------

    @property
    def active_policy_count(self) -> int:
        return len(self._active_policies)

    @property
    def endpoint_count(self) -> int:
        return len(self._endpoints)


def _compile_rules(
    compiler: RuleCompiler, raw_rules: tuple[dict[str, Any], ...], ingress: bool, owner: str
) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for raw in raw_rules:
        try:
            rules.append(compiler.compile(raw, ingress))
        except (RuleError, ValueError) as exc:
            # Calico rejects such policies at validation; a rule we cannot express is
            # dropped rather than widened (fail closed: it can only allow less).
            log.warning("policy %s: skipping a rule: %s", owner, exc)
    return tuple(rules)


def _named_port_members(
    nets: tuple[str, ...], ports: tuple[NamedPort, ...], spec: IPSetSpec
) -> list[str]:
    out: list[str] = []
    for name, proto, port in ports:
        if name != spec.port_name or proto != spec.protocol:
            continue
        for net in nets:
            address = net.split("/", 1)[0]
            out.append(f"{address},{proto},{port}")
    return out
