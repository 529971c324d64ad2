"""docker-compose.yml runs under podman-compose: two nodes (felix, ipamd, bgpd sharing each
node container's namespace) peer over BGP; pods made by the `calico` CNI plugin (installed onto
the host by the calico-cni image) reach each other across nodes; a policy applied with calicoctl
is enforced; one pod ADD is one trace across the plugin, calico-ipamd and calico-felix at the
OTLP receiver; killing Felix, then bgpd, and starting them again keeps pods connected and policy
enforced, and new pods work; `down` leaves no container, network, bridge, namespace or link."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose import composekit
from tests.compose.composekit import Cluster
from tests.images import imagekit

_SKIP = composekit.missing_prerequisite()
if _SKIP:
    print(f"tests/compose: skipped: {_SKIP}", file=sys.stderr)
pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(_SKIP), reason=_SKIP)]

POLICY = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "NetworkPolicy",
    "metadata": {"name": "b-from-a-only", "namespace": "ns1"},
    "spec": {
        "selector": "app == 'b'",
        "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"selector": "app == 'a'"}}],
    },
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    build_s = imagekit.build_images(conf=imagekit.containers_conf(tmp_path))
    print(f"scripts/build-images.sh: {build_s:.1f} s")
    composekit.ensure_shared_netns_dir()
    c = composekit.new_cluster(tmp_path)
    try:
        started = time.monotonic()
        up = c.compose("up", "-d")
        assert up.returncode == 0, f"podman-compose up: {up.stdout}{up.stderr}"
        c.bridge = composekit.network_bridge(c)
        for node in composekit.NODES:
            c.wait_healthy(node)
        print(f"up and healthy in {time.monotonic() - started:.1f} s")
        yield c
    finally:
        c.remove_pods()
        c.down()
        shutil.rmtree(c.run_dir, ignore_errors=True)


def _one_trace(cluster: Cluster, trace_id: str, timeout_s: float = 15) -> dict[str, str]:
    """service -> span name of the spans in this trace, once plugin, ipamd and felix are in."""
    deadline = time.monotonic() + timeout_s
    want = {"calico-cni-plugin", "calico-ipamd", "calico-felix"}
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = {s["service"]: s["name"] for s in cluster.spans() if s["trace_id"] == trace_id}
        if want <= found.keys():
            return found
        time.sleep(0.3)
    raise AssertionError(f"trace {trace_id}: only {found}")


def test_compose_cluster(cluster: Cluster) -> None:
    # The calico-cni image installs the plugins, as an init container would onto a node.
    cluster.cni_bin.mkdir()
    version = imagekit.project_version()
    cluster.podman(
        "run", "--rm", "--network=none", "--cap-drop=all",
        "--volume", f"{cluster.cni_bin}:/host/opt/cni/bin",
        "--volume", f"{cluster.cni_bin}:/host/etc/cni/net.d",
        "--env", f"CNI_HOST_BIN_DIR={cluster.cni_bin}",
        f"{imagekit.PREFIX}/calico-cni:{version}",
    )  # fmt: skip
    assert (cluster.cni_bin / "calico").exists()

    print(f"BGP established in {cluster.wait_bgp():.1f} s")
    # etcd serves mutual TLS only: without the client certificate calicoctl is refused.
    refused = subprocess.run(
        ["podman", "exec", "-e", "ETCD_CERT_FILE=", "-e", "ETCD_KEY_FILE=",
         cluster.container("typha"), "calicoctl", "get", "nodes"],
        env=cluster.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "set ETCD_CERT_FILE and ETCD_KEY_FILE" in refused.stderr, refused.stderr
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}}])

    # Pods: a and c on node-1, b on node-2; each ADD in a trace of its own.
    traces = {name: secrets.token_hex(16) for name in ("a", "b", "c")}
    placement = {"a": "node-1", "b": "node-2", "c": "node-1"}
    for name, node in placement.items():
        parent = f"00-{traces[name]}-{secrets.token_hex(8)}-01"
        cluster.add_pod(name, node, {"app": name}, traceparent=parent)

    print(f"a -> b across nodes after {cluster.wait_ping('a', 'b', True):.1f} s")
    cluster.wait_ping("b", "a", True)
    cluster.wait_ping("c", "b", True)

    for name, trace_id in traces.items():
        spans = _one_trace(cluster, trace_id)
        assert spans["calico-cni-plugin"] == "cni ADD", spans
        assert spans["calico-ipamd"].endswith("AutoAssign"), spans
        assert spans["calico-felix"].endswith("SetupEndpoint"), spans
        print(f"pod {name}: one trace {trace_id[:8]}.. across {sorted(spans)}")

    # Policy: b accepts only a; c (on a's node) is cut off, a still gets through.
    cluster.apply([POLICY])
    print(f"policy enforced after {cluster.wait_ping('c', 'b', False):.1f} s")
    assert cluster.ping("a", "b", count=2)

    # Felix killed and started again: pods stay connected, policy stays, new pods work.
    for service in ("felix-1", "felix-2"):
        cluster.podman("kill", cluster.container(service))
        cluster.podman("start", cluster.container(service))
    for node in composekit.NODES:
        cluster.wait_healthy(node, ("felix.sock",))
    assert cluster.ping("a", "b", count=2)
    assert not cluster.ping("c", "b", count=2)
    cluster.add_pod("d", "node-2", {"app": "a"})  # labelled like a: allowed into b
    cluster.wait_ping("d", "b", True)
    cluster.wait_ping("d", "c", True)

    # bgpd (and its BIRD) killed and started again: sessions and routes come back.
    cluster.podman("kill", cluster.container("bgpd-1"))
    cluster.podman("start", cluster.container("bgpd-1"))
    cluster.wait_healthy("node-1", ("bgpd.sock",))
    print(f"BGP re-established in {cluster.wait_bgp():.1f} s after bgpd-1 restart")
    cluster.wait_ping("a", "b", True)
    cluster.wait_ping("c", "d", True)
    assert not cluster.ping("c", "b", count=2)

    # CNI DEL of every pod, then down: nothing left behind.
    problems = cluster.remove_pods()
    assert not problems, problems
    ports = composekit.bridge_ports(cluster.bridge)
    assert len(ports) >= 5, ports  # etcd, otlp-receiver, typha, node-1, node-2
    started = time.monotonic()
    down = cluster.down(fallback=False)
    assert down.returncode == 0, f"podman-compose down: {down.stdout}{down.stderr}"
    print(f"down in {time.monotonic() - started:.1f} s")
    # podman's CNI backend leaves the network's bridge behind: down() removes it, as a user
    # would have to; everything else must be gone after podman-compose itself.
    assert cluster.leftovers(ports) == []
