"""`calicoctl node status`: formatting a BGPStatusReply, and a socket nobody answers on.

The command against a live calico-bgpd is exercised in tests/bgp/test_bgpd_cluster.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from calico.bgp.v1 import bgp_pb2
from calicoctl.main import main
from calicoctl.node import format_status, peer_state, status_json

REPLY = bgp_pb2.BGPStatusReply(
    node="node-1",
    router_id="10.66.0.11",
    as_number=64512,
    bird_running=True,
    bird_pid=42,
    peers=[
        bgp_pb2.Peer(
            address="10.66.0.12",
            port=179,
            type="node-to-node mesh",
            protocol="Mesh_10_66_0_12",
            as_number=64512,
            state="Established",
            since="16:01:02.345",
            info="Established",
        ),
        bgp_pb2.Peer(
            address="10.66.0.1",
            port=1790,
            type="global",
            protocol="Global_10_66_0_1_port_1790",
            as_number=65000,
            state="Active",
            since="16:01:03.000",
            info="Active Socket: Connection refused",
            last_error="Socket: Connection refused",
        ),
    ],
    last_apply=bgp_pb2.ConfigApply(
        ok=True, finished_unix=1_700_000_000.0, duration_seconds=0.012, config_sha256="ab" * 32
    ),
    advertised=["10.200.0.0/26"],
)


def test_table_like_calicos() -> None:
    text = format_status(REPLY)
    lines = text.splitlines()
    assert lines[0] == "Calico process is running."
    assert lines[2] == "IPv4 BGP status"
    assert lines[3] == lines[5] == lines[8]
    assert lines[3].startswith("+--") and lines[3].endswith("-+")
    header = [c.strip() for c in lines[4].strip("|").split("|")]
    assert header == ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"]
    mesh = [c.strip() for c in lines[6].strip("|").split("|")]
    assert mesh == ["10.66.0.12", "node-to-node mesh", "up", "16:01:02", "Established"]
    tor = [c.strip() for c in lines[7].strip("|").split("|")]
    assert tor == [
        "10.66.0.1:1790",
        "global",
        "active",
        "16:01:03",
        "Active Socket: Connection refused",
    ]
    assert "No IPv6 peers found." in text
    assert "Last config apply: ok at" in text and "sha256 abababababab" in text


def test_failed_apply_and_no_peers() -> None:
    reply = bgp_pb2.BGPStatusReply()
    reply.CopyFrom(REPLY)
    del reply.peers[:]
    reply.last_apply.ok = False
    reply.last_apply.error = "bird: bird.conf.new:7:1 syntax error"
    reply.note = "node node-1 has no spec.bgp.ipv4Address"
    text = format_status(reply)
    assert "No IPv4 peers found." in text
    assert "Last config apply: FAILED" in text and "syntax error" in text
    assert "Note: node node-1 has no spec.bgp.ipv4Address" in text


def test_state_column() -> None:
    assert peer_state(bgp_pb2.Peer(state="Established")) == "up"
    assert peer_state(bgp_pb2.Peer(state="OpenSent")) == "opensent"
    assert peer_state(bgp_pb2.Peer()) == "unknown"


def test_json_has_every_field() -> None:
    data = status_json(REPLY)
    assert data["peers"][1]["last_error"] == "Socket: Connection refused"
    assert data["bird_restarts"] == 0 and data["last_apply"]["reloaded"] is False
    json.dumps(data)


def test_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    socket = tmp_path / "nobody.sock"
    assert main(["node", "status", "--socket", str(socket)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Calico process is not running.")


def test_console_script_help() -> None:
    out = subprocess.run(
        [str(Path(__file__).resolve().parents[2] / ".venv/bin/calicoctl"), "node", "status", "-h"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "--socket" in out.stdout
