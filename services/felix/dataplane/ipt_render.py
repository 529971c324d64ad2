"""The intended state as iptables rules (filter table) and ipsets.

Same structure as the nftables table, in Calico's chain names:
  FORWARD -> cali-FORWARD: conntrack accept/drop; -i cali+ -> cali-from-wl-dispatch;
             -o cali+ -> cali-to-wl-dispatch; accept what carries the accept mark
  INPUT   -> cali-INPUT:   from cali+: conntrack; cali-from-wl-dispatch; accept
  OUTPUT  -> cali-OUTPUT:  to a known cali interface: return; to any other cali+: drop
  dispatch chains: one ``-i <if> -g cali-fw-<if>`` per endpoint, then drop (unknown cali*)
  each of the three first: new connections -> cali-SVC-REJECT (services without a usable
  backend; its content comes from ipt_services)
Allow and Pass are a MARK rule followed by a RETURN guarded by that mark (iptables has no
"set mark and return" in one rule). Rule nets become ``hash:net`` ipsets named after their
content (``cali40a:<hash>``), so a rule with several CIDRs stays one rule.

As in nftables, policy rules sit inline in the endpoint chains (a jump per policy costs a new
connection more than the policy's rules), shortened exactly by ``rule_opt`` (dead duplicates
dropped; rules differing only in a selector set merged onto a derived ``hash:net`` union set
``cali40u:<hash>``). Only profiles and policies with a Pass rule keep a chain of their own.
Single ports / ranges render as ``-m tcp --dport N`` (native in iptables-nft; ``multiport``
goes through the xtables compat layer).
"""

from __future__ import annotations

from collections.abc import Iterable

from libcalico.selector import make_unique_id
from services.felix.calc.model import (
    Action,
    DataplaneState,
    EndpointPolicy,
    IPSetKind,
    IPSetSpec,
    Match,
    PolicyProgram,
    PortRange,
    Rule,
)
from services.felix.dataplane.names import (
    LOG_PREFIX,
    MARK_ACCEPT,
    MARK_MASK,
    MARK_PASS,
    endpoint_chain,
    ipset_name,
    policy_chain,
    rule_tag,
)
from services.felix.dataplane.rule_opt import Item, optimise
from services.felix.dataplane.svc_names import CT_MARK_MASQ

FORWARD = "cali-FORWARD"
INPUT = "cali-INPUT"
OUTPUT = "cali-OUTPUT"
FROM_WL = "cali-from-wl-dispatch"
TO_WL = "cali-to-wl-dispatch"
# Services with no (allowed) backend: rejects/drops of new connections, before any policy
# (content: ipt_services; the chain and its jumps are part of every node's skeleton).
SVC_REJECT = "cali-SVC-REJECT"
# Conntrack-mark bits of the service masquerade (nat POSTROUTING acts on them): 0x4000
# masquerade (svc_names.CT_MARK_MASQ, shared with nftables); 0x8000 cluster-IP traffic,
# masqueraded unless its source is a pod CIDR. A ct mark, not a packet mark: the endpoint
# chains clear packet marks on the way.
CTMARK_CLUSTER_IP = 0x8000
HOOKS = {"FORWARD": FORWARD, "INPUT": INPUT, "OUTPUT": OUTPUT}
_PORT_PROTO = {6: "tcp", 17: "udp", 132: "sctp"}
_MULTIPORT_MAX = 15

# A set Felix needs: (ipset type, members).
SetContent = tuple[str, frozenset[str]]


def tagged(rule: str) -> str:
    return f'{rule} -m comment --comment "{rule_tag(rule)}"'


def _mark(bits: int) -> str:
    return f"-m mark --mark {bits:#x}/{bits:#x}"


def _no_mark(bits: int) -> str:
    return f"-m mark --mark 0x0/{bits:#x}"


def static_chains(interfaces: Iterable[str]) -> dict[str, list[str]]:
    ct = "-m conntrack --ctstate"
    ifaces = sorted(interfaces)
    svc = f"{ct} NEW -j {SVC_REJECT}"
    chains = {
        FORWARD: [
            svc,
            f"{ct} RELATED,ESTABLISHED -j ACCEPT",
            f"{ct} INVALID -j DROP",
            f"-i cali+ -j {FROM_WL}",
            f"-o cali+ -j {TO_WL}",
            f"{_mark(MARK_ACCEPT)} -j ACCEPT",
        ],
        INPUT: [
            svc,
            f"-i cali+ {ct} RELATED,ESTABLISHED -j ACCEPT",
            f"-i cali+ {ct} INVALID -j DROP",
            f"-i cali+ -j {FROM_WL}",
            "-i cali+ -j ACCEPT",
        ],
        OUTPUT: [svc, *(f"-o {i} -j RETURN" for i in ifaces), "-o cali+ -j DROP"],
        SVC_REJECT: [],
        FROM_WL: [*(f"-i {i} -g {endpoint_chain(i, False)}" for i in ifaces), "-j DROP"],
        TO_WL: [*(f"-o {i} -g {endpoint_chain(i, True)}" for i in ifaces), "-j DROP"],
    }
    return {name: [tagged(r) for r in rules] for name, rules in chains.items()}


