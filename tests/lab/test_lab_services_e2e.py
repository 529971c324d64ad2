"""The public Services cases through `calico-lab conformance --services`, with Felix
programming the Services (issue 14). Every case runs on the combination CI runs every netpol
case on (kubernetes datastore, 3 nodes, BGP mesh, nftables); a sample runs on every other one
this file lists: nftables and iptables, one node and three, embedded, etcd, etcd beside an
API server (calico-kube-controllers copying Services and EndpointSlices into etcd), and the
kubernetes datastore through Typha. `CALICO_CONFORMANCE_FULL=1` runs every case on each.

The report is judged again here from its raw observations (svccases.judge on `results` and
`addresses`), not from the runner's own `pass` flags: every TCP and UDP probe must pass, SCTP
probes may only be skipped with the kernel's reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lab.conformance.svccases import judge, load_cases
from lab.prober import Observation
from tests.fixtures.shared import shared_dir
from tests.lab.kubelabkit import MODES, require_kube
from tests.lab.labkit import CALICO_LAB, REPO, host_snapshot, lab_namespaces

pytestmark = pytest.mark.netns

CASES = shared_dir() / "conformance" / "services" / "cases-public.json"
FULL = os.environ.get("CALICO_CONFORMANCE_FULL") == "1"
SAMPLE = [
    "svc-01-clusterip-tcp",
    "svc-02-clusterip-udp",
    "svc-06-no-endpoints-rejects",
    "svc-08-session-affinity-clientip",
    "svc-09-policy-deny-through-service",
]
SAMPLE_3_NODES = [*SAMPLE[:2], "svc-04-balancing-three-backends", "svc-11-nodeport-cluster-policy"]
SCTP = "SCTP is not supported by this kernel (EPROTONOSUPPORT)"


def rejudge(report: dict[str, Any]) -> list[str]:
    """Every probe that fails when judged from the raw observations alone, and every probe
    missing or skipped for a reason other than SCTP."""
    cases = {c.id: c for c in load_cases(CASES)}
    wrong: list[str] = []
    for case in report["cases"]:
        spec = cases[case["id"]]
        if case.get("skipped"):
            if not report["single_node_only"]:
                wrong.append(f"{case['id']}: skipped whole ({case['skipped']})")
            continue
        addresses = case["addresses"]
        assert len(case["steps"]) == len(spec.steps), case["id"]
        for s, (step, want) in enumerate(zip(case["steps"], spec.steps, strict=True)):
            assert len(step["probes"]) == len(want.probes), f"{case['id']} step {s}"
            for probe, expected in zip(step["probes"], want.probes, strict=True):
                where = f"{case['id']} step {s} {expected.raw}"
                assert probe["probe"] == expected.raw, where
                if "skipped" in probe:
                    if probe["skipped"] != SCTP or expected.protocol != "SCTP":
                        wrong.append(f"{where}: skipped ({probe['skipped']})")
                    continue
                results = [Observation(**r) for r in probe["observed"]["results"]]
                source = expected.source
                client = addresses["outside"] if source == "@outside" else addresses["pods"][source]
                ok, reason = judge(expected, results, client, addresses["nodes"])
                if not ok:
                    wrong.append(f"{where}: {reason} {probe.get('error', '')}")
    return wrong


def run(lab_dir: Path, tmp_path: Path, *options: str) -> dict[str, Any]:
    report_path = tmp_path / "services-report.json"
    before = host_snapshot()
    proc = subprocess.run(
        [
            *CALICO_LAB,
            "--state-dir",
            str(lab_dir),
            "conformance",
            "--services",
            str(CASES),
            "--report",
            str(report_path),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=REPO,
    )
    assert report_path.exists(), f"no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(report_path.read_text())
    assert report["format"] == "services-report/1"
    wrong = rejudge(report)
    assert not wrong, "\n".join(wrong) + f"\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab_namespaces(lab_dir) == []
    assert host_snapshot() == before
    return report


def cases_option(sample: list[str]) -> list[str]:
    return [] if FULL else [arg for case in sample for arg in ("--case", case)]


def test_every_public_services_case_kubernetes_nftables_three_nodes(
    needs_bgp: None, lab_dir: Path, tmp_path: Path
) -> None:
    """The one combination CI runs every case on."""
    require_kube("kubernetes")
    options = ("--nodes", "3", "--bgp", "mesh", "--dataplane", "nftables", *MODES["kubernetes"])
    report = run(lab_dir, tmp_path, *options)
    assert report["nodes"] == 3 and not report["single_node_only"]
    assert all(not c.get("skipped") for c in report["cases"])


@pytest.mark.parametrize(
    ("options", "sample"),
    [
        (("--dataplane", "nftables"), SAMPLE),
        (("--dataplane", "iptables"), SAMPLE),
        (("--dataplane", "nftables", "--datastore", "etcdv3", "--nodes", "3"), SAMPLE_3_NODES),
        (("--dataplane", "iptables", "--nodes", "3"), SAMPLE_3_NODES),
        (("--dataplane", "iptables", *MODES["etcd-kube-apiserver"]), SAMPLE),
        (("--dataplane", "nftables", *MODES["kubernetes"], "--typha"), SAMPLE),
    ],
    ids=[
        "nftables-embedded",
        "iptables-embedded",
        "nftables-etcd-3-nodes",
        "iptables-embedded-3-nodes",
        "iptables-etcd-kube-apiserver",
        "nftables-kubernetes-typha",
    ],
)
def test_public_services_sample(
    needs_bgp: None,
    lab_dir: Path,
    tmp_path: Path,
    options: tuple[str, ...],
    sample: list[str],
) -> None:
    if "--kube-apiserver" in options:
        require_kube("etcd-kube-apiserver")
    elif "kubernetes" in options:
        require_kube("kubernetes")
    report = run(lab_dir, tmp_path, *options, *cases_option(sample))
    three = "--nodes" in options
    assert report["nodes"] == (3 if three else 1)
    assert report["dataplane"] == options[1]
