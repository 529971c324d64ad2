"""The extra case files through `calico-lab conformance` (nftables + embedded datastore).

Each file is one run (about 2 minutes each): every TCP and UDP probe must pass, SCTP probes
may only be skipped with the kernel's reason, and the host namespace must be left as found.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lab.test_lab_conformance_public import run_conformance

pytestmark = pytest.mark.netns

HERE = Path(__file__).parent
FILES = [HERE / "cases-k8s-extra.json", HERE / "cases-calico-extra.json"]


@pytest.mark.parametrize("cases", FILES, ids=["kubernetes", "calico"])
def test_extra_cases_nftables_embedded(
    needs_services: None, lab_dir: Path, tmp_path: Path, cases: Path
) -> None:
    report = run_conformance(
        lab_dir, tmp_path, cases, "--dataplane", "nftables", "--datastore", "embedded"
    )
    expected = [str(c["id"]) for c in json.loads(cases.read_text())]
    assert [c["id"] for c in report["cases"]] == expected
    assert report["summary"]["failed"] == 0
