"""k8s-etcd/, the etcd-datastore install: rendered, applied for real to a kube-apiserver with
RBAC, each account's rights checked, and every datastore container's environment, with the
Secret make-certs.sh wrote laid out as the kubelet mounts it, reaching a real etcd over mutual
TLS (the session's `etcd_tls_server`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.apiserver import ApiServer
from libcalico.config import DatastoreConfig
from libcalico.datastore import connect
from tests.conftest import EtcdTLSServer, wipe_etcd
from tests.k8s.k8skit import NAMESPACE, can_i, kubectl, prepare_etcd_install, rendered

BIN = Path(sys.executable).parent
SECRETS_MOUNT = "/calico-secrets"
# Every container that opens the datastore: (workload, container).
DATASTORE_CONTAINERS = {
    ("calico-node", "default-pool"),
    ("calico-node", "felix"),
    ("calico-node", "ipamd"),
    ("calico-node", "bgpd"),
    ("calico-typha", "calico-typha"),
    ("calico-kube-controllers", "calico-kube-controllers"),
}


@pytest.fixture(scope="module")
def overlay(
    kube_api: ApiServer, etcd_tls_server: EtcdTLSServer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return prepare_etcd_install(
        kube_api,
        tmp_path_factory.mktemp("etcd-install"),
        etcd_tls_server.certs.directory,
        etcd_tls_server.endpoint,
    )


@pytest.fixture(scope="module")
def objects(overlay: Path) -> list[dict[str, Any]]:
    return rendered(overlay)


@pytest.fixture(scope="module")
def applied(kube_api: ApiServer, overlay: Path) -> Iterator[Path]:
    kubectl(kube_api, "apply", "-k", str(overlay))
    yield overlay


def containers(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for o in objects:
        if o["kind"] in ("DaemonSet", "Deployment"):
            spec = o["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                out[(o["metadata"]["name"], c["name"])] = c
    return out


def pod_spec(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any]
    (spec,) = [
        o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("DaemonSet", "Deployment") and o["metadata"]["name"] == name
    ]
    return spec


def config_data(objects: list[dict[str, Any]]) -> dict[str, str]:
    (data,) = [
        o["data"]
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "calico-config"
    ]
    return dict(data)


def mounted_secret(objects: list[dict[str, Any]], directory: Path) -> Path:
    """calico-etcd-secrets' keys as files in `directory`, as the kubelet mounts them."""
    (secret,) = [
        o
        for o in objects
        if o["kind"] == "Secret" and o["metadata"]["name"] == "calico-etcd-secrets"
    ]
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in secret["data"].items():
        (directory / key).write_bytes(base64.b64decode(value))
    return directory


def container_env(
    container: dict[str, Any], config: dict[str, str], secrets: Path
) -> dict[str, str]:
    """The container's literal and calico-config environment, its Secret mount at `secrets`."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"].replace(SECRETS_MOUNT, str(secrets))
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = config[item["valueFrom"]["configMapKeyRef"]["key"]]
    return env


# ---- the rendered objects ----


def test_no_crds_and_the_etcd_secret(objects: list[dict[str, Any]]) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert not [k for k in kinds if k[0] == "CustomResourceDefinition"]
    assert ("Secret", "calico-etcd-secrets") in kinds
    # Typha's mutual TLS is the base's, unchanged.
    assert {("Secret", "calico-typha-tls"), ("Secret", "calico-node-typha-tls")} <= kinds


def test_every_datastore_container_uses_etcd_over_tls(objects: list[dict[str, Any]]) -> None:
    found = containers(objects)
    assert set(found) >= DATASTORE_CONTAINERS
    for key, container in found.items():
        env = {e["name"]: e for e in container.get("env", [])}
        if key not in DATASTORE_CONTAINERS:
            assert "DATASTORE_TYPE" not in env, key  # the CNI installer opens no datastore
            continue
        assert env["DATASTORE_TYPE"]["value"] == "etcdv3", key
        ref = env["ETCD_ENDPOINTS"]["valueFrom"]["configMapKeyRef"]
        assert ref == {"name": "calico-config", "key": "etcd_endpoints"}, key
        for var, file in [
            ("ETCD_CA_CERT_FILE", "etcd-ca"),
            ("ETCD_CERT_FILE", "etcd-cert"),
            ("ETCD_KEY_FILE", "etcd-key"),
        ]:
            assert env[var]["value"] == f"{SECRETS_MOUNT}/{file}", (key, var)
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[SECRETS_MOUNT] == {
            "name": "etcd-certs",
            "mountPath": SECRETS_MOUNT,
            "readOnly": True,
        }, key
    for workload in ("calico-node", "calico-typha", "calico-kube-controllers"):
        spec = pod_spec(objects, workload)
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["etcd-certs"]["secret"] == {
            "secretName": "calico-etcd-secrets",
            "defaultMode": 0o440,
        }, workload
        # Group-readable by 999: the uid the non-root containers run as.
        assert spec["securityContext"]["fsGroup"] == 999, workload
    kc = containers(objects)[("calico-kube-controllers", "calico-kube-controllers")]
    enabled = {e["name"]: e.get("value") for e in kc["env"]}["ENABLED_CONTROLLERS"]
    assert set(enabled.split(",")) == {
        "node",
        "policy",
        "namespace",
        "serviceaccount",
        "workloadendpoint",
    }


def test_containers_reach_etcd_with_the_mounted_secret(
    objects: list[dict[str, Any]], etcd_tls_server: EtcdTLSServer, tmp_path: Path
) -> None:
    """Each datastore container's environment, as written, opens the real etcd over mTLS."""
    secrets = mounted_secret(objects, tmp_path / "calico-secrets")
    config = config_data(objects)
    found = containers(objects)

    async def check(env: dict[str, str]) -> int:
        store = await connect(DatastoreConfig.from_env(env))
        try:
            return await store.current_revision()
        finally:
            await store.close()

    for key in sorted(DATASTORE_CONTAINERS):
        env = container_env(found[key], config, secrets)
        assert asyncio.run(check(env)) >= 1, key