def hook_rule(hook: str) -> str:
    return tagged(f"-j {HOOKS[hook]}")


# -- sets ------------------------------------------------------------------------------------


def selector_set(spec: IPSetSpec, members: Iterable[str]) -> SetContent:
    if spec.kind is IPSetKind.NAMED_PORTS:
        out = set()
        for member in members:
            address, proto, port = member.split(",")
            name = _PORT_PROTO.get(int(proto))
            if name and ":" not in address:
                out.add(f"{address},{name}:{port}")
        return "hash:ip,port", frozenset(out)
    # Members are canonical CIDRs already (the calc graph normalises them).
    return "hash:net", frozenset(m for m in members if ":" not in m)


def nets_set_name(nets: tuple[str, ...]) -> str:
    digest = make_unique_id("a", ",".join(sorted(nets))).split(":", 1)[1]
    return f"cali40a:{digest[:22]}"


# -- rules -----------------------------------------------------------------------------------


def _chunks(ranges: tuple[PortRange, ...]) -> list[str]:
    """multiport lists of at most 15 ports (a range counts twice)."""
    out: list[str] = []
    current: list[str] = []
    used = 0
    for lo, hi in ranges:
        cost = 1 if lo == hi else 2
        if used + cost > _MULTIPORT_MAX:
            out.append(",".join(current))
            current, used = [], 0
        current.append(str(lo) if lo == hi else f"{lo}:{hi}")
        used += cost
    if current:
        out.append(",".join(current))
    return out


class RuleRenderer:
    """Renders rules, collecting the nets ipsets they need."""

    def __init__(self) -> None:
        self.net_sets: dict[str, SetContent] = {}
        self.inbound = False
        self._proto: str | None = None  # the rule's protocol name, for ``-m tcp --dport``

    def _nets(self, nets: tuple[str, ...]) -> str | None:
        v4 = tuple(n for n in nets if ":" not in n)
        if not v4:
            return None
        name = nets_set_name(v4)
        self.net_sets[name] = ("hash:net", frozenset(v4))
        return name

    def _side(
        self, m: Match, src: bool, port_set: str | None, numeric: str | None
    ) -> list[str] | None:
        flag = "src" if src else "dst"
        ports_flag = "--sports" if src else "--dports"
        terms: list[str] = []
        if m.nets:
            name = self._nets(m.nets)
            if name is None:
                return None
            terms.append(f"-m set --match-set {name} {flag}")
        if m.not_nets:
            name = self._nets(m.not_nets)
            if name is not None:
                terms.append(f"-m set ! --match-set {name} {flag}")
        if m.ipset:
            terms.append(f"-m set --match-set {ipset_name(m.ipset)} {flag}")
        if m.not_ipset:
            terms.append(f"-m set ! --match-set {ipset_name(m.not_ipset)} {flag}")
        if numeric:
            terms.append(self._ports(ports_flag, numeric, False))
        if port_set:
            terms.append(f"-m set --match-set {ipset_name(port_set)} {flag},{flag}")
        for chunk in _chunks(m.not_ports):
            terms.append(self._ports(ports_flag, chunk, True))
        for not_set in m.not_port_sets:
            terms.append(f"-m set ! --match-set {ipset_name(not_set)} {flag},{flag}")
        return terms

    def _ports(self, flag: str, chunk: str, negate: bool) -> str:
        neg = "! " if negate else ""
        if self._proto is not None and "," not in chunk:
            return f"-m {self._proto} {neg}{flag[:-1]} {chunk}"  # one port or range: native
        return f"-m multiport {neg}{flag} {chunk}"

    @staticmethod
    def _variants(m: Match) -> list[tuple[str | None, str | None]]:
        if not m.has_ports:
            return [(None, None)]
        out: list[tuple[str | None, str | None]] = [(c, None) for c in _chunks(m.ports)]
        return out + [(None, s) for s in m.port_sets]

    def render(self, rule: Rule) -> list[str]:
        if rule.ip_version == 6:
            return []
        head: list[str] = []
        self._proto = _PORT_PROTO.get(rule.protocol) if rule.protocol is not None else None
        if rule.protocol is not None:
            head.append(f"-p {rule.protocol}")
        if rule.not_protocol is not None:
            head.append(f"! -p {rule.not_protocol}")
        if rule.icmp_type is not None:
            code = f"/{rule.icmp_code}" if rule.icmp_code is not None else ""
            head.append(f"-m icmp --icmp-type {rule.icmp_type}{code}")
        if rule.not_icmp_type is not None:
            code = f"/{rule.not_icmp_code}" if rule.not_icmp_code is not None else ""
            head.append(f"-m icmp ! --icmp-type {rule.not_icmp_type}{code}")
        out: list[str] = []
        for src_numeric, src_set in self._variants(rule.src):
            src = self._side(rule.src, True, src_set, src_numeric)
            if src is None:
                return []
            for dst_numeric, dst_set in self._variants(rule.dst):
                dst = self._side(rule.dst, False, dst_set, dst_numeric)
                if dst is None:
                    return []
                # Set lookups last: a packet failing a cheap port match never pays for them.
                terms = [*src, *dst]
                sets = [t for t in terms if t.startswith("-m set")]
                cheap = [t for t in terms if not t.startswith("-m set")]
                match = " ".join([*head, *cheap, *sets])
                out += _with_action(match, rule.action, self.inbound)
        return out


