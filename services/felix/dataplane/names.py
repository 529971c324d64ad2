"""Kernel names of Felix's chains and sets (short enough for iptables and ipset)."""

from __future__ import annotations

from libcalico.selector import make_unique_id

MARK_ACCEPT = 0x10000
MARK_PASS = 0x20000
MARK_MASK = 0x30000
# Every rule Felix writes carries this comment prefix plus a hash of the rule.
RULE_TAG = "cali:"
LOG_PREFIX = "calico-packet: "


def _hash(kind: str, content: str, length: int) -> str:
    return make_unique_id(kind, content).split(":", 1)[1][:length]


def ipset_name(set_id: str) -> str:
    """``cali40s:<hash>`` (selector sets) / ``cali40n:<hash>`` (named ports), 30 chars."""
    kind, _, digest = set_id.partition(":")
    return f"cali40{kind}:{digest[:22]}"


def nft_set_name(set_id: str) -> str:
    kind, _, digest = set_id.partition(":")
    return f"{kind}-{digest[:22]}"


def policy_chain(policy_id: str, inbound: bool, profile: bool = False) -> str:
    """``cali-pi-<hash>`` / ``cali-po-<hash>``; profiles ``cali-pri-`` / ``cali-pro-``."""
    tag = ("pri" if inbound else "pro") if profile else ("pi" if inbound else "po")
    return f"cali-{tag}-{_hash('p', policy_id, 19)}"


def endpoint_chain(interface: str, inbound: bool) -> str:
    """``cali-tw-<if>`` (to the workload: ingress) / ``cali-fw-<if>`` (from it: egress)."""
    return f"cali-{'tw' if inbound else 'fw'}-{interface}"


def rule_tag(text: str) -> str:
    return RULE_TAG + _hash("r", text, 16)
