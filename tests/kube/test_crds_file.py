"""k8s/crds/calico-crds.yaml: fresh, complete for the project's kinds, structural and open."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.apiserver import CALICO_CRDS_FILE
from libcalico.resources.crds import (
    CALICO_CRDS,
    CRD_GROUP,
    V3_KINDS_NOT_CRDS,
    crd_for_kind,
)
from libcalico.resources.kinds import all_kinds

ROOT = Path(__file__).resolve().parents[2]


def _documents() -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(CALICO_CRDS_FILE.read_text()) if d]


def test_committed_file_is_what_the_table_generates() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_crds.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_calico_kind_of_the_project_has_a_crd_of_the_same_scope() -> None:
    checked = []
    for info in all_kinds():
        if not info.is_calico or info.kind in V3_KINDS_NOT_CRDS:
            continue
        crd = crd_for_kind(info.kind)
        assert crd.namespaced == info.namespaced, info.kind
        checked.append(info.kind)
    assert "IPPool" in checked and "NetworkPolicy" in checked
    assert crd_for_kind("IPAMConfiguration").plural == "ipamconfigs"


def test_kinds_backed_by_kubernetes_objects_are_refused_by_name() -> None:
    with pytest.raises(KeyError, match=r"WorkloadEndpoint.*Kubernetes Pod"):
        crd_for_kind("WorkloadEndpoint")
    with pytest.raises(KeyError, match="kind: 'Nope'"):
        crd_for_kind("Nope")


def test_each_document_is_a_structural_crd_with_open_spec() -> None:
    documents = _documents()
    assert len(documents) == len(CALICO_CRDS)
    for doc, crd in zip(documents, CALICO_CRDS, strict=True):
        spec = doc["spec"]
        assert isinstance(spec, dict)
        assert doc["metadata"] == {"name": f"{crd.plural}.{CRD_GROUP}"}
        assert spec["group"] == CRD_GROUP
        assert spec["scope"] == ("Namespaced" if crd.namespaced else "Cluster")
        assert spec["names"]["kind"] == crd.kind
        (version,) = spec["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        schema = version["schema"]["openAPIV3Schema"]
        assert schema["type"] == "object"
        for part in ("spec", "status") if crd.has_status else ("spec",):
            assert schema["properties"][part] == {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            }, (crd.kind, part)