def _with_action(match: str, action: Action, inbound: bool) -> list[str]:
    prefix = f"{match} " if match else ""
    if action is Action.ALLOW and inbound:
        return [f"{prefix}-j ACCEPT"]  # ingress is the last check: final (see nft_render)
    if action is Action.DENY:
        return [f"{prefix}-j DROP"]
    if action is Action.LOG:
        return [f'{prefix}-j LOG --log-prefix "{LOG_PREFIX}"']
    bit = MARK_ACCEPT if action is Action.ALLOW else MARK_PASS
    return [f"{prefix}-j MARK --set-xmark {bit:#x}/{bit:#x}", f"{_mark(bit)} -j RETURN"]


def has_pass(program: PolicyProgram, inbound: bool) -> bool:
    return any(r.action is Action.PASS for r in (program.inbound if inbound else program.outbound))


def program_chains(
    program: PolicyProgram, key: str, profile: bool, renderer: RuleRenderer
) -> dict[str, list[str]]:
    """Chains of a profile, or of a policy with a Pass rule (other policies are inline)."""
    out: dict[str, list[str]] = {}
    for inbound in (True, False):
        if not (profile or has_pass(program, inbound)):
            continue
        rules = program.inbound if inbound else program.outbound
        renderer.inbound = inbound
        texts = [t for rule in rules for t in renderer.render(rule)]
        if texts:
            out[policy_chain(key, inbound, profile)] = [tagged(t) for t in texts]
    return out


def endpoint_rules(
    ep: EndpointPolicy,
    inbound: bool,
    state: DataplaneState,
    present: set[str],
    renderer: RuleRenderer,
    unions: dict[str, tuple[str, ...]],
) -> list[str]:
    """The endpoint's chain: each policy's rules inline, in order (a jump to its chain when
    it can Pass; ``present`` names the policy/profile chains that exist), shortened by
    ``rule_opt``; the union sets used are added to ``unions``, rule nets to the renderer."""
    renderer.inbound = inbound
    rules = [f"-j MARK --set-xmark 0x0/{MARK_MASK:#x}"]
    if not inbound:
        # Hairpin (a pod reached itself through a service): out where it came in. Masquerade
        # it, or the pod would answer itself directly and the reply would miss the de-NAT.
        rules.append(
            f"-o {ep.interface} -j CONNMARK --set-xmark {CT_MARK_MASQ:#x}/{CT_MARK_MASQ:#x}"
        )
    segment: list[Item] = []

    def flush() -> None:
        for guard, rule in optimise(segment, unions):
            rules.extend(guard + text for text in renderer.render(rule))
        segment.clear()

    policy_ids = ep.ingress_policies if inbound else ep.egress_policies
    pass_possible = False
    for policy_id in policy_ids:
        program = state.policies.get(policy_id)
        if program is None:
            continue
        # After a policy that can Pass, the rest of the tier is skipped once it did.
        guard = f"{_no_mark(MARK_PASS)} " if pass_possible else ""
        chain = policy_chain(policy_id, inbound)
        if chain in present:
            flush()
            rules.append(f"{guard}-j {chain}")
            if not inbound:
                rules.append(f"{_mark(MARK_ACCEPT)} -j RETURN")
            pass_possible = True
            continue
        segment += [(guard, rule) for rule in (program.inbound if inbound else program.outbound)]
    flush()
    if policy_ids:
        rules.append(f"{_no_mark(MARK_PASS)} -j DROP" if pass_possible else "-j DROP")
    for profile in ep.profiles:
        chain = policy_chain(profile, inbound, profile=True)
        if chain in present:
            rules.append(f"-j {chain}")
            if not inbound:
                rules.append(f"{_mark(MARK_ACCEPT)} -j RETURN")
    rules.append("-j DROP")
    return [tagged(r) for r in rules]
