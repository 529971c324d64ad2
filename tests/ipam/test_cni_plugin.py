"""The calico-ipam CNI plugin as a process: netconf in, result or CNI error out."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from calico.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from cni_client import wire
from cni_client.install import install
from libcalico.datastore import Datastore
from tests.ipam.daemons import Daemon, running_daemons
from tests.ipam.helpers import put_pool

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / ".venv" / "bin" / "calico-ipam"


def plugin(command: str, conf: dict[str, Any] | str, **env: str) -> tuple[int, Any]:
    stdin = conf if isinstance(conf, str) else json.dumps(conf)
    proc = subprocess.run(
        [str(PLUGIN)],
        input=stdin,
        env={"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": command, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def test_version_and_config_errors(tmp_path: Path) -> None:
    status, out = plugin("VERSION", "")
    assert status == 0 and "1.0.0" in out["supportedVersions"]
    status, out = plugin("ADD", "{not json", CNI_CONTAINERID="c1")
    assert status == 1 and out["code"] == 6
    status, out = plugin("ADD", {"cniVersion": "9.9.9", "name": "n"}, CNI_CONTAINERID="c1")
    assert status == 1 and out["code"] == 1 and "9.9.9" in out["msg"]
    conf = {"cniVersion": "1.0.0", "name": "n", "ipam": {"socket": str(tmp_path / "none.sock")}}
    status, out = plugin("ADD", conf, CNI_CONTAINERID="c1")
    assert status == 1 and out["code"] == 11 and "none.sock" in out["msg"]
    status, out = plugin("ADD", {**conf, "ipam": {"assign_ipv4": "maybe"}}, CNI_CONTAINERID="c")
    assert status == 1 and out["code"] == 7 and "maybe" in out["msg"]


async def test_dual_stack_add_del_and_requested_ip(
    datastore: Datastore, datastore_env: dict[str, str]
) -> None:
    await put_pool(datastore, "v4", "10.5.0.0/24", block_size=28)
    await put_pool(datastore, "v6", "fd00:5::/120", block_size=124)
    async with running_daemons(["node-a"], datastore_env) as (daemon,):
        conf = {
            "cniVersion": "0.3.1",
            "name": "k8s-pod-network",
            "type": "calico",
            "ipam": {
                "type": "calico-ipam",
                "socket": daemon.socket,
                "assign_ipv4": "true",
                "assign_ipv6": "true",
                "ipv4_pools": ["v4"],
            },
        }
        status, out = plugin("ADD", conf, CNI_CONTAINERID="abc", CNI_ARGS="K8S_POD_NAME=p")
        assert status == 0, out
        versions = sorted(ip["version"] for ip in out["ips"])
        assert versions == ["4", "6"]
        status, out = plugin(
            "ADD",
            {**conf, "cniVersion": "1.0.0"},
            CNI_CONTAINERID="fixed",
            CNI_ARGS="IgnoreUnknown=1;IP=10.5.0.200",
        )
        assert status == 0, out
        assert out["ips"] == [{"address": "10.5.0.200/28"}]
        # The same address again: refused, with the daemon's message.
        status, out = plugin("ADD", conf, CNI_CONTAINERID="dup", CNI_ARGS="IP=10.5.0.200")
        assert status == 1 and "already allocated" in out["msg"]
        for cid in ("abc", "fixed", "abc"):
            status, out = plugin("DEL", conf, CNI_CONTAINERID=cid)
            assert status == 0 and out is None
    store_handles = await datastore.list("/calico/ipam/v2/handle/")
    assert store_handles.items == []


def test_launcher_imports_only_builtins(tmp_path: Path) -> None:
    """The `-SE` launcher runs calico-ipam: an ADD (against no daemon) walks the whole import
    graph without json, grpc, protobuf or typing."""
    (path,) = install(tmp_path, ("calico-ipam",))
    probe = tmp_path / "probe"
    probe.write_text(
        path.read_text().replace(
            "sys.exit(main())",
            "rc = main()\nimport sys as s\ns.stderr.write(repr(sorted(s.modules)))\ns.exit(rc)",
        )
    )
    probe.chmod(0o755)
    conf = {"cniVersion": "1.0.0", "name": "n", "ipam": {"socket": str(tmp_path / "i.sock")}}
    proc = subprocess.run(
        [str(probe)],
        input=json.dumps(conf).encode(),
        env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "PYTHONPATH": "/nonexistent"},
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 11, proc.stdout
    modules = set(ast.literal_eval(proc.stderr.decode()))
    assert "site" not in modules
    heavy = {"json", "re", "typing", "socket", "grpc", "google", "dataclasses", "enum", "asyncio"}
    assert heavy.isdisjoint(modules), heavy & modules
    assert {"cni_client.grpc_lite", "cni_client.wire", "cni_client.ipam_client"} <= modules


def test_wire_matches_the_generated_ipam_messages() -> None:
    attrs = {"node": "n1", "pod": "p"}
    assert ipam_pb2.AssignIPRequest.FromString(
        wire.assign_ip_request("10.0.0.7", "h", attrs)
    ) == ipam_pb2.AssignIPRequest(ip="10.0.0.7", handle_id="h", attributes=attrs)
    reply = ipam_pb2.AssignIPResponse(ip="10.0.0.7/26").SerializeToString()
    assert wire.assign_ip_response(reply) == "10.0.0.7/26"
    assert ipam_pb2.ListHandlesRequest.FromString(
        wire.list_handles_request("k8s-pod-network.")
    ) == ipam_pb2.ListHandlesRequest(handle_prefix="k8s-pod-network.")
    Handle = ipam_pb2.ListHandlesResponse.Handle
    listed = ipam_pb2.ListHandlesResponse(
        handles=[Handle(handle_id="a", ips=["10.0.0.1/26", "fd00::1/122"]), Handle(handle_id="b")]
    )
    assert wire.list_handles_response(listed.SerializeToString()) == [
        ("a", ["10.0.0.1/26", "fd00::1/122"]),
        ("b", []),
    ]


def test_status_without_daemon(tmp_path: Path) -> None:
    conf = {"cniVersion": "1.1.0", "name": "n", "ipam": {"socket": str(tmp_path / "x.sock")}}
    status, out = plugin("STATUS", conf)
    assert status == 1 and out["code"] == 50 and "x.sock" in out["msg"]
    status, out = plugin("GC", {**conf, "cniVersion": "1.0.0"})
    assert status == 1 and out["code"] == 1 and "GC" in out["msg"]


async def test_check_status_and_gc_against_calico_ipamd(
    datastore: Datastore, datastore_env: dict[str, str]
) -> None:
    await put_pool(datastore, "gc", "10.6.0.0/24", block_size=26)
    async with running_daemons(["node-a", "node-b"], datastore_env) as (node_a, node_b):

        def conf(daemon: Daemon, network: str = "k8s-pod-network") -> dict[str, Any]:
            return {
                "cniVersion": "1.1.0",
                "name": network,
                "ipam": {"type": "calico-ipam", "socket": daemon.socket},
            }

        added = {}
        for cid in ("keep", "stale"):
            status, out = plugin("ADD", conf(node_a), CNI_CONTAINERID=cid)
            assert status == 0, out
            added[cid] = out
        # Same network on another node, and another network on this node: not ours to collect.
        assert plugin("ADD", conf(node_b), CNI_CONTAINERID="elsewhere")[0] == 0
        assert plugin("ADD", conf(node_a, "other-net"), CNI_CONTAINERID="stale")[0] == 0

        assert plugin("STATUS", conf(node_a)) == (0, None)
        check = {**conf(node_a), "prevResult": added["keep"]}
        assert plugin("CHECK", check, CNI_CONTAINERID="keep") == (0, None)
        status, out = plugin("CHECK", check, CNI_CONTAINERID="stale")
        assert status == 1 and out["code"] == 102 and "no longer holds" in out["msg"]

        async with node_a.channel() as channel:
            stub = ipam_pb2_grpc.IpamStub(channel)
            listed = await stub.ListHandles(
                ipam_pb2.ListHandlesRequest(handle_prefix="k8s-pod-network.")
            )
            assert [(h.handle_id, list(h.ips)) for h in listed.handles] == [
                ("k8s-pod-network.keep", [added["keep"]["ips"][0]["address"]]),
                ("k8s-pod-network.stale", [added["stale"]["ips"][0]["address"]]),
            ]
            every = await stub.ListHandles(ipam_pb2.ListHandlesRequest())
            assert {h.handle_id for h in every.handles} == {
                "k8s-pod-network.keep",
                "k8s-pod-network.stale",
                "other-net.stale",
            }

            gc = {**conf(node_a), "cni.dev/valid-attachments": [{"containerID": "keep"}]}
            assert plugin("GC", gc) == (0, None)
            remaining = await stub.ListHandles(ipam_pb2.ListHandlesRequest())
            assert {h.handle_id for h in remaining.handles} == {
                "k8s-pod-network.keep",
                "other-net.stale",
            }
        async with node_b.channel() as channel:
            stub = ipam_pb2_grpc.IpamStub(channel)
            theirs = await stub.GetAllocations(
                ipam_pb2.GetAllocationsRequest(handle_id="k8s-pod-network.elsewhere")
            )
            assert len(theirs.ips) == 1
