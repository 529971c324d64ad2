"""The public network-policy conformance files through `calico-lab conformance` (issue 5).

Every case of both files runs on one dataplane/datastore pair (nftables + embedded); samples
run on iptables + etcd, iptables-legacy + embedded, and through Typha, which keeps the suite
inside CI's time budget. Every TCP and UDP probe must pass; SCTP probes may only be skipped,
with the kernel's reason.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.shared import CONFORMANCE_DIR
from tests.lab.labkit import CALICO_LAB, REPO, host_snapshot, lab_namespaces

pytestmark = pytest.mark.netns

K8S_CASES = CONFORMANCE_DIR / "cases-public.json"
CALICO_CASES = CONFORMANCE_DIR / "calico-cases-public.json"


def run_conformance(lab_dir: Path, tmp_path: Path, cases: Path, *options: str) -> dict[str, Any]:
    report_path = tmp_path / "report.json"
    before = host_snapshot()
    proc = subprocess.run(
        [
            *CALICO_LAB,
            "--state-dir",
            str(lab_dir),
            "conformance",
            "--cases",
            str(cases),
            "--report",
            str(report_path),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert report_path.exists(), f"no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(report_path.read_text())
    failed = [
        (case["id"], probe)
        for case in report["cases"]
        for probe in case["probes"]
        if probe["status"] == "failed"
    ]
    assert proc.returncode == 0 and not failed, f"{failed}\n{proc.stdout[-3000:]}{proc.stderr}"
    for case in report["cases"]:
        for probe in case["probes"]:
            if probe["status"] == "skipped":
                assert probe["protocol"] == "SCTP", (case["id"], probe)
                assert "SCTP" in probe["reason"], probe
    assert report["summary"]["passed"] > 0
    assert lab_namespaces(lab_dir) == []
    assert host_snapshot() == before
    return report


def case_ids(cases: Path) -> list[str]:
    return [str(case["id"]) for case in json.loads(cases.read_text())]


@pytest.mark.parametrize("cases", [K8S_CASES, CALICO_CASES], ids=["kubernetes", "calico"])
def test_every_public_case_nftables_embedded(
    needs_services: None, lab_dir: Path, tmp_path: Path, cases: Path
) -> None:
    report = run_conformance(
        lab_dir, tmp_path, cases, "--dataplane", "nftables", "--datastore", "embedded"
    )
    assert [c["id"] for c in report["cases"]] == case_ids(cases)
    print(f"{cases.name}: {report['summary']}")


SAMPLE = {
    K8S_CASES: [
        "tcp-17-should-allow-ingress-access-on-one-named-port",
        "tcp-35-should-enforce-except-clause-while-egress-access-to-server-i",
        "udp-03-should-enforce-policy-to-allow-traffic-only-from-a-pod-in-a",
    ],
    CALICO_CASES: ["calico-10-pass-in-egress-rules", "calico-34-namespaced-network-set"],
}


@pytest.mark.parametrize(
    "options",
    [
        ("--dataplane", "iptables", "--datastore", "etcdv3"),
        ("--dataplane", "iptables-legacy", "--datastore", "embedded"),
        ("--dataplane", "nftables", "--datastore", "etcdv3", "--typha"),
    ],
    ids=["iptables-etcd", "iptables-legacy-embedded", "nftables-etcd-typha"],
)
def test_sample_of_cases_on_other_pairs(
    needs_services: None, lab_dir: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    for cases, ids in SAMPLE.items():
        selected = [arg for case_id in ids for arg in ("--case", case_id)]
        report = run_conformance(lab_dir, tmp_path, cases, *options, *selected)
        assert sorted(c["id"] for c in report["cases"]) == sorted(ids)