def test_default_pool_init_container_makes_the_pool_in_etcd(
    objects: list[dict[str, Any]], etcd_tls_server: EtcdTLSServer, tmp_path: Path
) -> None:
    wipe_etcd(etcd_tls_server.endpoint, certs=etcd_tls_server.certs)
    secrets = mounted_secret(objects, tmp_path / "calico-secrets")
    config = config_data(objects)
    container = containers(objects)[("calico-node", "default-pool")]
    env = {
        **os.environ,
        **container_env(container, config, secrets),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    run = subprocess.run(container["command"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    got = subprocess.run(
        [str(BIN / "calicoctl"), "get", "ippool", config["ipv4_pool_name"], "-o", "yaml"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    assert yaml.safe_load(got.stdout)["spec"]["cidr"] == config["ipv4_pool_cidr"]


# ---- against the API server ----


def test_server_dry_run_accepts_every_object(kube_api: ApiServer, overlay: Path) -> None:
    kubectl(kube_api, "apply", "-f", str(overlay.parent / "k8s" / "namespace.yaml"))
    out = kubectl(kube_api, "apply", "--dry-run=server", "-k", str(overlay))
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == len(rendered(overlay)), out
    assert all(line.endswith("(server dry run)") for line in lines), out


CRD = "crd.projectcalico.org"
KC = "calico-kube-controllers"
NODE = "calico-node"
TYPHA = "calico-typha"
# (account, verb, resource, namespace or None for all, allowed)
ROWS: list[tuple[str, str, str, str | None, bool]] = [
    # kube-controllers copies these into etcd and collects IPAM garbage.
    *[(KC, v, r, None, True) for v in ("list", "watch") for r in ("pods", "nodes", "namespaces")],
    *[(KC, v, r, None, True) for v in ("list", "watch") for r in ("serviceaccounts",)],
    *[(KC, v, "networkpolicies.networking.k8s.io", None, True) for v in ("list", "watch")],
    *[
        (KC, v, r, None, True)
        for v in ("get", "list", "watch")
        for r in ("services", "endpointslices.discovery.k8s.io")
    ],
    *[
        (KC, v, r, None, False)
        for v in ("create", "update", "patch", "delete")
        for r in ("services", "endpointslices.discovery.k8s.io")
    ],
    (KC, "get", "pods", None, True),
    (KC, "get", "nodes", None, True),
    (KC, "update", "leases.coordination.k8s.io", NAMESPACE, False),  # only its own, by name
    (KC, "create", "leases.coordination.k8s.io", NAMESPACE, True),
    *[(KC, v, r, None, False) for v in ("create", "update", "delete") for r in ("pods", "nodes")],
    # calico-node: only the Typha EndpointSlices in calico-system.
    (NODE, "list", "endpointslices.discovery.k8s.io", NAMESPACE, True),
    *[(NODE, v, r, None, False) for v in ("get", "list") for r in ("pods", "nodes", "namespaces")],
    (NODE, "patch", "pods", None, False),
    (NODE, "list", "services", None, False),
    (NODE, "update", "nodes", None, False),
    # calico-typha: nothing.
    *[(TYPHA, v, r, None, False) for v in ("get", "list") for r in ("pods", "nodes", "namespaces")],
    # Calico's kinds are in etcd: nobody touches the CRD group; nobody reads Secrets.
    *[
        (sa, v, f"{r}.{CRD}", None, False)
        for sa in (KC, NODE, TYPHA)
        for v in ("get", "list", "create")
        for r in ("ippools", "ipamblocks", "networkpolicies", "kubecontrollersconfigurations")
    ],
    *[(sa, "get", "secrets", NAMESPACE, False) for sa in (KC, NODE, TYPHA, "calico-cni-plugin")],
]


def test_each_account_can_do_only_what_etcd_mode_needs(kube_api: ApiServer, applied: Path) -> None:
    def check(row: tuple[str, str, str, str | None, bool]) -> str | None:
        sa, verb, resource, namespace, allowed = row
        if can_i(kube_api, sa, verb, resource, namespace) != allowed:
            return f"{sa} {verb} {resource} in {namespace or 'all'}: expected {allowed}"
        return None

    with ThreadPoolExecutor(8) as pool:
        wrong = [w for w in pool.map(check, ROWS) if w]
    assert not wrong, wrong
    print(f"{len(ROWS)} can-i checks")
