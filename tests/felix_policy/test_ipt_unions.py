"""iptables: inline policy rules and derived union ipsets (rendering, write order, kernel).

Real-traffic verdicts of merged rules are checked for every dataplane in
test_kernel_semantics.py (test_merged_rules_keep_first_match); here: what is written, in which
order (union sets created before the rules that use them, destroyed after), and that the
kernel accepts each step without the driver falling back to a full reconcile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from services.felix.calc.model import (
    Action,
    DataplaneState,
    EndpointPolicy,
    IPSetKind,
    IPSetSpec,
    Match,
    PolicyProgram,
    Rule,
    StateDelta,
)
from services.felix.dataplane.ipt_dataplane import IptablesDataplane
from services.felix.dataplane.names import endpoint_chain, ipset_name, policy_chain
from services.felix.dataplane.rule_opt import union_id

TCP, UDP = 6, 17
IFACE = "cali1"
UDP_DENY = Rule(Action.DENY, protocol=UDP, src=Match(nets=("192.168.0.0/16",)))


def allow_from(set_id: str) -> Rule:
    return Rule(Action.ALLOW, protocol=TCP, src=Match(ipset=set_id), dst=Match(ports=((80, 80),)))


def make_state(policies: tuple[str, ...] = ("p1", "p2", "p3")) -> DataplaneState:
    state = DataplaneState()
    for n in (1, 2, 3):
        sid = f"s:{n}"
        state.ipsets[sid] = IPSetSpec(sid, IPSetKind.NETS, f"role == 'r{n}'")
        state.ipset_members[sid] = {f"10.0.{n}.1/32", f"10.0.{n}.2/32"}
        state.policies[f"p{n}"] = PolicyProgram(f"p{n}", inbound=(allow_from(sid), UDP_DENY))
    state.endpoints[IFACE] = EndpointPolicy(IFACE, "wep", ("10.1.0.1/32",), policies, (), ())
    return state


class Recorder(IptablesDataplane):
    """The driver with its commands recorded instead of run (an empty kernel)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.calls: list[tuple[str, str]] = []

    async def _exec(self, argv: list[str], stdin: str | None = None) -> str:
        self.calls.append((argv[0], stdin or ""))
        return ""

    def take(self) -> list[tuple[str, str]]:
        calls, self.calls = self.calls, []
        return [c for c in calls if c[1]]  # writes only (reads have no stdin)


def union_name(*sets: str) -> str:
    return ipset_name(union_id(tuple(sets)))


async def test_policies_inline_and_merged_onto_a_union() -> None:
    dp = Recorder()
    await dp.reconcile(make_state())
    writes = dp.take()
    assert [w[0] for w in writes] == ["ipset", "iptables-restore"]
    u = union_name("s:1", "s:2", "s:3")
    assert f"create {u} hash:net" in writes[0][1]
    for n in (1, 2, 3):
        assert f"add {u} 10.0.{n}.2/32" in writes[0][1]
    chain = [
        ln for ln in writes[1][1].splitlines() if ln.startswith(f"-A {endpoint_chain(IFACE, True)}")
    ]
    # Clear marks, one union Allow, one UDP Deny (duplicates dead), end of tier, final drop.
    assert len(chain) == 5
    assert f"--match-set {u} src" in chain[1] and "-m tcp --dport 80 " in chain[1]
    assert "-j ACCEPT" in chain[1] and "-p 17" in chain[2]
    assert "cali-pi-" not in writes[1][1]  # no per-policy chains without a Pass


async def test_constituent_change_updates_only_the_union_members() -> None:
    dp = Recorder()
    state = make_state()
    await dp.reconcile(state)
    dp.take()
    state.ipset_members["s:2"] = {"10.0.2.1/32", "10.0.9.9/32"}
    await dp.apply(state, StateDelta(ipsets={"s:2"}))
    writes = dp.take()
    assert [w[0] for w in writes] == ["ipset"]  # no rule rewritten
    u = union_name("s:1", "s:2", "s:3")
    lines = set(writes[0][1].splitlines())
    assert {f"add {u} 10.0.9.9/32 -exist", f"del {u} 10.0.2.2/32 -exist"} <= lines
    # A member another constituent still holds stays in the union.
    state.ipset_members["s:3"] = {"10.0.3.1/32", "10.0.1.1/32"}
    state.ipset_members["s:1"] = {"10.0.1.2/32"}
    await dp.apply(state, StateDelta(ipsets={"s:1", "s:3"}))
    assert f"del {u} 10.0.1.1/32 -exist" not in dp.take()[0][1]


