"""Two nodes, each a network namespace running calico-bgpd and its BIRD, over one datastore.

The tests run in file order on one cluster and leave it healthy for the next; each checks the
kernel routes BIRD installed, calico-bgpd's status API, and BIRD's process identity.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from libcalico.syncer.api import Update
from services.bgp.synthetic import block_updates, resource_update
from tests.bgp.bgplab import CALICOCTL, BGPLab, alive, missing_requirements, wait_for

pytestmark = pytest.mark.netns

POOL = "10.200.0.0/16"
BLOCK_A = "10.200.0.0/26"
BLOCK_B = "10.200.1.0/26"
MESH_TO_B = "Mesh_10_77_0_12"
MESH_TO_A = "Mesh_10_77_0_11"


class Cluster:
    def __init__(self, lab: BGPLab) -> None:
        self.lab = lab
        self.extra = [lab.dir / f"extra{i}.conf" for i in range(2)]

    def start(self, i: int) -> None:
        self.lab.start_bgpd(i, {"CALICO_BGPD_EXTRA_CONFIG_FILE": str(self.extra[i])})

    def node_update(self, i: int, labels: dict[str, str] | None = None) -> list[Update]:
        spec = {"bgp": {"ipv4Address": f"{self.lab.address(i)}/24"}}
        meta = {"labels": labels} if labels else {}
        return [resource_update("nodes", "Node", self.lab.node(i), spec, **meta)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = missing_requirements()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    with BGPLab(2) as lab:
        c = Cluster(lab)
        for path in c.extra:
            path.write_text("")
        updates = [resource_update("ippools", "IPPool", "default", {"cidr": POOL, "blockSize": 26})]
        for i in range(2):
            updates += c.node_update(i)
        updates += block_updates(BLOCK_A, lab.node(0), {1: lab.node(0)})
        updates += block_updates(BLOCK_B, lab.node(1), {1: lab.node(1)})
        lab.write(updates)
        c.start(0)
        c.start(1)
        lab.wait_serving(0)
        lab.wait_serving(1)
        lab.wait_established(0, MESH_TO_B)
        try:
            yield c
        except BaseException:
            print(lab.log_tail(0, 40), lab.log_tail(1, 40), sep="\n")
            raise


def test_routes_status_and_node_status(cluster: Cluster) -> None:
    lab = cluster.lab
    route = lab.wait_route(0, BLOCK_B)
    assert route["gateway"] == lab.address(1) and route["protocol"] == "bird"
    assert lab.kernel_route(0, BLOCK_A)["type"] == "blackhole"
    back = lab.wait_route(1, BLOCK_A)
    assert back["gateway"] == lab.address(0)

    assert lab.health(0) == lab.health(1) == "SERVING"
    status = lab.status(0)
    assert (status.node, status.router_id, status.as_number) == ("node-0", "10.77.0.11", 64512)
    assert status.bird_running and status.bird_pid == lab.bird_pid(0)
    assert status.in_sync and status.last_apply.ok and status.bird_restarts == 0
    assert list(status.advertised) == [BLOCK_A]
    (peer,) = status.peers
    assert (peer.address, peer.port, peer.type, peer.protocol) == (
        "10.77.0.12", 179, "node-to-node mesh", MESH_TO_B,
    )  # fmt: skip
    assert peer.state == "Established" and peer.info == "Established" and peer.since
    assert peer.routes_imported == 1 and peer.routes_exported == 1

    env = {**os.environ, "CALICO_BGPD_SOCKET": str(lab.socket(0))}
    out = subprocess.run([CALICOCTL, "node", "status"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Calico process is running.\n")
    row = next(line for line in out.stdout.splitlines() if "10.77.0.12" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["10.77.0.12", "node-to-node mesh", "up"] and cells[4] == "Established"
    assert "Last config apply: ok" in out.stdout
    as_json = subprocess.run(
        [CALICOCTL, "node", "status", "-o", "json", "--socket", str(lab.socket(1))],
        capture_output=True, text=True,
    )  # fmt: skip
    reply = json.loads(as_json.stdout)
    assert reply["node"] == "node-1" and reply["peers"][0]["state"] == "Established"


def test_new_block_reaches_the_other_kernel(cluster: Cluster) -> None:
    lab = cluster.lab
    new_block = "10.200.2.0/26"
    started = time.monotonic()
    lab.write(block_updates(new_block, lab.node(1)))
    route = lab.wait_route(0, new_block)
    took = time.monotonic() - started
    print(f"new block -> other node's kernel in {took * 1000:.0f} ms")
    assert route["gateway"] == lab.address(1)
    assert lab.kernel_route(1, new_block)["type"] == "blackhole"
    assert new_block in lab.status(1).advertised


def test_unchanged_intent_writes_and_reloads_nothing(cluster: Cluster) -> None:
    lab = cluster.lab
    conf = lab.bird_dir(0) / "bird.conf"
    mtime = conf.stat().st_mtime_ns
    before = lab.status(0).last_apply
    lab.write(cluster.node_update(0, {"irrelevant": "label"}))
    after = lab.wait_status(
        0,
        lambda s: s.last_apply.finished_unix > before.finished_unix,
        "an apply after the label change",
    ).last_apply
    assert after.ok and not after.reloaded and after.config_sha256 == before.config_sha256
    assert conf.stat().st_mtime_ns == mtime


def test_rejected_config_keeps_bird_on_the_old_one(cluster: Cluster) -> None:
    lab = cluster.lab
    conf = lab.bird_dir(0) / "bird.conf"
    good = conf.read_text()
    since = lab.wait_established(0, MESH_TO_B).since
    cluster.extra[0].write_text("protocol bogus_thing {}\n")
    lab.bgpd[0].send_signal(signal.SIGHUP)  # re-read the extra configuration
    failed = lab.wait_status(0, lambda s: not s.last_apply.ok, "the rejection").last_apply
    assert "bogus_thing" in failed.error or "syntax error" in failed.error
    assert conf.read_text() == good
    # A datastore change meanwhile renders (and is refused) the same way; BIRD runs on.
    lab.write(block_updates("10.200.3.0/26", lab.node(0)))
    time.sleep(1.0)
    status = lab.status(0)
    assert not status.last_apply.ok and "10.200.3.0/26" not in status.advertised
    assert status.peers[0].state == "Established" and status.peers[0].since == since
    assert lab.route_to(1, "10.200.3.0/26") is None
    env = {**os.environ, "CALICO_BGPD_SOCKET": str(lab.socket(0))}
    out = subprocess.run([CALICOCTL, "node", "status"], capture_output=True, text=True, env=env)
    assert "Last config apply: FAILED" in out.stdout
    # Fixed: the pending change goes through.
    cluster.extra[0].write_text("")
    lab.bgpd[0].send_signal(signal.SIGHUP)
    lab.wait_route(1, "10.200.3.0/26")
    assert lab.status(0).last_apply.ok


def test_kill_bgpd_keeps_bird_then_adopts_it_without_flap(cluster: Cluster) -> None:
    lab = cluster.lab
    bird = lab.bird_pid(0)
    assert bird is not None
    since = lab.wait_established(0, MESH_TO_B).since
    conf = lab.bird_dir(0) / "bird.conf"
    mtime = conf.stat().st_mtime_ns
    time.sleep(1.1)  # a flap now would show as a later "since" (BIRD prints milliseconds)
    lab.stop_bgpd(0, signal.SIGKILL)
    time.sleep(1.0)
    assert alive(bird) and lab.route_to(1, BLOCK_A) and lab.route_to(0, BLOCK_B)
    cluster.start(0)
    status = lab.wait_serving(0)
    assert status.bird_pid == bird and status.bird_restarts == 0
    assert status.last_apply.ok and not status.last_apply.reloaded
    assert conf.stat().st_mtime_ns == mtime
    peer = lab.wait_established(0, MESH_TO_B)
    assert peer.since == since
    assert lab.wait_established(1, MESH_TO_A).since == lab.status(1).peers[0].since


def test_sigterm_leaves_bird_running(cluster: Cluster) -> None:
    lab = cluster.lab
    bird = lab.bird_pid(0)
    proc = lab.bgpd[0]
    lab.stop_bgpd(0, signal.SIGTERM)
    assert proc.returncode == 0
    assert bird is not None and alive(bird) and lab.route_to(1, BLOCK_A)
    cluster.start(0)
    assert lab.wait_serving(0).bird_pid == bird


def test_kill_bird_is_restarted_and_session_returns(cluster: Cluster) -> None:
    lab = cluster.lab
    old = lab.kill_bird(0)
    # While BIRD is down and restarting (in graceful restart recovery), no route blinks: the
    # kernel keeps node-0's routes and node-1 keeps node-0's block as stale.
    missing: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if lab.route_to(0, BLOCK_B) is None:
            missing.append("node-1's block on node-0")
        if lab.route_to(1, BLOCK_A) is None:
            missing.append("node-0's block on node-1")
        status = lab.status(0)
        peers = [p for p in status.peers if p.state == "Established"]
        if status.bird_running and status.bird_pid != old and peers:
            break
        time.sleep(0.05)
    assert not missing, missing
    status = lab.wait_status(0, lambda s: s.bird_running and s.bird_pid != old, "a new BIRD")
    assert status.bird_restarts == 1
    lab.wait_established(0, MESH_TO_B)
    lab.wait_established(1, MESH_TO_A)
    # A change after the restart still reaches the kernels (recovery has ended).
    lab.write(block_updates("10.200.4.0/26", lab.node(0)))
    assert lab.wait_route(1, "10.200.4.0/26")["gateway"] == lab.address(0)
    assert lab.wait_route(0, "10.200.4.0/26")["type"] == "blackhole"
    assert "BIRD exited; restarting" in lab.log_tail(0, 60)


def _bgp_listeners(lab: BGPLab, i: int) -> set[str]:
    """Local address:port of every socket listening on TCP 179 in node i's namespace."""
    out = subprocess.run(
        ["ip", "netns", "exec", lab.namespaces[i], "ss", "-ltnH", "sport", "= :179"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {line.split()[3] for line in out.stdout.splitlines() if line.strip()}


def test_bind_mode_node_ip_listens_on_the_node_address_only(cluster: Cluster) -> None:
    lab = cluster.lab
    wildcard = _bgp_listeners(lab, 0)
    assert lab.address(0) + ":179" not in wildcard and wildcard, wildcard
    config = [resource_update("bgpconfigurations", "BGPConfiguration", "default", {})]
    bound = [
        resource_update("bgpconfigurations", "BGPConfiguration", "default", {"bindMode": "NodeIP"})
    ]
    lab.write(bound)
    try:
        for i in (0, 1):
            wanted = {f"{lab.address(i)}:179"}

            def bound_to_node(i: int = i, wanted: set[str] = wanted) -> bool:
                return _bgp_listeners(lab, i) == wanted

            wait_for(bound_to_node, 15, f"node {i}'s BIRD listening on its address only")
        lab.wait_established(0, MESH_TO_B)
        lab.wait_established(1, MESH_TO_A)
    finally:
        lab.write(config)  # back to Calico's default for any test after this one

    def on_all_again() -> bool:
        return _bgp_listeners(lab, 0) == wildcard

    wait_for(on_all_again, 15, "listening on every address again")
    lab.wait_established(0, MESH_TO_B)
