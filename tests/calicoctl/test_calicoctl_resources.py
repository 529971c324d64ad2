"""calicoctl's resource commands through the real CLI, on the embedded datastore and real etcd.

Acceptance: one file holding an IPPool, a GlobalNetworkPolicy, a Calico NetworkPolicy, a
Kubernetes NetworkPolicy, a Namespace and a Pod round-trips through apply and get -o json;
bad input exits 1 with a message naming the problem and writes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from libcalico.datastore import Datastore

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "docs" / "examples" / "quickstart.yaml"
CALICOCTL = [sys.executable, "-m", "calicoctl.main"]


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CALICOCTL, *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def get_json(env: dict[str, str], *args: str) -> Any:
    result = run(env, "get", *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def stored_everything(datastore: Datastore) -> list[tuple[str, bytes, int]]:
    """Every key under /calico/ with its value and revision: the 'no write' witness."""
    listed = await datastore.list("/calico/")
    return [(kv.key, kv.value, kv.mod_revision) for kv in listed.items]


def subset(expected: Any, actual: Any, path: str = "") -> None:
    """Every field the file gave is in the stored object with the same value."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing from {sorted(actual)}"
            subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            subset(e, a, f"{path}[{i}]")
    else:
        assert expected == actual or str(expected) == str(actual), (
            f"{path}: {expected!r} != {actual!r}"
        )


def test_apply_then_get_round_trips_every_object(datastore_env: dict[str, str]) -> None:
    applied = run(datastore_env, "apply", "-f", str(QUICKSTART))
    assert applied.returncode == 0, applied.stderr
    assert "6 resource(s)" in applied.stdout

    # get -f FILE -o json returns the objects the file names, as a List of mixed kinds.
    listed = get_json(datastore_env, "-f", str(QUICKSTART))
    assert listed["kind"] == "List"
    documents = list(yaml.safe_load_all(QUICKSTART.read_text()))
    assert len(listed["items"]) == len(documents) == 6
    for doc, got in zip(documents, listed["items"], strict=True):
        subset(doc, got)
        assert got["metadata"]["resourceVersion"]
        assert got["metadata"]["uid"]
        assert got["metadata"]["creationTimestamp"]

    # Each kind alone, including the group-qualified Kubernetes NetworkPolicy.
    pools = get_json(datastore_env, "ippools")
    assert pools["kind"] == "IPPoolList"
    assert [p["metadata"]["name"] for p in pools["items"]] == ["default-ipv4-pool"]
    assert pools["items"][0]["spec"]["blockSize"] == 26
    k8s_np = get_json(datastore_env, "networkpolicy.networking.k8s.io", "db-from-web", "-n", "shop")
    assert k8s_np["apiVersion"] == "networking.k8s.io/v1"
    assert k8s_np["spec"]["podSelector"] == {"matchLabels": {"app": "db"}}
    calico_np = get_json(datastore_env, "networkpolicy", "allow-web", "-n", "shop")
    assert calico_np["apiVersion"] == "projectcalico.org/v3"
    assert calico_np["spec"]["selector"] == "app == 'web'"
    pod = get_json(datastore_env, "pod", "web-0", "-n", "shop")
    assert pod["spec"]["containers"][0]["ports"][0]["name"] == "http"

    # A second apply of the unchanged file replaces in place: same uid, newer revision.
    again = run(datastore_env, "apply", "-f", str(QUICKSTART))
    assert again.returncode == 0, again.stderr
    pool_again = get_json(datastore_env, "ippool", "default-ipv4-pool")
    assert pool_again["metadata"]["uid"] == pools["items"][0]["metadata"]["uid"]
    assert int(pool_again["metadata"]["resourceVersion"]) > int(
        pools["items"][0]["metadata"]["resourceVersion"]
    )


def test_label_selector_and_tables(datastore_env: dict[str, str]) -> None:
    assert run(datastore_env, "apply", "-f", str(QUICKSTART)).returncode == 0
    web = get_json(datastore_env, "pods", "-A", "-l", "app == 'web'")
    assert [p["metadata"]["name"] for p in web["items"]] == ["web-0"]
    none = get_json(datastore_env, "pods", "-A", "-l", "app == 'db'")
    assert none["items"] == []
    wide = run(datastore_env, "get", "ippools", "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    header, row = wide.stdout.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "CIDR", "SELECTOR"]
    assert row.split()[:2] == ["default-ipv4-pool", "10.244.0.0/16"]


def test_delete_by_name_and_by_file(datastore_env: dict[str, str]) -> None:
    assert run(datastore_env, "apply", "-f", str(QUICKSTART)).returncode == 0
    deleted = run(datastore_env, "delete", "networkpolicy", "allow-web", "-n", "shop")
    assert deleted.returncode == 0, deleted.stderr
    missing = run(datastore_env, "get", "networkpolicy", "allow-web", "-n", "shop")
    assert missing.returncode == 1
    assert "allow-web" in missing.stderr
    again = run(datastore_env, "delete", "networkpolicy", "allow-web", "-n", "shop")
    assert again.returncode == 1 and "allow-web" in again.stderr


BAD_INPUTS = {
    "malformed-yaml": ("kind: IPPool\nmetadata: {name: [unclosed\n", "malformed"),
    "unknown-kind": (
        "apiVersion: projectcalico.org/v3\nkind: IPPoolz\nmetadata: {name: p}\nspec: {}\n",
        "IPPoolz",
    ),
    "bad-cidr": (
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
        "spec: {cidr: 10.300.0.0/16}\n",
        "spec.cidr",
    ),
    "bad-selector": (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\n"
        "spec: {selector: \"app == 'web' &&\"}\n",
        "spec.selector",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("command", ["apply", "create", "validate"])
async def test_bad_input_exits_1_names_the_problem_and_writes_nothing(
    datastore: Datastore, datastore_env: dict[str, str], case: str, command: str, tmp_path: Path
) -> None:
    bad_doc, must_mention = BAD_INPUTS[case]
    # A good object before the bad one: all-or-nothing means it must not be written either.
    good = QUICKSTART.read_text().split("\n---\n")[0]
    path = tmp_path / "input.yaml"
    path.write_text(good + "\n---\n" + bad_doc)
    assert run(datastore_env, "apply", "-f", str(QUICKSTART)).returncode == 0
    before = await stored_everything(datastore)
    assert before, "the quick start objects are stored"
    result = run(datastore_env, command, "-f", str(path))
    assert result.returncode == 1, result.stdout
    assert must_mention in result.stderr, result.stderr
    assert result.stderr.startswith("error: ")
    assert await stored_everything(datastore) == before


def test_bad_input_on_stdin(datastore_env: dict[str, str]) -> None:
    result = run(datastore_env, "apply", "-f", "-", stdin="[1, 2")
    assert result.returncode == 1
    assert "malformed" in result.stderr
    assert get_json(datastore_env, "ippools")["items"] == []


def test_overlapping_pools_rejected_without_write(
    datastore_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "pools.yaml"
    pool = (
        "apiVersion: projectcalico.org/v3\nkind: IPPool\n"
        "metadata: {{name: {}}}\nspec: {{cidr: {}}}\n"
    )
    path.write_text(pool.format("a", "10.1.0.0/16") + "---\n" + pool.format("b", "10.1.128.0/17"))
    result = run(datastore_env, "apply", "-f", str(path))
    assert result.returncode == 1
    assert "spec.cidr" in result.stderr and "overlap" in result.stderr.lower()
    assert get_json(datastore_env, "ippools")["items"] == []
