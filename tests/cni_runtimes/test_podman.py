"""podman runs a container on a `calico` network (its CNI backend execs our plugin) and the
container reaches a "lab pod" (a namespace plumbed through the same plugin and Felix) over TCP;
after `podman rm`, the container's address and host veth are gone."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from cni_client.ipam_client import IpamClient
from tests.cni_runtimes import confine, podman
from tests.cni_runtimes.node import CalicoNode, calico_node, in_netns, missing_prerequisite
from tests.cni_runtimes.test_cnitool import CNITOOL, HANDLE_PREFIX, cnitool, cnitool_container_id


def _skip_reason() -> str:
    if not CNITOOL.exists():
        return f"cnitool not installed at {CNITOOL} (scripts/setup.sh installs it)"
    return missing_prerequisite() or confine.missing_tools() or podman.missing_tools()


pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason())]

PORT = 8080


@pytest.fixture
def node() -> Iterator[CalicoNode]:
    with calico_node(cni_version="1.0.0") as n:
        yield n


@pytest.fixture
def engine(node: CalicoNode) -> Iterator[podman.Podman]:
    p = podman.Podman(node)
    try:
        p.setup()
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def lab_pod(node: CalicoNode) -> Iterator[tuple[str, str, str]]:
    """A pod namespace on the calico network serving a token over HTTP; (netns, address,
    token)."""
    netns = node.add_pod_netns("lab")
    added = cnitool(node, "add", netns)
    assert added.returncode == 0, added.stdout + added.stderr + node.logs()
    address = json.loads(added.stdout)["ips"][0]["address"].split("/")[0]
    www = node.work / "www"
    www.mkdir()
    token = f"hello-from-lab-pod-{node.tag}"
    (www / "token").write_text(token + "\n")
    server = subprocess.Popen(
        in_netns(
            netns, str(podman.BUSYBOX), "httpd", "-f", "-p", f"{address}:{PORT}", "-h", str(www)
        )
    )
    try:
        _wait_listening(netns, PORT)
        yield netns, address, token
    finally:
        server.terminate()
        server.wait(timeout=10)
        cnitool(node, "del", netns)


def _wait_listening(netns: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(
            in_netns(netns, "ss", "-Htln"), capture_output=True, text=True, timeout=10
        ).stdout
        if f":{port} " in out:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} in {netns}")


def handles(node: CalicoNode) -> dict[str, list[str]]:
    with IpamClient(node.ipam_socket) as client:
        return dict(client.list_handles(HANDLE_PREFIX))


def test_podman_container_reaches_lab_pod(
    node: CalicoNode, engine: podman.Podman, lab_pod: tuple[str, str, str]
) -> None:
    lab_netns, address, token = lab_pod
    lab_handle = HANDLE_PREFIX + cnitool_container_id(lab_netns)
    name = f"cpt-rt-client-{node.tag}"
    # The image has busybox and sh only: applets are called through busybox. An HTTP request
    # by hand over `nc` (Debian's static busybox wget crashes in its resolver).
    script = (
        "busybox ip -o -4 addr show eth0 && "
        f"printf 'GET /token HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 5 {address} {PORT}"
    )
    ran = engine.run(
        "run", "--name", name, "--network", node.network, engine.image, "/bin/sh", "-c", script
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr + node.logs()
    assert token in ran.stdout
    own = ran.stdout.split(" inet ")[1].split("/")[0]
    assert own.startswith("10.231.0.") and own != address, ran.stdout

    container_id = engine.run("inspect", "--format", "{{.Id}}", name).stdout.strip()
    assert len(container_id) == 64
    # podman tore the network down when the container stopped; `podman rm` removes the rest.
    removed = engine.run("rm", name)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    # Only the lab pod is left: its handle and its veth.
    assert list(handles(node)) == [lab_handle]
    assert len(node.host_veths()) == 1
