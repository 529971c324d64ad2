"""Services (Felix as kube-proxy) as iptables rules: nat-table load balancing, filter rejects.

kube-proxy's iptables layout is the anchor, in Felix's ``cali-`` names:

  nat PREROUTING, OUTPUT -> cali-SERVICES (one tagged jump each)
    -d <cluster IP> -p P --dport port     -> cali-SVC-<h>   (cluster-IP traffic)
    -d <external/LB IP> -p P --dport port -> cali-EXT-<h>   (external traffic)
    last: ! -d 127/8 -m addrtype --dst-type LOCAL -> cali-NODEPORTS
  cali-NODEPORTS: -p P --dport <nodePort> -> cali-EXT-<h>
  cali-SVC-<h>: ct mark "cluster IP", then the pick over the backends (only the local ones
                under internal_local)
  cali-EXT-<h>: ct mark "masquerade" and pick over all backends (externalTrafficPolicy
                Cluster), or pick over the local ones with the client address kept (Local)
  pick: with affinity, per backend ``-m recent --update --seconds T --reap`` -> DNAT first;
        then per backend ``-m statistic --mode random --probability 1/(n-i)`` (the last one
        bare) [``-m recent --set``] -> DNAT --to-destination addr:port
  nat POSTROUTING -> cali-SVC-POSTROUTING: no service mark: RETURN; "masquerade": MASQUERADE;
        "cluster IP" from a pod CIDR: RETURN; other "cluster IP": MASQUERADE
  hairpin: the egress endpoint chain (ipt_render) sets "masquerade" on a packet leaving by
        the interface it came in on (a pod reaching itself through a service)

  filter cali-FORWARD, cali-INPUT, cali-OUTPUT (first rule, ctstate NEW) -> cali-SVC-REJECT:
    a kind of traffic with no backend at all: REJECT (tcp-reset / icmp-port-unreachable);
    backends exist but none allowed for that kind (Local policies): DROP

Unlike kube-proxy there is no chain per endpoint (the pick rules DNAT themselves): the
iptables-nft 1.8.9 userspace parses a ruleset in time quadratic in jumps x chains (measured:
20,000 jumps to 20,000 chains take 10 s to parse), so the chain count is kept to about one
per service port.

Why conntrack marks, not packet marks: Felix's endpoint chains (``cali-fw-*``/``cali-tw-*``)
clear packet-mark bits on the way between PREROUTING and POSTROUTING, and the decision is per
connection anyway (only a connection's first packet walks the nat table). ``CONNMARK
--set-xmark`` bits 0x4000 (masquerade) / 0x8000 (cluster-IP traffic) on the conntrack entry
survive the filter table; POSTROUTING matches ``-m connmark``. Nothing else of Felix uses the
ct mark.

Rejects and drops live in filter because nat must not drop (and a packet that was not DNATed
still carries the service address there). The dispatch chains (cali-SERVICES, cali-NODEPORTS,
cali-SVC-REJECT) hold one independent line per address/port: their order does not matter
(except cali-SERVICES' fixed last line), so the driver changes them line by line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from services.felix.calc.model import ServiceBackend, ServicePort
from services.felix.dataplane.ipt_render import CTMARK_CLUSTER_IP, SVC_REJECT, tagged
from services.felix.dataplane.svc_names import CT_MARK_MASQ, endpoint_hash, service_hash

SERVICES = "cali-SERVICES"
NODEPORTS = "cali-NODEPORTS"
POSTROUTING = "cali-SVC-POSTROUTING"
REJECT = SVC_REJECT
NAT_HOOKS = {"PREROUTING": SERVICES, "OUTPUT": SERVICES, "POSTROUTING": POSTROUTING}
# nat chains of this module; other cali- chains in nat (cali-nat-outgoing) are not ours.
NAT_PREFIXES = ("cali-SERVICES", "cali-NODEPORTS", "cali-SVC-", "cali-EXT-")
# Chains whose lines are independent: written line by line (-D / -I 1) on a delta.
UNORDERED = frozenset({SERVICES, NODEPORTS, REJECT})
_PROTO = {6: "tcp", 17: "udp", 132: "sctp"}
_MARK_MASQ = f"-j CONNMARK --set-xmark {CT_MARK_MASQ:#x}/{CT_MARK_MASQ:#x}"
_MARK_CLUSTER = f"-j CONNMARK --set-xmark {CTMARK_CLUSTER_IP:#x}/{CTMARK_CLUSTER_IP:#x}"
_NODEPORTS_JUMP = tagged(f"! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j {NODEPORTS}")


# Hashes as the nftables dataplane's names (svc_names); kube-proxy's upper-case kinds.
def svc_chain(sp_id: str) -> str:
    return f"cali-SVC-{service_hash(sp_id)}"


def ext_chain(sp_id: str) -> str:
    return f"cali-EXT-{service_hash(sp_id)}"


def affinity_list(sp_id: str, backend: ServiceBackend) -> str:
    """The ``-m recent`` list of the clients that last used this backend of this port."""
    return f"cali-aff-{endpoint_hash(sp_id, backend)}"


def hook_rule(hook: str) -> str:
    return tagged(f"-j {NAT_HOOKS[hook]}")


@dataclass
class RenderedService:
    """One ServicePort's share of the ruleset."""

    chains: dict[str, list[str]] = field(default_factory=dict)  # nat chains of its own
    services: list[str] = field(default_factory=list)  # its lines in cali-SERVICES
    nodeports: list[str] = field(default_factory=list)  # its lines in cali-NODEPORTS
    reject: list[str] = field(default_factory=list)  # its lines in filter cali-SVC-REJECT


