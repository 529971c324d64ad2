"""calico-ipam as the IPAM of the reference `bridge` CNI plugin: two pods, real traffic.

Everything runs inside namespaces this test creates: a "node" namespace holding the bridge
(the plugins are exec'd inside it) and two pod namespaces. calico-ipamd serves on a Unix
socket, which reaches across network namespaces because it lives in the filesystem.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from libcalico.datastore import Datastore
from tests.ipam.daemons import running_daemons
from tests.ipam.helpers import put_pool

REPO = Path(__file__).resolve().parents[2]
CNI_BIN = Path("/usr/lib/cni")
IPAM_PLUGIN = REPO / ".venv" / "bin" / "calico-ipam"

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
    pytest.mark.skipif(
        not (CNI_BIN / "bridge").exists(), reason="containernetworking-plugins not installed"
    ),
]


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[dict[str, str]]:
    tag = secrets.token_hex(3)
    names = {role: f"cpt-ipam-{role}-{tag}" for role in ("node", "pod1", "pod2")}
    created: list[str] = []
    try:
        for name in names.values():
            sh("ip", "netns", "add", name)
            created.append(name)
        yield names
    finally:
        # Deleting the namespaces removes the bridge and veths inside them.
        for name in created:
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def cni_path() -> Iterator[str]:
    """A plugin directory with calico-ipam, searched before the reference plugins."""
    tmp = tempfile.mkdtemp(prefix="cpt-ipam-cni-")
    try:
        os.symlink(IPAM_PLUGIN, os.path.join(tmp, "calico-ipam"))
        yield f"{tmp}:{CNI_BIN}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cni(
    command: str, node_ns: str, pod_ns: str, container_id: str, conf: dict[str, object], path: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": f"/var/run/netns/{pod_ns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": path,
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container_id}",
    }
    return subprocess.run(
        ["ip", "netns", "exec", node_ns, str(CNI_BIN / "bridge")],
        input=json.dumps(conf),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


ECHO_SERVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 7007)); srv.listen(1); print("ready", flush=True)
conn, peer = srv.accept(); conn.sendall(conn.recv(100) + b" from " + peer[0].encode())
"""
ECHO_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 7007), timeout=5); c.sendall(b"hello")
print(c.recv(200).decode())
"""


async def test_bridge_with_calico_ipam_add_traffic_del(
    embedded_config: object,
    namespaces: dict[str, str],
    cni_path: str,
) -> None:
    from libcalico.config import DatastoreConfig
    from libcalico.datastore import connect

    assert isinstance(embedded_config, DatastoreConfig)
    datastore: Datastore = await connect(embedded_config)
    env = {"DATASTORE_TYPE": "embedded", "CALICO_DATASTORE_PATH": embedded_config.path}
    try:
        await put_pool(datastore, "bridge-pool", "10.199.0.0/24", block_size=26)
        async with running_daemons(["cni-node"], env) as (daemon,):
            conf = {
                "cniVersion": "1.0.0",
                "name": "cpt-ipam-net",
                "type": "bridge",
                "bridge": f"cptbr{secrets.token_hex(3)}",
                "isGateway": False,
                "ipMasq": False,
                "ipam": {"type": "calico-ipam", "socket": daemon.socket},
            }
            node = namespaces["node"]
            ips = {}
            for pod in ("pod1", "pod2"):
                added = cni("ADD", node, namespaces[pod], f"cid-{pod}", conf, cni_path)
                assert added.returncode == 0, added.stdout + added.stderr
                result = json.loads(added.stdout)
                (ip,) = result["ips"]
                assert ip["address"].startswith("10.199.0.") and ip["address"].endswith("/26")
                ips[pod] = ip["address"].split("/")[0]
            assert ips["pod1"] != ips["pod2"]

            async with daemon.channel() as channel:
                stub = ipam_pb2_grpc.IpamStub(channel)
                held = await stub.GetAllocations(
                    ipam_pb2.GetAllocationsRequest(handle_id="cpt-ipam-net.cid-pod1")
                )
                assert [i.split("/")[0] for i in held.ips] == [ips["pod1"]]

                # Real traffic: pod1 connects to a TCP echo server in pod2.
                server = await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", namespaces["pod2"], sys.executable, "-c",
                    ECHO_SERVER, ips["pod2"],
                    stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                try:
                    assert server.stdout is not None
                    ready = await asyncio.wait_for(server.stdout.readline(), timeout=10)
                    assert ready.strip() == b"ready"
                    client = await asyncio.create_subprocess_exec(
                        "ip", "netns", "exec", namespaces["pod1"], sys.executable, "-c",
                        ECHO_CLIENT, ips["pod2"],
                        stdout=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                    reply, _ = await asyncio.wait_for(client.communicate(), timeout=10)
                    assert reply.decode().strip() == f"hello from {ips['pod1']}"
                finally:
                    if server.returncode is None:
                        server.kill()
                    await server.wait()

                for pod in ("pod1", "pod2"):
                    deleted = cni("DEL", node, namespaces[pod], f"cid-{pod}", conf, cni_path)
                    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
                # DEL is idempotent.
                again = cni("DEL", node, namespaces["pod1"], "cid-pod1", conf, cni_path)
                assert again.returncode == 0, again.stdout + again.stderr
                for pod in ("pod1", "pod2"):
                    gone = await stub.GetAllocations(
                        ipam_pb2.GetAllocationsRequest(handle_id=f"cpt-ipam-net.cid-{pod}")
                    )
                    assert list(gone.ips) == []
    finally:
        await datastore.close()
