"""The nftables driver: deltas as atomic transactions; a refresh that repairs drift.

The driver remembers what it last wrote (chains as tagged rule lists, sets as elements,
dispatch maps). A delta renders only the touched sets, policies and endpoints, diffs them
against that record and sends one transaction. The refresh reads the table back (JSON),
compares rule tags, set elements and map entries with the intended state and rewrites only
what differs; a missing table is rebuilt whole. Nothing is ever flushed wholesale: on
start Felix keeps whatever the previous run left (policy stays enforced) until it is in sync.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from services.felix.calc.model import DataplaneState, StateDelta
from services.felix.dataplane import nft_render as r
from services.felix.dataplane import nft_services as svc
from services.felix.dataplane.names import RULE_TAG, endpoint_chain, nft_set_name, policy_chain
from services.felix.dataplane.nft_exec import NftError, make_runner
from services.felix.dataplane.svc_conntrack import (
    ConntrackCleaner,
    changed_targets,
    current_targets,
)

log = logging.getLogger(__name__)

T = f"{r.FAMILY} {r.TABLE}"


def _tag(rule: str) -> str:
    start = rule.rfind(f'comment "{RULE_TAG}')
    return rule[start + 9 : -1] if start >= 0 else ""


@dataclass(slots=True)
class Rendering:
    """A (partial) kernel picture: chains, sets and the dispatch maps."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    sets: dict[str, tuple[str, set[str]]] = field(default_factory=dict)  # decl, elements
    fw: dict[str, str] = field(default_factory=dict)  # interface -> chain
    tw: dict[str, str] = field(default_factory=dict)
    ifaces: set[str] = field(default_factory=set)  # known workload interfaces
    # Union sets each endpoint chain uses (see rule_opt): chain -> {union id: constituents}.
    unions: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    # Services: maps, sets and how they were derived (their chains are in ``chains``).
    svc: svc.ServiceRendering = field(default_factory=svc.ServiceRendering)

    def union_sets(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for used in self.unions.values():
            out.update(used)
        return out


def _union_set(
    state: DataplaneState, uid: str, constituents: tuple[str, ...]
) -> tuple[str, str, set[str]]:
    """(kernel name, declaration, elements) of a union set."""
    spec = r.union_spec(uid)
    members = r.union_members(state, constituents)
    return (
        r.kernel_set_name(spec, members),
        r.set_declaration(spec, members),
        r.set_elements(spec, members),
    )


def _program_chains(state: DataplaneState, key: str, profile: bool) -> dict[str, list[str]]:
    program = (state.profiles if profile else state.policies).get(key)
    out: dict[str, list[str]] = {}
    if program is None:
        return out
    names = r.state_set_names(state)
    for inbound in (True, False):
        if not r.policy_needs_chain(program, inbound, profile):
            continue
        rules = r.policy_rules(program, inbound, names)
        if rules:
            out[policy_chain(key, inbound, profile)] = rules
    return out


def chain_header(name: str) -> str:
    return svc.chain_header(name) or r.chain_header(name)


def static_chains() -> dict[str, list[str]]:
    return {**r.static_chains(), **svc.static_chains()}


def render_full(state: DataplaneState) -> Rendering:
    out = Rendering(chains=static_chains())
    for set_id, spec in state.ipsets.items():
        members = state.ipset_members.get(set_id, set())
        out.sets[r.kernel_set_name(spec, members)] = (
            r.set_declaration(spec, members),
            r.set_elements(spec, members),
        )
    for policy_id in state.policies:
        out.chains.update(_program_chains(state, policy_id, False))
    for profile in state.profiles:
        out.chains.update(_program_chains(state, profile, True))
    present = set(out.chains)
    names = r.state_set_names(state)
    for iface, ep in state.endpoints.items():
        for inbound in (True, False):
            chain = endpoint_chain(iface, inbound)
            used: dict[str, tuple[str, ...]] = {}
            out.chains[chain] = r.endpoint_rules(ep, inbound, state, present, names, used)
            if used:
                out.unions[chain] = used
        out.fw[iface] = endpoint_chain(iface, False)
        out.tw[iface] = endpoint_chain(iface, True)
    out.ifaces = set(state.endpoints)
    for uid, constituents in out.union_sets().items():
        name, decl, elements = _union_set(state, uid, constituents)
        out.sets[name] = (decl, elements)
    out.svc = svc.render_services(state)
    out.chains.update(out.svc.chains())
    return out


def _elements(values: set[str]) -> str:
    return ", ".join(sorted(values))


def _map_elements(entries: dict[str, str]) -> str:
    return ", ".join(f'"{iface}" : goto {chain}' for iface, chain in sorted(entries.items()))


class NftablesDataplane:
    name = "nftables"

    def __init__(self, netns_path: str | None, backend: str = "lib") -> None:
        self._runner = make_runner(netns_path, backend)
        self._applied: Rendering | None = None  # None: unknown, reconcile before deltas
        self._conntrack = ConntrackCleaner(netns_path)
        self.last_script = ""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        kernel = await self._read_kernel()
        if kernel is None:
            # First start: an empty skeleton drops every cali* interface until we are in
            # sync. An existing table (a restart) is left exactly as it is.
            await self._runner.run(self._skeleton_script())

    async def close(self) -> None:
        self._runner.close()
        self._conntrack.close()

    def programmed_interfaces(self) -> frozenset[str]:
        if self._applied is None:
            return frozenset()
        return frozenset(self._applied.fw) & frozenset(self._applied.tw)

    def ipset_count(self) -> int:
        return len(self._applied.sets) if self._applied is not None else 0

    def _skeleton_script(self) -> str:
        lines = [f"add table {T}"]
        lines += self._declare_static()
        chains = static_chains()
        lines += [chain_header(name) for name in chains]  # every jump target first
        for name, rules in chains.items():
            lines += [f"add rule {T} {name} {rule}" for rule in rules]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _declare_static() -> list[str]:
        return [
            f"add map {T} {r.FW_DISPATCH} {{ type ifname : verdict; }}",
            f"add map {T} {r.TW_DISPATCH} {{ type ifname : verdict; }}",
            f"add set {T} {r.LOCAL_IFACES} {{ type ifname; }}",
            *svc.declarations(),
        ]

    # -- deltas ----------------------------------------------------------------------------

    async def apply(self, state: DataplaneState, delta: StateDelta) -> None:
        if self._applied is None:
            await self.reconcile(state)
            return
        script, new_applied, old_ports = self._delta_script(state, delta, self._applied)
        if not script:
            return
        try:
            await self._runner.run(script)
        except NftError as exc:
            log.warning("nft transaction failed (%s); reconciling with the kernel", exc)
            self._applied = None
            await self.reconcile(state)
            return
        self.last_script = script
        self._applied = new_applied
        if old_ports:
            # Only now no new flow can reach a removed backend: drop the UDP flows that do.
            await self._conntrack.delete_stale(changed_targets(old_ports, state.service_ports))

    def _delta_script(
        self, state: DataplaneState, delta: StateDelta, applied: Rendering
    ) -> tuple[str, Rendering, dict[str, Any]]:
        new = Rendering(
            chains=dict(applied.chains),
            sets=dict(applied.sets),
            fw=dict(applied.fw),
            tw=dict(applied.tw),
            ifaces=set(applied.ifaces),
            unions=dict(applied.unions),
            # Updated in place: a failed transaction discards the whole record (reconcile).
            svc=applied.svc,
        )
        head: list[str] = []  # set/chain creation and contents, in dependency order
        tail: list[str] = []  # deletions, after nothing references them any more

        # A set whose members gain or lose prefixes changes kind (hash <-> interval) and so
        # its kernel name: the policies using it are re-rendered against the new name.
        renamed: set[str] = set()
        for set_id in sorted(delta.ipsets):
            spec = state.ipsets.get(set_id)
            members = state.ipset_members.get(set_id, set())
            name = r.kernel_set_name(spec, members) if spec is not None else ""
            for old_name in (nft_set_name(set_id), nft_set_name(set_id).replace("-", "i-", 1)):
                if old_name != name and old_name in new.sets:
                    del new.sets[old_name]
                    tail.append(f"delete set {T} {old_name}")
                    if spec is not None:
                        renamed.add(set_id)
            if spec is None:
                continue
            elements = r.set_elements(spec, members)
            old = new.sets.get(name)
            if old is None:
                head.append(
                    f"add {r.set_declaration(spec, members).replace('set ', f'set {T} ', 1)}"
                )
                if elements:
                    head.append(f"add element {T} {name} {{ {_elements(elements)} }}")
            else:
                removed, added = old[1] - elements, elements - old[1]
                if removed:
                    head.append(f"delete element {T} {name} {{ {_elements(removed)} }}")
                if added:
                    head.append(f"add element {T} {name} {{ {_elements(added)} }}")
            new.sets[name] = (r.set_declaration(spec, members), elements)
        sets_end = len(head)  # union sets go here: after their constituents, before rules
        if renamed:
            delta = StateDelta(
                ipsets=delta.ipsets,
                policies=delta.policies
                | {k for k, p in state.policies.items() if renamed & p.ipset_ids()},
                profiles=delta.profiles
                | {k for k, p in state.profiles.items() if renamed & p.ipset_ids()},
                endpoints=delta.endpoints,
                service_ports=delta.service_ports,
                pod_cidrs=delta.pod_cidrs,
            )

        # Policy and profile chains; a chain appearing or vanishing changes endpoint chains.
        presence_changed: set[str] = set()
        program_chains: dict[str, list[str]] = {}
        gone: list[str] = []
        for keys, profile in ((delta.policies, False), (delta.profiles, True)):
            for key in keys:
                chains = _program_chains(state, key, profile)
                for inbound in (True, False):
                    name = policy_chain(key, inbound, profile)
                    if name in chains:
                        program_chains[name] = chains[name]
                        if name not in applied.chains:
                            presence_changed.add(key)
                    elif name in applied.chains:
                        gone.append(name)
                        presence_changed.add(key)
        present = {n for n in new.chains if n not in gone} | set(program_chains)
        for name, rules in program_chains.items():
            head += self._chain_update(name, rules, new.chains.get(name))
            new.chains[name] = rules

        interfaces = set(delta.endpoints)
        # Policy rules are inline in endpoint chains: a changed policy re-renders those.
        presence_changed |= delta.policies
        names = r.state_set_names(state)
        if presence_changed:
            for iface, ep in state.endpoints.items():
                if presence_changed.intersection(
                    (*ep.ingress_policies, *ep.egress_policies, *ep.profiles)
                ):
                    interfaces.add(iface)
        fw_add: dict[str, str] = {}
        tw_add: dict[str, str] = {}
        removed_ifaces: list[str] = []
        for iface in sorted(interfaces):
            endpoint = state.endpoints.get(iface)
            if endpoint is None:
                if iface in new.fw or iface in new.tw:
                    removed_ifaces.append(iface)
                continue
            for inbound in (True, False):
                name = endpoint_chain(iface, inbound)
                used: dict[str, tuple[str, ...]] = {}
                rules = r.endpoint_rules(endpoint, inbound, state, present, names, used)
                head += self._chain_update(name, rules, new.chains.get(name))
                new.chains[name] = rules
                if used:
                    new.unions[name] = used
                else:
                    new.unions.pop(name, None)
            if iface not in new.fw:
                fw_add[iface] = new.fw[iface] = endpoint_chain(iface, False)
                tw_add[iface] = new.tw[iface] = endpoint_chain(iface, True)
                new.ifaces.add(iface)
        if fw_add:
            head.append(f"add element {T} {r.FW_DISPATCH} {{ {_map_elements(fw_add)} }}")
            head.append(f"add element {T} {r.TW_DISPATCH} {{ {_map_elements(tw_add)} }}")
            head.append(f"add element {T} {r.LOCAL_IFACES} {{ {_ifnames(fw_add)} }}")
        if removed_ifaces:
            quoted = _ifnames(dict.fromkeys(removed_ifaces, ""))
            head.append(f"delete element {T} {r.FW_DISPATCH} {{ {quoted} }}")
            head.append(f"delete element {T} {r.TW_DISPATCH} {{ {quoted} }}")
            head.append(f"delete element {T} {r.LOCAL_IFACES} {{ {quoted} }}")
            for iface in removed_ifaces:
                new.fw.pop(iface, None)
                new.tw.pop(iface, None)
                new.ifaces.discard(iface)
                for inbound in (True, False):
                    name = endpoint_chain(iface, inbound)
                    new.unions.pop(name, None)
                    if new.chains.pop(name, None) is not None:
                        gone.append(name)
        head[sets_end:sets_end] = self._union_updates(state, delta, applied, new, tail)
        # Services: their own chains, maps and sets (nothing above refers to them).
        services = svc.apply_delta(new.svc, state, delta)
        head += services.sets + services.headers + services.rules + services.elements
        for name, svc_rules in services.chains.items():
            if svc_rules is not None:
                new.chains[name] = svc_rules
        gone += services.gone_chains
        tail += [f"delete set {T} {name}" for name in services.gone_sets]
        # Flush every chain that goes before deleting any (one may jump to another).
        tail_chains = [f"flush chain {T} {n}" for n in gone]
        tail_chains += [f"delete chain {T} {n}" for n in gone]
        for name in gone:
            new.chains.pop(name, None)
        lines = head + tail_chains + tail
        return ("\n".join(lines) + "\n" if lines else ""), new, dict(services.old_ports)

    @staticmethod
    def _union_updates(
        state: DataplaneState,
        delta: StateDelta,
        applied: Rendering,
        new: Rendering,
        tail: list[str],
    ) -> list[str]:
        """Union sets: create the new ones, follow their constituents' member changes, and
        (in ``tail``, after the rules stopped using them) delete the ones no chain uses."""
        lines: list[str] = []
        before = applied.union_sets()
        wanted: set[str] = set()
        for uid, constituents in new.union_sets().items():
            if uid in before and not delta.ipsets.intersection(constituents):
                wanted.add(_applied_union_name(applied, uid))
                continue
            name, decl, elements = _union_set(state, uid, constituents)
            wanted.add(name)
            old = new.sets.get(name)
            if old is None:
                lines.append(f"add {decl.replace('set ', f'set {T} ', 1)}")
                if elements:
                    lines.append(f"add element {T} {name} {{ {_elements(elements)} }}")
            else:
                removed, added = old[1] - elements, elements - old[1]
                if removed:
                    lines.append(f"delete element {T} {name} {{ {_elements(removed)} }}")
                if added:
                    lines.append(f"add element {T} {name} {{ {_elements(added)} }}")
            new.sets[name] = (decl, elements)
        for name in [n for n in new.sets if _is_union_name(n) and n not in wanted]:
            del new.sets[name]
            tail.append(f"delete set {T} {name}")
        return lines

    @staticmethod
    def _chain_update(name: str, rules: list[str], old: list[str] | None) -> list[str]:
        if old == rules:
            return []
        lines = [f"add chain {T} {name}"] if old is None else [f"flush chain {T} {name}"]
        lines += [f"add rule {T} {name} {rule}" for rule in rules]
        return lines

    # -- refresh ---------------------------------------------------------------------------

    async def _read_kernel(self) -> Rendering | None:
        try:
            listing = await self._runner.list_json(f"list table {T}")
        except NftError:
            return None  # no table
        return _parse_listing(listing)

    async def reconcile(self, state: DataplaneState) -> int:
        intended = render_full(state)
        kernel = await self._read_kernel()
        script, repairs = self._repair_script(intended, kernel)
        if script:
            await self._runner.run(script)
            self.last_script = script
        first = self._applied is None
        self._applied = intended
        if first:
            # A (re)start: backends may have gone while no Felix ran.
            await self._conntrack.delete_stale(current_targets(state.service_ports.values()))
        return repairs

    def _repair_script(self, want: Rendering, have: Rendering | None) -> tuple[str, int]:
        lines: list[str] = []
        repairs = 0
        if have is None:
            lines.append(f"add table {T}")
            lines += self._declare_static()
            have = Rendering()
            repairs += 1
        services = svc.repair(want.svc, have.svc)
        repairs += services.repairs
        # Sets first (rules refer to them).
        for name, (decl, elements) in want.sets.items():
            old = have.sets.get(name)
            if old is None:
                lines.append(f"add {decl.replace('set ', f'set {T} ', 1)}")
            elif old[1] != elements:
                lines.append(f"flush set {T} {name}")
            if old is None or old[1] != elements:
                repairs += 1
                if elements:
                    lines.append(f"add element {T} {name} {{ {_elements(elements)} }}")
        lines += services.sets
        # Chain headers before any rule, so every jump target exists.
        for name in want.chains:
            if name not in have.chains:
                lines.append(chain_header(name))
        for name, rules in want.chains.items():
            old_rules = have.chains.get(name)
            if old_rules is not None and [_tag(x) for x in old_rules] == [_tag(x) for x in rules]:
                continue
            repairs += 1
            if old_rules is not None:
                lines.append(f"flush chain {T} {name}")
            lines += [f"add rule {T} {name} {rule}" for rule in rules]
        for map_name, entries, old_entries in (
            (r.FW_DISPATCH, want.fw, have.fw),
            (r.TW_DISPATCH, want.tw, have.tw),
        ):
            if entries != old_entries:
                repairs += 1
                lines.append(f"flush map {T} {map_name}")
                if entries:
                    lines.append(f"add element {T} {map_name} {{ {_map_elements(entries)} }}")
        lines += services.elements
        if want.ifaces != have.ifaces:
            repairs += 1
            lines.append(f"flush set {T} {r.LOCAL_IFACES}")
            if want.ifaces:
                names = ", ".join(f'"{i}"' for i in sorted(want.ifaces))
                lines.append(f"add element {T} {r.LOCAL_IFACES} {{ {names} }}")
        extra_chains = [n for n in have.chains if n not in want.chains]
        lines += [f"flush chain {T} {n}" for n in extra_chains]
        lines += [f"delete chain {T} {n}" for n in extra_chains]
        lines += [f"delete set {T} {n}" for n in have.sets if n not in want.sets]
        lines += [f"delete set {T} {n}" for n in services.gone_sets]
        repairs += len(extra_chains)
        return ("\n".join(lines) + "\n" if repairs else ""), repairs


def _is_union_name(name: str) -> bool:
    return name.startswith(("u-", "ui-"))


def _applied_union_name(applied: Rendering, uid: str) -> str:
    name = nft_set_name(uid)
    return name if name in applied.sets else name.replace("-", "i-", 1)


def _ifnames(entries: dict[str, str]) -> str:
    return ", ".join(f'"{iface}"' for iface in sorted(entries))


def _element_text(elem: Any) -> str:
    if isinstance(elem, str):
        return elem
    if isinstance(elem, int):
        return str(elem)
    if isinstance(elem, dict):
        if "prefix" in elem:
            prefix = elem["prefix"]
            return f"{prefix['addr']}/{prefix['len']}"
        if "concat" in elem:
            addr, proto, port = elem["concat"]
            return f"{_element_text(addr)} . {r.proto_number(proto)} . {port}"
        if "range" in elem:
            low, high = elem["range"]
            return f"{low}-{high}"
        if "elem" in elem:
            return _element_text(elem["elem"].get("val"))
    return str(elem)


def _parse_listing(listing: dict[str, Any]) -> Rendering:
    out = Rendering()
    static_sets = {r.LOCAL_IFACES}
    for item in listing.get("nftables", []):
        if svc.parse_item(item, out.svc):
            continue
        if "chain" in item:
            out.chains.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            rule = item["rule"]
            comment = rule.get("comment", "")
            out.chains.setdefault(rule["chain"], []).append(f'x comment "{comment}"')
        elif "set" in item:
            s = item["set"]
            if s["name"] in static_sets:
                out.ifaces = {str(e) for e in s.get("elem", [])}
                continue
            elements = {_element_text(e) for e in s.get("elem", [])}
            out.sets[s["name"]] = ("", elements)
        elif "map" in item:
            m = item["map"]
            entries: dict[str, str] = {}
            for key, verdict in m.get("elem", []):
                target = (verdict.get("goto") or verdict.get("jump") or {}).get("target", "")
                entries[str(key)] = target
            if m["name"] == r.FW_DISPATCH:
                out.fw = entries
            elif m["name"] == r.TW_DISPATCH:
                out.tw = entries
    return out
