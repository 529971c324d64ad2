"""The conformance runner end to end on a mini case file whose expectations need no policy
engine: everything allowed (passes), SCTP (skipped, with the reason), and a deliberately wrong
expectation (fails, with the wrong pairs). Steps exercise apply with placeholders, delete and
label changes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.lab.labkit import CALICO_LAB, REPO, host_snapshot, lab_namespaces

pytestmark = pytest.mark.netns

NAMESPACES = {ns: {"ns": ns, "kubernetes.io/metadata.name": ns} for ns in ("x", "y", "z")}
NETWORK_SET = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "NetworkSet",
    "metadata": {"name": "b-only", "namespace": "x", "labels": {"set": "b"}},
    "spec": {"nets": ["{{hostcidr:x/b}}", "{{supernet:x/a:8}}"]},
}
CASES: list[dict[str, Any]] = [
    {
        "id": "allow-all",
        "namespaces": NAMESPACES,
        "steps": [
            {
                "apply": [NETWORK_SET],
                "probes": [
                    {"port": 80, "protocol": "TCP", "default": True, "differ": []},
                    {"port": 81, "protocol": "UDP", "default": True, "differ": []},
                ],
            },
            {
                "delete": [
                    {
                        "apiVersion": "projectcalico.org/v3",
                        "kind": "NetworkSet",
                        "metadata": {"name": "b-only", "namespace": "x"},
                    }
                ],
                "label_changes": [
                    {
                        "kind": "namespace",
                        "target": "y",
                        "set": {"team": "blue"},
                        "labels_after": {**NAMESPACES["y"], "team": "blue"},
                    },
                    {
                        "kind": "pod",
                        "target": "x/b",
                        "set": {"pod": "bb"},
                        "labels_after": {"pod": "bb"},
                    },
                ],
                "probes": [{"port": 80, "protocol": "SCTP", "default": True, "differ": []}],
            },
        ],
    },
    {
        "id": "wrong-on-purpose",
        "namespaces": NAMESPACES,
        "steps": [
            {
                "probes": [
                    {
                        "port": 80,
                        "protocol": "UDP",
                        "default": True,
                        "differ": [["x/a", "y/b"], ["z/c", "x/a"]],
                    },
                ]
            }
        ],
    },
]


def _run(cases: Path, out: Path, state_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *CALICO_LAB,
            "--state-dir",
            str(state_dir),
            "conformance",
            "--cases",
            str(cases),
            "--report",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=REPO,
    )


def test_conformance_report(needs_services: None, lab_dir: Path, tmp_path: Path) -> None:
    before = host_snapshot()
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(CASES))
    out = tmp_path / "report.json"

    passing = _run(cases, out, lab_dir, "--case", "allow-all")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    report = json.loads(out.read_text())
    assert report["summary"] == {"passed": 2, "failed": 0, "skipped": 1}, report
    (case,) = report["cases"]
    assert case["id"] == "allow-all" and case["status"] == "passed"
    steps = [(p["step"], p["port"], p["protocol"], p["status"]) for p in case["probes"]]
    assert steps == [(0, 80, "TCP", "passed"), (0, 81, "UDP", "passed"), (1, 80, "SCTP", "skipped")]
    assert "SCTP" in case["probes"][2]["reason"]
    assert not lab_dir.exists()

    failing = _run(cases, out, lab_dir, "--deadline", "1")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    report = json.loads(out.read_text())
    assert report["summary"] == {"passed": 2, "failed": 1, "skipped": 1}
    wrong_case = report["cases"][1]
    assert wrong_case["status"] == "failed"
    (probe,) = wrong_case["probes"]
    assert probe["status"] == "failed" and probe["reason"]
    assert sorted(map(tuple, probe["wrong"])) == [
        ("x/a", "y/b", False, True),
        ("z/c", "x/a", False, True),
    ]
    assert not lab_dir.exists()
    assert lab_namespaces(lab_dir) == []
    assert host_snapshot() == before


def test_public_policy_cases_pass_on_iptables(
    needs_services: None, lab_dir: Path, tmp_path: Path
) -> None:
    """Two public cases with real policy (one with a pod relabel), Felix on iptables."""
    out = tmp_path / "report.json"
    cases = Path("/work/shared/conformance/netpol/calico-cases-public.json")
    if not cases.exists():
        print(f"SKIP: {cases} not present on this machine")
        pytest.skip(f"{cases} not present")
    result = _run(
        cases,
        out,
        lab_dir,
        "--dataplane",
        "iptables",
        "--case",
        "calico-04-order-lower-first-deny-vs-allow",
        "--case",
        "calico-13-selector-expressions-and-pod-relabel",
    )
    report = json.loads(out.read_text())
    assert result.returncode == 0, json.dumps(report, indent=1)[:4000] + result.stderr
    assert report["summary"] == {"passed": 4, "failed": 0, "skipped": 0}
    assert not lab_dir.exists()