def _pick(sp: ServicePort, backends: tuple[ServiceBackend, ...]) -> list[str]:
    """DNAT to a backend: the one this client used within the affinity timeout (``--update``
    refreshes it), else one at random with equal weight (probability 1/(n-i) for the i-th of
    n, the last one bare), remembering the client for affinity (``--set``)."""
    proto = _PROTO[sp.protocol]
    timeout = sp.affinity_timeout_s
    rules: list[str] = []

    def dnat(b: ServiceBackend) -> str:
        return f"-p {proto} -j DNAT --to-destination {b.address}:{b.port}"

    if timeout is not None:
        rules += [
            f"-m recent --name {affinity_list(sp.id, b)} --update --seconds {timeout} --reap "
            + dnat(b)
            for b in backends
        ]
    n = len(backends)
    for i, b in enumerate(backends):
        stat = f"-m statistic --mode random --probability {1 / (n - i):.10f} " if i < n - 1 else ""
        remember = f"-m recent --name {affinity_list(sp.id, b)} --set " if timeout else ""
        rules.append(stat + remember + dnat(b))
    return rules


def render_service(sp: ServicePort) -> RenderedService:
    out = RenderedService()
    proto = _PROTO.get(sp.protocol)
    if proto is None:
        raise ValueError(f"service port {sp.id}: protocol {sp.protocol} is not TCP/UDP/SCTP")
    match = f"-p {proto} -m {proto} --dport {sp.port}"
    refuse = "tcp-reset" if sp.protocol == 6 else "icmp-port-unreachable"
    internal = tuple(b for b in sp.backends if b.local or not sp.internal_local)
    external = tuple(b for b in sp.backends if b.local or not sp.external_local)

    def deny(dst: str, port: int) -> str:
        verdict = f"REJECT --reject-with {refuse}" if not sp.backends else "DROP"
        return tagged(f"{dst} -p {proto} -m {proto} --dport {port} -j {verdict}")

    if internal:
        chain = svc_chain(sp.id)
        out.chains[chain] = [tagged(r) for r in (_MARK_CLUSTER, *_pick(sp, internal))]
        out.services += [tagged(f"-d {ip}/32 {match} -j {chain}") for ip in sp.cluster_ips]
    else:
        out.reject += [deny(f"-d {ip}/32", sp.port) for ip in sp.cluster_ips]
    has_external = bool(sp.external_ips) or sp.node_port is not None
    if has_external and external:
        chain = ext_chain(sp.id)
        masq = [] if sp.external_local else [_MARK_MASQ]
        out.chains[chain] = [tagged(r) for r in (*masq, *_pick(sp, external))]
        out.services += [tagged(f"-d {ip}/32 {match} -j {chain}") for ip in sp.external_ips]
        if sp.node_port is not None:
            out.nodeports.append(tagged(f"-p {proto} -m {proto} --dport {sp.node_port} -j {chain}"))
    elif has_external:
        out.reject += [deny(f"-d {ip}/32", sp.port) for ip in sp.external_ips]
        if sp.node_port is not None:
            out.reject.append(deny("-m addrtype --dst-type LOCAL", sp.node_port))
    return out


def static_nat_chains(pod_cidrs: Iterable[str]) -> dict[str, list[str]]:
    """The chains every node has, services or not (dispatch tails, masquerade)."""
    cluster = f"-m connmark --mark {CTMARK_CLUSTER_IP:#x}/{CTMARK_CLUSTER_IP:#x}"
    masquerade = "-j MASQUERADE --random-fully"
    cidrs = sorted(c for c in pod_cidrs if ":" not in c)
    postrouting = [
        f"-m connmark --mark 0x0/{CT_MARK_MASQ | CTMARK_CLUSTER_IP:#x} -j RETURN",  # most traffic
        f"-m connmark --mark {CT_MARK_MASQ:#x}/{CT_MARK_MASQ:#x} {masquerade}",
        *(f"{cluster} -s {cidr} -j RETURN" for cidr in cidrs),  # pods keep their address
        f"{cluster} {masquerade}",
    ]
    return {
        SERVICES: [_NODEPORTS_JUMP],
        NODEPORTS: [],
        POSTROUTING: [tagged(r) for r in postrouting],
    }


def nat_chains(
    rendered: Iterable[RenderedService], pod_cidrs: Iterable[str]
) -> dict[str, list[str]]:
    chains = static_nat_chains(pod_cidrs)
    services: list[str] = []
    for r in rendered:
        chains.update(r.chains)
        services += r.services
        chains[NODEPORTS] += r.nodeports
    # Node ports last: after exact addresses. Lines are unique (two Services may claim one
    # external IP: identical reject lines), as the driver's line-by-line diff needs.
    chains[SERVICES] = [*dict.fromkeys(services), _NODEPORTS_JUMP]
    chains[NODEPORTS] = list(dict.fromkeys(chains[NODEPORTS]))
    return chains


def reject_rules(rendered: Iterable[RenderedService]) -> list[str]:
    return list(dict.fromkeys(rule for r in rendered for rule in r.reject))
