"""`calico-lab up --typha`: Felix reads the datastore through a calico-typha, and policy still
works that way (issue 6: Felix from the previous issues runs through Typha)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.lab.labkit import host_snapshot, lab_namespaces, make_cli

pytestmark = pytest.mark.netns

DENY_INGRESS_TO_B = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-b, namespace: y}
spec:
  selector: app == 'b'
  types: [Ingress]
  ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]
"""


def test_felix_reads_through_typha(needs_services: None, lab_dir: Path, tmp_path: Path) -> None:
    before = host_snapshot()
    cli = make_cli(lab_dir)
    cli("up", "--typha", "--datastore", "etcdv3")
    status = json.loads(cli("status", "--json").stdout)
    typha = status["typha"]
    assert "error" not in typha, typha
    # One datastore watch however many clients; this node's Felix is one of them, in sync.
    assert typha["datastore_watches"] == 1
    felix_clients = [c for c in typha["clients"] if c["syncer_type"] == "felix"]
    assert [c["node"] for c in felix_clients] == ["node-1"]
    assert felix_clients[0]["in_sync"]

    cli("pod", "run", "x/a", "--labels", "app=a", "--serve", "tcp:80")
    cli("pod", "run", "y/b", "--labels", "app=b", "--serve", "tcp:80")
    assert cli("probe", "x/a", "y/b", "--port", "80", "--protocol", "tcp").returncode == 0
    policy = tmp_path / "deny.yaml"
    policy.write_text(DENY_INGRESS_TO_B)
    cli("calicoctl", "apply", "-f", str(policy))
    # The policy reached Felix only through Typha's stream: the probe turns to blocked.
    deadline = time.monotonic() + 10
    while True:
        blocked = cli("probe", "x/a", "y/b", "--port", "80", "--protocol", "tcp", check=False)
        if blocked.returncode != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert cli("probe", "y/b", "x/a", "--port", "80", "--protocol", "tcp").returncode == 0
    cli("down")
    assert lab_namespaces(lab_dir) == []
    assert host_snapshot() == before
