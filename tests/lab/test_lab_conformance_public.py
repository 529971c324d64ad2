"""The public network-policy conformance files through `calico-lab conformance` (issue 5).

CI runs every case of both files on one combination (test_lab_conformance_kube.py: the
kubernetes datastore, 3 nodes, nftables, BGP mesh) and SAMPLE on every other one, which keeps
the suite inside CI's time budget; `CALICO_CONFORMANCE_FULL=1` runs every case on each
combination (the full matrix, by hand). Every TCP and UDP probe must pass; SCTP probes may
only be skipped, with the kernel's reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.shared import CONFORMANCE_DIR
from tests.lab.labkit import CALICO_LAB, REPO, host_snapshot, lab_namespaces

pytestmark = pytest.mark.netns

K8S_CASES = CONFORMANCE_DIR / "cases-public.json"
CALICO_CASES = CONFORMANCE_DIR / "calico-cases-public.json"
FULL = os.environ.get("CALICO_CONFORMANCE_FULL") == "1"


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


SAMPLE = {
    K8S_CASES: [
        "tcp-17-should-allow-ingress-access-on-one-named-port",
        "tcp-35-should-enforce-except-clause-while-egress-access-to-server-i",
        "udp-03-should-enforce-policy-to-allow-traffic-only-from-a-pod-in-a",
    ],
    CALICO_CASES: ["calico-10-pass-in-egress-rules", "calico-34-namespaced-network-set"],
}


def public_cases(tmp_path: Path, every: bool) -> tuple[Path, list[str]]:
    """Both public files in one cases file (one lab for all of them): every case, or SAMPLE;
    and the ids the report must list, in order. Says which, so a log shows what ran."""
    cases = [
        case
        for path in (K8S_CASES, CALICO_CASES)
        for case in json.loads(path.read_text())
        if every or case["id"] in SAMPLE[path]
    ]
    ids = [str(case["id"]) for case in cases]
    assert len(set(ids)) == len(ids), "the public files share a case id"
    out = tmp_path / ("every.json" if every else "sample.json")
    out.write_text(json.dumps(cases))
    print(
        f"{'every case' if every else 'the sample'} of both public files: {len(ids)} cases"
        + ("" if every else " (CALICO_CONFORMANCE_FULL=1 runs every case)")
    )
    return out, ids


def run_public_cases(lab_dir: Path, tmp_path: Path, every: bool, *options: str) -> dict[str, Any]:
    """`calico-lab conformance` of public_cases() with `options`; every probe checked."""
    cases, ids = public_cases(tmp_path, every)
    report = run_conformance(lab_dir, tmp_path, cases, *options)
    assert [c["id"] for c in report["cases"]] == ids
    print(f"{' '.join(options)}: {report['summary']}")
    return report


@pytest.mark.parametrize(
    "options",
    [
        ("--dataplane", "nftables", "--datastore", "embedded"),
        ("--dataplane", "iptables", "--datastore", "etcdv3"),
        ("--dataplane", "iptables-legacy", "--datastore", "embedded"),
        ("--dataplane", "nftables", "--datastore", "etcdv3", "--typha"),
    ],
    ids=["nftables-embedded", "iptables-etcd", "iptables-legacy-embedded", "nftables-etcd-typha"],
)
def test_public_cases_on_one_node(
    needs_services: None, lab_dir: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    run_public_cases(lab_dir, tmp_path, FULL, *options)
