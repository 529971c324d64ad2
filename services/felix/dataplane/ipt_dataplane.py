"""The iptables driver: cali-* chains via ``iptables-restore --noflush``, sets via ``ipset``.

Per-key renderings (policy, profile, endpoint, selector set) are cached and recomputed only
for the keys a delta names; the union is diffed against what was last written, and only the
differing chains (a ``:chain`` line flushes one under --noflush) and set members go out, in
one ``ipset restore`` batch and one ``iptables-restore`` batch. Sets are created before the
rules that use them and destroyed after. The refresh reads ``iptables-save`` and ``ipset
save`` and repairs what differs; a full set rewrite goes through a temporary set and a swap.
Union sets (``cali40u:``, see ``rule_opt``) are derived ``hash:net`` sets holding the members
of their constituents: recomputed when a constituent changes, written in the same ``ipset
restore`` as the constituents (before the rules), destroyed once no endpoint chain uses them.
Services (``ipt_services``) add nat-table chains and the filter chain ``cali-SVC-REJECT``:
rendered per ServicePort (cached like endpoints), written in the same ``iptables-restore``
(``*nat`` then ``*filter``); their dispatch chains change line by line (``-D`` / ``-I 1``).
Works with both iptables flavours (nft by default, ``legacy=True`` for x_tables).
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from collections import Counter
from collections.abc import Iterable

from services.felix.calc.model import DataplaneState, ServicePort, StateDelta
from services.felix.dataplane import ipt_render as r
from services.felix.dataplane import ipt_services as svc
from services.felix.dataplane.names import endpoint_chain, ipset_name, policy_chain
from services.felix.dataplane.netns import command_in_netns
from services.felix.dataplane.svc_conntrack import (
    ConntrackCleaner,
    changed_targets,
    current_targets,
)

log = logging.getLogger(__name__)

_TAG_RE = re.compile(r'--comment "?(cali:[A-Za-z0-9_-]+)')
_OWNED_SETS = ("cali40s:", "cali40n:", "cali40a:", "cali40u:")
Chains = dict[str, list[str]]


class CommandError(RuntimeError):
    pass


def _tags(rules: list[str]) -> list[str]:
    """The cali:<hash> comment of each rule (as we render it, or as iptables-save prints)."""
    out = []
    for rule in rules:
        start = rule.rfind('--comment "cali:')
        if start >= 0 and rule.endswith('"'):  # our rendering: the comment is last
            out.append(rule[start + 11 : -1])
            continue
        m = _TAG_RE.search(rule)
        out.append(m.group(1) if m else "")
    return out


class IptablesDataplane:
    name = "iptables"

    def __init__(self, netns_path: str | None, legacy: bool = False) -> None:
        self._netns = netns_path
        suffix = "-legacy" if legacy else ""
        self._restore = f"iptables{suffix}-restore"
        self._save = f"iptables{suffix}-save"
        self.name = f"iptables{suffix}"
        # Cached renderings per key.
        self._program_chains: dict[tuple[bool, str], dict[str, list[str]]] = {}
        self._program_nets: dict[tuple[bool, str], dict[str, r.SetContent]] = {}
        self._selector_sets: dict[str, r.SetContent] = {}
        self._endpoint_chains: dict[str, dict[str, list[str]]] = {}
        self._endpoint_nets: dict[str, dict[str, r.SetContent]] = {}
        # Union sets each endpoint's chains use (uid -> constituents), and their contents.
        self._endpoint_unions: dict[str, dict[str, tuple[str, ...]]] = {}
        self._union_sets: dict[str, r.SetContent] = {}
        # Services: rendering per ServicePort id, and the ServicePorts last written.
        self._services: dict[str, svc.RenderedService] = {}
        self._service_ports: dict[str, ServicePort] = {}
        self._pod_cidrs: tuple[str, ...] = ()
        # What the kernel has (as last written or read); None until the first reconcile.
        self._chains: Chains | None = None
        self._nat: Chains = {}
        self._sets: dict[str, r.SetContent] = {}
        self._conntrack = ConntrackCleaner(netns_path)

    # -- commands --------------------------------------------------------------------------

    async def _exec(self, argv: list[str], stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *command_in_netns(self._netns, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if proc.returncode != 0:
            raise CommandError(f"{argv[0]}: {err.decode().strip()}")
        return out.decode()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        chains, nat, _ = await self._read_kernel()
        lines: list[str] = []
        if svc.SERVICES not in nat:
            # First start: the service chains, empty (no service until in sync).
            lines += _table_lines("nat", svc.static_nat_chains(()), self._nat_hooks(nat))
        if r.FORWARD not in chains:
            # First start: hook in dispatch chains that know no endpoint, so every cali*
            # interface is dropped until we are in sync. A restart leaves the rules alone.
            lines += _table_lines("filter", r.static_chains(()), self._hook_lines(chains))
        if lines:
            await self._exec([self._restore, "--noflush"], "\n".join([*lines, ""]))

    async def close(self) -> None:
        self._conntrack.close()

    def programmed_interfaces(self) -> frozenset[str]:
        if self._chains is None:
            return frozenset()
        return frozenset(
            i
            for i in self._endpoint_chains
            if endpoint_chain(i, True) in self._chains and endpoint_chain(i, False) in self._chains
        )

    def ipset_count(self) -> int:
        return len(self._sets)

    @staticmethod
    def _hook_lines(chains: Chains) -> list[str]:
        """Jumps from the built-in chains to ours, for those that lack them."""
        lines = []
        for hook in r.HOOKS:
            rule = r.hook_rule(hook)
            if _tags([rule])[0] not in _tags(chains.get(hook, [])):
                lines.append(f"-I {hook} 1 {rule}")
        return lines

    @staticmethod
    def _nat_hooks(nat: Chains) -> list[str]:
        """nat PREROUTING/OUTPUT -> cali-SERVICES, POSTROUTING -> cali-SVC-POSTROUTING, first
        (so a service's masquerade comes before cali-nat-outgoing; they never overlap)."""
        lines = []
        for hook in svc.NAT_HOOKS:
            rule = svc.hook_rule(hook)
            if _tags([rule])[0] not in _tags(nat.get(hook, [])):
                lines.append(f"-I {hook} 1 {rule}")
        return lines

    # -- rendering -------------------------------------------------------------------------

    def _refresh_cache(self, state: DataplaneState, delta: StateDelta | None) -> None:
        """Re-render the keys of ``delta`` (everything when None)."""
        if delta is None:
            self._program_chains.clear()
            self._program_nets.clear()
            self._selector_sets.clear()
            self._endpoint_chains.clear()
            self._endpoint_nets.clear()
            self._endpoint_unions.clear()
            self._union_sets.clear()
            keys = [(False, k) for k in state.policies] + [(True, k) for k in state.profiles]
            set_ids = list(state.ipsets)
            interfaces = set(state.endpoints)
        else:
            keys = [(False, k) for k in delta.policies] + [(True, k) for k in delta.profiles]
            set_ids = list(delta.ipsets)
            interfaces = set(delta.endpoints)
        presence_changed: set[str] = set()
        for profile, key in keys:
            program = (state.profiles if profile else state.policies).get(key)
            before = set(self._program_chains.get((profile, key), {}))
            if program is None:
                self._program_chains.pop((profile, key), None)
                self._program_nets.pop((profile, key), None)
                after: set[str] = set()
            else:
                renderer = r.RuleRenderer()
                chains = r.program_chains(program, key, profile, renderer)
                self._program_chains[(profile, key)] = chains
                self._program_nets[(profile, key)] = renderer.net_sets
                after = set(chains)
            if before != after:
                presence_changed.add(key)
        for set_id in set_ids:
            spec = state.ipsets.get(set_id)
            if spec is None:
                self._selector_sets.pop(set_id, None)
            else:
                members = state.ipset_members.get(set_id, set())
                self._selector_sets[set_id] = r.selector_set(spec, members)
        if delta is not None:
            # Policy rules are inline in endpoint chains: a changed policy re-renders those.
            touched = presence_changed | {key for profile, key in keys if not profile}
            for iface, ep in state.endpoints.items():
                if touched.intersection((*ep.ingress_policies, *ep.egress_policies, *ep.profiles)):
                    interfaces.add(iface)
        present = {c for chains in self._program_chains.values() for c in chains}
        for iface in interfaces:
            endpoint = state.endpoints.get(iface)
            if endpoint is None:
                self._endpoint_chains.pop(iface, None)
                self._endpoint_nets.pop(iface, None)
                self._endpoint_unions.pop(iface, None)
                continue
            renderer = r.RuleRenderer()
            unions: dict[str, tuple[str, ...]] = {}
            self._endpoint_chains[iface] = {
                endpoint_chain(iface, inbound): r.endpoint_rules(
                    endpoint, inbound, state, present, renderer, unions
                )
                for inbound in (True, False)
            }
            self._endpoint_nets[iface] = renderer.net_sets
            self._endpoint_unions[iface] = unions
        self._refresh_unions(None if delta is None else set(set_ids))
        self._refresh_services(state, delta)

    def _refresh_services(self, state: DataplaneState, delta: StateDelta | None) -> None:
        if delta is None:
            self._services.clear()
        ids = state.service_ports if delta is None else delta.service_ports
        for sp_id in ids:
            sp = state.service_ports.get(sp_id)
            self._services.pop(sp_id, None)
            if sp is None:
                continue
            try:
                self._services[sp_id] = svc.render_service(sp)
            except ValueError as exc:  # never half-applied: the service is left out whole
                log.error("service port %s not programmed: %s", sp_id, exc)
        self._pod_cidrs = state.pod_cidrs

    def _refresh_unions(self, changed_sets: set[str] | None) -> None:
        """Union set contents: recomputed when new or a constituent changed; dropped once
        unused (``_write`` then destroys them after the rules stopped using them)."""
        used: dict[str, tuple[str, ...]] = {}
        for unions in self._endpoint_unions.values():
            used.update(unions)
        for uid in [u for u in self._union_sets if u not in used]:
            del self._union_sets[uid]
        for uid, constituents in used.items():
            if uid in self._union_sets and (
                changed_sets is not None and changed_sets.isdisjoint(constituents)
            ):
                continue
            members: set[str] = set()
            for set_id in constituents:
                content = self._selector_sets.get(set_id)
                if content is not None:
                    members |= content[1]
            self._union_sets[uid] = ("hash:net", frozenset(members))

    def _intended(self) -> tuple[Chains, dict[str, r.SetContent], Chains]:
        chains = r.static_chains(self._endpoint_chains)
        chains[r.SVC_REJECT] = svc.reject_rules(self._services.values())
        for program in self._program_chains.values():
            chains.update(program)
        for endpoint in self._endpoint_chains.values():
            chains.update(endpoint)
        sets = {ipset_name(k): v for k, v in self._selector_sets.items()}
        for nets in (*self._program_nets.values(), *self._endpoint_nets.values()):
            sets.update(nets)
        sets.update((ipset_name(uid), content) for uid, content in self._union_sets.items())
        return chains, sets, svc.nat_chains(self._services.values(), self._pod_cidrs)

    # -- applying --------------------------------------------------------------------------

    async def apply(self, state: DataplaneState, delta: StateDelta) -> None:
        if self._chains is None:
            await self.reconcile(state)
            return
        self._refresh_cache(state, delta)
        chains, sets, nat = self._intended()
        have = (self._chains, self._nat, self._sets)
        try:
            await self._write(chains, nat, sets, *have, hooks=[], kernel=False)
        except CommandError as exc:
            log.warning("iptables batch failed (%s); reconciling with the kernel", exc)
            self._chains = None
            await self.reconcile(state)
        await self._after(state, delta.service_ports, first=False)

    async def _after(self, state: DataplaneState, changed: Iterable[str], first: bool) -> None:
        """Remember the ServicePorts written; then (no new flow can reach a removed backend
        any more) delete the UDP flows that still do, as the nftables driver does."""
        old: dict[str, ServicePort | None] = {}
        for sp_id in changed:
            old[sp_id] = self._service_ports.pop(sp_id, None)
            new = state.service_ports.get(sp_id)
            if new is not None:
                self._service_ports[sp_id] = new
        if first:  # a (re)start: backends may have gone while no Felix ran
            await self._conntrack.delete_stale(current_targets(state.service_ports.values()))
        else:
            await self._conntrack.delete_stale(changed_targets(old, state.service_ports))

    async def _write(
        self,
        chains: Chains,
        nat: Chains,
        sets: dict[str, r.SetContent],
        have_chains: Chains,
        have_nat: Chains,
        have_sets: dict[str, r.SetContent],
        hooks: list[str],
        kernel: bool,
        nat_hooks: tuple[str, ...] = (),
    ) -> int:
        """Write what differs. ``have_*`` is our own last rendering (compared as text)
        or, with ``kernel``, rules read back from iptables-save (compared by tag)."""
        changes = 0
        # 1. Sets that are new or changed (members added/removed; a type change: swap).
        set_lines: list[str] = []
        for name, (kind, members) in sets.items():
            old = have_sets.get(name)
            if old is None:
                set_lines.append(f"create {name} {kind} family inet maxelem 1048576 -exist")
                set_lines += [f"add {name} {m} -exist" for m in sorted(members)]
            elif old == (kind, members):
                continue
            elif kernel or old[0] != kind:
                # Repairing a set found different in the kernel: rebuild it in a temporary
                # set and swap it in atomically, as Calico does.
                tmp = name[:27] + "-tmp"
                set_lines += [f"create {name} {kind} family inet maxelem 1048576 -exist"]
                set_lines += [f"create {tmp} {kind} family inet maxelem 1048576 -exist"]
                set_lines += [f"flush {tmp}", *(f"add {tmp} {m}" for m in sorted(members))]
                set_lines += [f"swap {tmp} {name}", f"destroy {tmp}"]
            else:
                set_lines += [f"del {name} {m} -exist" for m in sorted(old[1] - members)]
                set_lines += [f"add {name} {m} -exist" for m in sorted(members - old[1])]
            changes += 1
        if set_lines:
            await self._exec(["ipset", "restore"], "\n".join(set_lines) + "\n")
        # 2. Chains: changed ones rewritten, new ones created, gone ones flushed and deleted
        # (nat first: a service's DNAT before its filter reject goes, and the reverse).
        nat_lines, nat_changes = _diff_lines(nat, have_nat, kernel, list(nat_hooks))
        filter_lines, filter_changes = _diff_lines(chains, have_chains, kernel, hooks)
        lines = []
        if nat_changes:
            lines += ["*nat", *nat_lines, "COMMIT"]
        if filter_changes:
            lines += ["*filter", *filter_lines, "COMMIT"]
        changes += nat_changes + filter_changes
        if lines:
            await self._exec([self._restore, "--noflush"], "\n".join([*lines, ""]))
        # 3. Sets no rule uses any more.
        stale = [n for n in have_sets if n not in sets]
        if stale:
            await self._exec(["ipset", "restore"], "".join(f"destroy {n}\n" for n in stale))
            changes += len(stale)
        self._chains = {n: chains[n] for n in chains}
        self._nat = dict(nat)
        self._sets = dict(sets)
        return changes

    async def _read_kernel(self) -> tuple[Chains, Chains, dict[str, r.SetContent]]:
        chains = _parse_save(await self._exec([self._save, "-t", "filter"]))
        nat = _parse_save(await self._exec([self._save, "-t", "nat"]))
        sets: dict[str, tuple[str, set[str]]] = {}
        for line in (await self._exec(["ipset", "save"])).splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "create" and parts[1].startswith(_OWNED_SETS):
                sets[parts[1]] = (parts[2], set())
            elif len(parts) >= 3 and parts[0] == "add" and parts[1] in sets:
                member = parts[2]
                if sets[parts[1]][0] == "hash:net" and "/" not in member:
                    member += "/32"
                sets[parts[1]][1].add(member)
        return chains, nat, {k: (v[0], frozenset(v[1])) for k, v in sets.items()}

    async def reconcile(self, state: DataplaneState) -> int:
        first = self._chains is None
        self._refresh_cache(state, None)
        chains, sets, nat = self._intended()
        have_chains, have_nat, have_sets = await self._read_kernel()
        hooks = self._hook_lines(have_chains)
        nat_hooks = tuple(self._nat_hooks(have_nat))
        owned = {n: rules for n, rules in have_chains.items() if n.startswith("cali-")}
        owned_nat = {n: rules for n, rules in have_nat.items() if n.startswith(svc.NAT_PREFIXES)}
        changes = await self._write(
            chains, nat, sets, owned, owned_nat, have_sets, hooks, kernel=True, nat_hooks=nat_hooks
        )
        await self._after(state, set(self._service_ports) | set(state.service_ports), first)
        return changes


def _parse_save(text: str) -> Chains:
    chains: Chains = {}
    for line in text.splitlines():
        if line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chain, _, rest = line[3:].partition(" ")
            chains.setdefault(chain, []).append(rest)
    return chains


def _table_lines(table: str, chains: Chains, hooks: list[str]) -> list[str]:
    """A whole-chains section for iptables-restore (first start)."""
    lines = [f"*{table}", *(f":{c} - [0:0]" for c in chains)]
    for chain, rules in chains.items():
        lines += [f"-A {chain} {rule}" for rule in rules]
    return [*lines, *hooks, "COMMIT"]


def _same_unordered(name: str, have: list[str], want: list[str]) -> bool:
    """A dispatch chain read from the kernel: the same lines in any order (line-by-line
    updates insert at the top), cali-SERVICES' node-port jump still last."""
    have_tags, want_tags = _tags(have), _tags(want)
    tail = 1 if name == svc.SERVICES else 0
    return Counter(have_tags) == Counter(want_tags) and have_tags[-tail:] == want_tags[-tail:]


def _diff_lines(
    want: Chains, have: Chains, kernel: bool, hooks: list[str]
) -> tuple[list[str], int]:
    """One table's restore lines (without ``*table``/COMMIT) and the number of changes.

    ``have`` holds only chains we own: what it has and ``want`` lacks is deleted. A dispatch
    chain (``svc.UNORDERED``) that exists is changed line by line on a delta (``-D`` the
    lines gone, ``-I 1`` the new ones: cali-SERVICES' last line stays last) and rewritten
    whole when a refresh finds it different.
    """
    changed: list[str] = []
    deletes: list[str] = []
    inserts: list[str] = []
    for name, rules in want.items():
        old = have.get(name)
        if old is None:
            changed.append(name)
        elif kernel:
            if name in svc.UNORDERED:
                if not _same_unordered(name, old, rules):
                    changed.append(name)
            elif _tags(old) != _tags(rules):
                changed.append(name)
        elif old != rules:
            if name in svc.UNORDERED:
                old_set, new_set = set(old), set(rules)
                deletes += [f"-D {name} {rule}" for rule in old if rule not in new_set]
                inserts += [f"-I {name} 1 {rule}" for rule in rules if rule not in old_set][::-1]
            else:
                changed.append(name)
    gone = [n for n in have if n not in want]
    lines = [f":{n} - [0:0]" for n in (*changed, *gone)]
    lines += deletes
    for name in changed:
        lines += [f"-A {name} {rule}" for rule in want[name]]
    lines += inserts
    lines += [f"-X {n}" for n in gone]
    lines += hooks
    return lines, len(changed) + len(gone) + len(deletes) + len(inserts) + len(hooks)


__all__ = ["IptablesDataplane", "policy_chain"]
