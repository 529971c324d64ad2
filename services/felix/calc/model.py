"""The intended dataplane state: what every dataplane driver renders into kernel rules.

Everything here is immutable and value-comparable, so a driver can tell "unchanged" with ==.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# Protocol numbers of the names Calico accepts.
PROTOCOL_NUMBERS = {
    "TCP": 6,
    "UDP": 17,
    "ICMP": 1,
    "ICMPV6": 58,
    "SCTP": 132,
    "UDPLITE": 136,
}
PORT_PROTOCOLS = frozenset({6, 17, 132})


class Action(enum.Enum):
    ALLOW = "Allow"
    DENY = "Deny"
    PASS = "Pass"
    LOG = "Log"


class IPSetKind(enum.Enum):
    NETS = "nets"  # addresses / CIDRs of endpoints and network sets matching a selector
    NAMED_PORTS = "ports"  # (ip, protocol, port) of matching endpoints' named ports


PortRange = tuple[int, int]


@dataclass(frozen=True, slots=True)
class IPSetSpec:
    """An IP set a selector becomes; ``id`` is derived from its content (shared by equal ones)."""

    id: str
    kind: IPSetKind
    selector: str  # canonical selector text
    protocol: int = 0  # named-port sets only
    port_name: str = ""  # named-port sets only


@dataclass(frozen=True, slots=True)
class Match:
    """The source or destination half of a rule. Empty fields match anything."""

    nets: tuple[str, ...] = ()
    not_nets: tuple[str, ...] = ()
    ipset: str | None = None  # address must be in this NETS set
    not_ipset: str | None = None  # address must not be in this NETS set
    # Ports: the port is in ``ports`` OR (address, proto, port) is in one of ``port_sets``.
    ports: tuple[PortRange, ...] = ()
    port_sets: tuple[str, ...] = ()
    not_ports: tuple[PortRange, ...] = ()
    not_port_sets: tuple[str, ...] = ()

    @property
    def has_ports(self) -> bool:
        return bool(self.ports or self.port_sets)

    def ipset_ids(self) -> tuple[str, ...]:
        ids = [s for s in (self.ipset, self.not_ipset) if s]
        return (*ids, *self.port_sets, *self.not_port_sets)


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    protocol: int | None = None
    not_protocol: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None
    ip_version: int | None = None
    src: Match = field(default_factory=Match)
    dst: Match = field(default_factory=Match)

    def ipset_ids(self) -> tuple[str, ...]:
        return (*self.src.ipset_ids(), *self.dst.ipset_ids())


@dataclass(frozen=True, slots=True)
class PolicyProgram:
    """A compiled policy (or profile): its rules per direction, in order.

    ``inbound`` rules apply to traffic to the endpoint (ingress), ``outbound`` from it.
    """

    id: str
    inbound: tuple[Rule, ...] = ()
    outbound: tuple[Rule, ...] = ()

    def ipset_ids(self) -> set[str]:
        return {i for rule in (*self.inbound, *self.outbound) for i in rule.ipset_ids()}


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    """What applies to one local endpoint, keyed by its host interface."""

    interface: str
    endpoint_key: str
    ips: tuple[str, ...]
    ingress_policies: tuple[str, ...]  # policy ids in evaluation order
    egress_policies: tuple[str, ...]
    profiles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceBackend:
    """One usable endpoint of a service port: where DNAT sends a connection."""

    address: str  # IPv4 address of the pod
    port: int  # the target port, resolved for this endpoint (named targetPort per slice port)
    local: bool  # on this node (EndpointSlice endpoint nodeName == Felix's node)


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One (Service, port, protocol), as kube-proxy programs a ServicePort.

    ``backends`` are the endpoints usable for it, sorted: the ready ones, or when none is
    ready the serving-and-terminating ones (kube-proxy's fallback); empty means reject.
    The dataplane applies the traffic policies: cluster-IP traffic goes to ``backends``
    (only the local ones under ``internal_local``), node-port / external-IP / load-balancer
    traffic to ``backends`` masqueraded (``external_local``: only local ones, client address
    kept). Backends exist but none is allowed for the traffic's kind: drop, not reject.
    A headless Service, or one without an IPv4 cluster IP, has no ServicePort.
    """

    id: str  # "<namespace>/<service>/<port name>/<protocol number>": unique, stable
    namespace: str
    service: str
    port_name: str  # "" for an unnamed port
    protocol: int  # 6, 17 or 132
    port: int  # the service port (on the cluster IP, external IPs and LB IPs)
    cluster_ips: tuple[str, ...]  # IPv4 only, for now
    node_port: int | None = None  # NodePort / LoadBalancer
    external_ips: tuple[str, ...] = ()  # spec.externalIPs + status.loadBalancer.ingress[].ip
    affinity_timeout_s: int | None = None  # sessionAffinity ClientIP (timeoutSeconds)
    internal_local: bool = False  # internalTrafficPolicy: Local
    external_local: bool = False  # externalTrafficPolicy: Local
    backends: tuple[ServiceBackend, ...] = ()


@dataclass(slots=True)
class DataplaneState:
    """The complete intended state (the calc graph keeps it current)."""

    ipsets: dict[str, IPSetSpec] = field(default_factory=dict)
    # NETS members are CIDR strings ("10.0.0.5/32"); NAMED_PORTS members "10.0.0.5,6,80".
    ipset_members: dict[str, set[str]] = field(default_factory=dict)
    policies: dict[str, PolicyProgram] = field(default_factory=dict)
    profiles: dict[str, PolicyProgram] = field(default_factory=dict)
    endpoints: dict[str, EndpointPolicy] = field(default_factory=dict)  # by interface
    # Services (Felix as kube-proxy): by ServicePort.id.
    service_ports: dict[str, ServicePort] = field(default_factory=dict)
    # The enabled IPv4 pools' CIDRs: traffic from elsewhere to a cluster IP is masqueraded
    # (kube-proxy's --cluster-cidr rule), pod sources keep their address.
    pod_cidrs: tuple[str, ...] = ()


@dataclass(slots=True)
class StateDelta:
    """Keys whose intended value changed (or vanished) since the previous flush."""

    ipsets: set[str] = field(default_factory=set)
    policies: set[str] = field(default_factory=set)
    profiles: set[str] = field(default_factory=set)
    endpoints: set[str] = field(default_factory=set)
    service_ports: set[str] = field(default_factory=set)
    pod_cidrs: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.ipsets
            or self.policies
            or self.profiles
            or self.endpoints
            or self.service_ports
            or self.pod_cidrs
        )

    def merge(self, other: StateDelta) -> None:
        self.ipsets |= other.ipsets
        self.policies |= other.policies
        self.profiles |= other.profiles
        self.endpoints |= other.endpoints
        self.service_ports |= other.service_ports
        self.pod_cidrs = self.pod_cidrs or other.pod_cidrs