async def test_regrouping_creates_new_union_before_rules_and_destroys_old_after() -> None:
    dp = Recorder()
    state = make_state()
    await dp.reconcile(state)
    dp.take()
    state.endpoints[IFACE] = EndpointPolicy(IFACE, "wep", (), ("p1", "p3"), (), ())
    await dp.apply(state, StateDelta(endpoints={IFACE}))
    writes = dp.take()
    old, new = union_name("s:1", "s:2", "s:3"), union_name("s:1", "s:3")
    assert [w[0] for w in writes] == ["ipset", "iptables-restore", "ipset"]
    assert f"create {new} hash:net" in writes[0][1]
    assert f"--match-set {new} src" in writes[1][1] and old not in writes[1][1]
    assert writes[2][1] == f"destroy {old}\n"
    # One policy left: no union at all, the plain selector set is used.
    state.endpoints[IFACE] = EndpointPolicy(IFACE, "wep", (), ("p1",), (), ())
    await dp.apply(state, StateDelta(endpoints={IFACE}))
    writes = dp.take()
    assert f"--match-set {ipset_name('s:1')} src" in writes[0][1]
    assert writes[-1][1] == f"destroy {new}\n"


async def test_pass_policy_keeps_its_chain_and_guards_later_rules() -> None:
    dp = Recorder()
    state = make_state()
    state.policies["p2"] = PolicyProgram("p2", inbound=(Rule(Action.PASS, protocol=UDP),))
    await dp.reconcile(state)
    text = dp.take()[1][1]
    rules = [ln for ln in text.splitlines() if ln.startswith(f"-A {endpoint_chain(IFACE, True)}")]
    pass_chain = policy_chain("p2", True)
    assert f":{pass_chain} - [0:0]" in text
    jump = next(i for i, ln in enumerate(rules) if f"-j {pass_chain}" in ln)
    # p1 before the jump is unguarded; p3 after it and the end-of-tier drop are guarded.
    assert "--match-set cali40s:" in rules[jump - 2] and "0x0/0x20000" not in rules[jump - 2]
    assert all("-m mark --mark 0x0/0x20000" in ln for ln in rules[jump + 1 : -1])
    assert "cali40u:" not in text  # p1 and p3 are in different segments: nothing merged


# -- in a kernel (own namespace) --------------------------------------------------------------


def _flavours() -> list[str]:
    return [f for f in ("iptables", "iptables-legacy") if shutil.which(f"{f}-restore")]


@pytest.fixture
def netns() -> str:  # type: ignore[misc]
    if os.geteuid() != 0 or shutil.which("ipset") is None:
        pytest.skip("needs root and ipset")
    name = f"ipt-u-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _ipset(ns: str, *args: str) -> str:
    argv = ["ip", "netns", "exec", ns, "ipset", *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("flavour", _flavours())
async def test_union_lifecycle_in_kernel(netns: str, flavour: str) -> None:
    dp = IptablesDataplane(f"/run/netns/{netns}", legacy=flavour.endswith("legacy"))
    fallbacks = 0
    reconcile = dp.reconcile

    async def counting(state: DataplaneState) -> int:
        nonlocal fallbacks
        fallbacks += 1
        return await reconcile(state)

    await dp.start()
    state = make_state()
    await dp.reconcile(state)
    dp.reconcile = counting  # type: ignore[method-assign]
    old = union_name("s:1", "s:2", "s:3")
    assert "10.0.2.2" in _ipset(netns, "list", old)
    state.ipset_members["s:2"] = {"10.0.2.7/32"}
    await dp.apply(state, StateDelta(ipsets={"s:2"}))
    members = _ipset(netns, "list", old)
    assert "10.0.2.7" in members and "10.0.2.2" not in members
    state.endpoints[IFACE] = EndpointPolicy(IFACE, "wep", (), ("p1", "p3"), (), ())
    await dp.apply(state, StateDelta(endpoints={IFACE}))
    names = _ipset(netns, "list", "-n").split()
    assert old not in names and union_name("s:1", "s:3") in names
    del state.endpoints[IFACE]
    await dp.apply(state, StateDelta(endpoints={IFACE}))
    assert not [n for n in _ipset(netns, "list", "-n").split() if n.startswith("cali40u:")]
    assert fallbacks == 0  # every step was accepted by the kernel as written
    assert await reconcile(state) == 0  # and the kernel matches the intended state
