"""lab/tor.py against real peers: the ToR (BIRD or GoBGP) in a "net" namespace with a bridge,
a bare BIRD "node" (AS 64512) in a namespace of its own plugged into that bridge."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import netns, tor
from lab.processes import ProcessRecord, is_alive
from tests.tor.bgpkit import BareBird, Network, kernel_routes, random_suffix, wait_for

pytestmark = pytest.mark.netns

TOR_ASN = 65000
NODE_ASN = 64512
NODE_PREFIX = "10.201.0.0/24"


@dataclass
class Setup:
    kind: str
    state_dir: Path
    network: Network
    node_ns: str
    node_address: str
    node: BareBird
    record: ProcessRecord


@pytest.fixture(params=tor.TOR_KINDS)
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    if os.geteuid() != 0:
        print("SKIP: network namespaces need root")
        pytest.skip("network namespaces need root")
    kind: str = request.param
    suffix = random_suffix()
    # Short: Unix socket paths live under it (108-byte limit).
    state_dir = Path(f"/tmp/h3tor-{suffix}")
    network = Network(prefix=f"h3t-{suffix}", subnet="10.77.0")
    node: BareBird | None = None
    record: ProcessRecord | None = None
    made: Setup | None = None
    try:
        network.create()
        node_ns, node_address = network.add_host(1)
        node = BareBird(
            namespace=node_ns,
            directory=state_dir / "node",
            router_id=node_address,
            asn=NODE_ASN,
            peers=[(network.router_address, TOR_ASN)],
            originate=[NODE_PREFIX],
        ).start()
        with netns.inside(netns.netns_path(network.net)):
            record = tor.start_tor(
                kind, state_dir, TOR_ASN, network.router_address, [(node_address, NODE_ASN)]
            )
        made = Setup(kind, state_dir, network, node_ns, node_address, node, record)
        yield made
    finally:
        problems = []
        if made is not None:  # a test may have restarted the ToR
            record = made.record
        if record is not None and not tor.stop_tor(record):
            problems.append(f"ToR pid {record.pid} still alive")
        if node is not None and not node.stop():
            problems.append(f"node BIRD in {node.namespace} still alive")
        problems += [f"namespace {n} left" for n in network.close()]
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not problems, problems


def test_session_learn_announce_withdraw(setup: Setup) -> None:
    kind, state_dir = setup.kind, setup.state_dir
    router = setup.network.router_address

    wait_for(
        "the ToR's session to the node",
        lambda: tor.sessions(kind, state_dir) == {setup.node_address: "Established"},
    )

    # A prefix the node originates: learned with the node as next hop.
    wait_for(
        "the node's prefix in learned()",
        lambda: tor.learned(kind, state_dir).get(NODE_PREFIX) == [setup.node_address],
    )
    if kind == "bird":  # BIRD installs what it learns in the ToR namespace's kernel
        wait_for(
            "the node's prefix in the ToR namespace's kernel",
            lambda: kernel_routes(setup.network.net).get(NODE_PREFIX) == [setup.node_address],
        )

    # Originations reach the node's kernel with the ToR as next hop.
    tor.announce(kind, state_dir, ["10.202.0.0/24", "10.202.1.0/24"])
    assert tor.announced(state_dir) == ["10.202.0.0/24", "10.202.1.0/24"]
    wanted = {"10.202.0.0/24": [router], "10.202.1.0/24": [router]}
    wait_for(
        "the ToR's prefixes in the node's kernel",
        lambda: {p: h for p, h in kernel_routes(setup.node_ns).items() if p in wanted} == wanted,
    )

    # A partial withdrawal removes exactly what it names.
    tor.withdraw(kind, state_dir, ["10.202.0.0/24"])
    assert tor.announced(state_dir) == ["10.202.1.0/24"]
    wait_for(
        "10.202.0.0/24 to leave the node's kernel",
        lambda: "10.202.0.0/24" not in kernel_routes(setup.node_ns),
    )
    assert kernel_routes(setup.node_ns).get("10.202.1.0/24") == [router]

    # Withdrawing the rest leaves what the ToR learned alone.
    tor.withdraw(kind, state_dir, ["10.202.1.0/24", "10.203.0.0/24"])
    assert tor.announced(state_dir) == []
    wait_for(
        "10.202.1.0/24 to leave the node's kernel",
        lambda: "10.202.1.0/24" not in kernel_routes(setup.node_ns),
    )
    assert tor.learned(kind, state_dir).get(NODE_PREFIX) == [setup.node_address]

    assert tor.stop_tor(setup.record)
    assert not is_alive(setup.record)
    if kind == "bird":  # a stopping BIRD takes its kernel routes with it
        assert NODE_PREFIX not in kernel_routes(setup.network.net)


def test_ten_thousand_prefixes(setup: Setup) -> None:
    kind, state_dir = setup.kind, setup.state_dir
    wait_for(
        "the ToR's session to the node",
        lambda: tor.sessions(kind, state_dir).get(setup.node_address) == "Established",
    )
    prefixes = [f"10.{128 + i // 256}.{i % 256}.0/24" for i in range(10_000)]

    start = time.perf_counter()
    tor.announce(kind, state_dir, prefixes)
    announced_s = time.perf_counter() - start
    wait_for(
        "10,000 prefixes in the node's kernel",
        lambda: len(kernel_routes(setup.node_ns)) >= 10_000,
        timeout=60,
        interval=0.2,
    )
    arrived_s = time.perf_counter() - start
    assert set(prefixes) <= set(kernel_routes(setup.node_ns))

    start = time.perf_counter()
    tor.withdraw(kind, state_dir, prefixes)
    withdrawn_s = time.perf_counter() - start
    wait_for(
        "the 10,000 prefixes to leave the node's kernel",
        lambda: len(kernel_routes(setup.node_ns)) == 0,
        timeout=60,
        interval=0.2,
    )
    gone_s = time.perf_counter() - start
    print(
        f"{kind}: announce() {announced_s:.2f} s, in the node's kernel after {arrived_s:.2f} s;"
        f" withdraw() {withdrawn_s:.2f} s, gone after {gone_s:.2f} s"
    )


def test_restarted_tor_keeps_announcing(setup: Setup) -> None:
    """A ToR started again on the same state directory originates what it did before."""
    kind, state_dir = setup.kind, setup.state_dir
    tor.announce(kind, state_dir, ["10.204.0.0/24"])
    assert tor.stop_tor(setup.record)
    with netns.inside(netns.netns_path(setup.network.net)):
        setup.record = tor.start_tor(
            kind, state_dir, TOR_ASN, setup.network.router_address,
            [(setup.node_address, NODE_ASN)],
        )  # fmt: skip
    wait_for(
        "the restarted ToR's prefix in the node's kernel",
        lambda: kernel_routes(setup.node_ns).get("10.204.0.0/24") == [setup.network.router_address],
        timeout=30,
    )
