"""k8s/ against the real kube-apiserver: the server validates every object (schema, defaults,
admission, RBAC objects) in a dry run, a real `kubectl apply -k` succeeds and is idempotent,
and the manifests keep the properties the install depends on."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lab.apiserver import ApiServer
from tests.k8s.k8skit import K8S_DIR, NAMESPACE, kubectl, rendered

IMAGE = re.compile(r"^localhost/calico-py/calico-[a-z-]+:latest$")
WORKLOADS = {
    ("DaemonSet", "calico-node"),
    ("Deployment", "calico-typha"),
    ("Deployment", "calico-kube-controllers"),
}


def test_server_dry_run_accepts_every_object(kube_api: ApiServer, install: Path) -> None:
    # Namespaced objects can only be dry-run into a namespace that exists.
    kubectl(kube_api, "apply", "-f", str(install / "namespace.yaml"))
    out = kubectl(kube_api, "apply", "--dry-run=server", "-k", str(install))
    objects = rendered(install)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == len(objects), out
    assert all(line.endswith("(server dry run)") for line in lines), out
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert kinds >= WORKLOADS
    for expected in [
        ("Service", "calico-typha"),
        ("PodDisruptionBudget", "calico-typha"),
        ("ConfigMap", "calico-config"),
        ("ConfigMap", "calico-typha-ca"),
        ("ConfigMap", "kubernetes-services-endpoint"),
        ("Secret", "calico-typha-tls"),
        ("Secret", "calico-node-typha-tls"),
    ]:
        assert expected in kinds, expected
    assert sum(1 for o in objects if o["kind"] == "CustomResourceDefinition") == 20


def test_real_apply_then_reapply_changes_nothing(kube_api: ApiServer, installed: Path) -> None:
    kubectl(kube_api, "apply", "-k", str(installed))
    # `kubectl diff` exits 0 when the cluster holds exactly what the manifests say. (apply's
    # own words are no test: it reports an unchanged PodDisruptionBudget as "configured".)
    diff = kube_api.kubectl(["diff", "-k", str(installed)])
    assert diff.returncode == 0, diff.stdout + diff.stderr
    endpoint = kubectl(
        kube_api, "get", "configmap", "kubernetes-services-endpoint", "-n", NAMESPACE,
        "-o", "jsonpath={.data.KUBERNETES_SERVICE_HOST}:{.data.KUBERNETES_SERVICE_PORT}",
    )  # fmt: skip
    assert endpoint == f"{kube_api.address}:{kube_api.port}"


def _pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]
        for o in objects
        if (o["kind"], o["metadata"]["name"]) in WORKLOADS
    }


def test_workloads_use_local_images_and_probe_health(install: Path) -> None:
    specs = _pod_specs(rendered(install))
    assert set(specs) == {name for _, name in WORKLOADS}
    for name, spec in specs.items():
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            assert IMAGE.match(container["image"]), where
            assert container["imagePullPolicy"] in ("IfNotPresent", "Never"), where
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            for probe in ("livenessProbe", "readinessProbe"):
                command = container[probe]["exec"]["command"]
                assert command[0] == "calico-health-probe", where
                assert command[1].endswith(".sock"), where  # the Unix socket, never TCP


def test_calico_node_runs_everywhere_and_shares_the_host(install: Path) -> None:
    objects = rendered(install)
    node = next(o for o in objects if o["kind"] == "DaemonSet")
    spec = node["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert {"operator": "Exists"} in spec["tolerations"]  # every taint
    assert node["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
    assert [c["name"] for c in spec["containers"]] == ["felix", "ipamd", "bgpd"]
    assert [c["name"] for c in spec["initContainers"]] == ["default-pool", "install-cni"]
    paths = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert {"/var/run/calico", "/var/lib/calico", "/opt/cni/bin", "/etc/cni/net.d",
            "/var/run/netns", "/proc/sys/net"} <= paths  # fmt: skip
    # Nothing privileged (test_privileges.py has every container); ipamd has no capability
    # at all; Felix two; BIRD only its three.
    by_name = {c["name"]: c["securityContext"] for c in spec["containers"]}
    assert "privileged" not in by_name["felix"]
    assert sorted(by_name["felix"]["capabilities"]["add"]) == ["NET_ADMIN", "SYS_ADMIN"]
    assert by_name["ipamd"]["capabilities"] == {"drop": ["ALL"]}
    assert sorted(by_name["bgpd"]["capabilities"]["add"]) == [
        "NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"]  # fmt: skip
    # Typha is found through its Service's endpoints, with mutual TLS.
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["FELIX_TYPHAK8SSERVICENAME"]["valueFrom"]["configMapKeyRef"]["key"] == (
        "typha_service_name"
    )
    assert {"FELIX_TYPHACAFILE", "FELIX_TYPHACERTFILE", "FELIX_TYPHAKEYFILE"} <= set(env)


def test_every_service_account_is_its_own(install: Path) -> None:
    specs = _pod_specs(rendered(install))
    assert {n: s["serviceAccountName"] for n, s in specs.items()} == {
        "calico-node": "calico-node",
        "calico-typha": "calico-typha",
        "calico-kube-controllers": "calico-kube-controllers",
    }


def test_site_is_not_in_the_repository() -> None:
    # Per-install secrets never land in git: make-certs.sh writes k8s/site/, which is ignored.
    ignored = (K8S_DIR.parent / ".gitignore").read_text().split()
    assert "/k8s/site/" in ignored


def test_cni_installer_gets_no_service_account_token(kube_api: ApiServer, installed: Path) -> None:
    # A calico-node pod through the API server's admission (dry run): the service-account
    # token is mounted into the daemons, never into the installer, which writes onto the host.
    node = next(o for o in rendered(installed) if o["kind"] == "DaemonSet")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "calico-node-dry", "namespace": NAMESPACE},
        "spec": node["spec"]["template"]["spec"],
    }
    out = kube_api.kubectl(
        ["create", "--dry-run=server", "-o", "json", "-f", "-"], input=json.dumps(pod)
    )
    assert out.returncode == 0, out.stderr
    admitted = json.loads(out.stdout)["spec"]
    token_dir = "/var/run/secrets/kubernetes.io/serviceaccount"

    def token_volume(container: dict[str, Any]) -> str:
        mounts = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == token_dir]
        assert len(mounts) <= 1
        return mounts[0] if mounts else ""

    installer = next(c for c in admitted["initContainers"] if c["name"] == "install-cni")
    assert token_volume(installer) == "no-token"
    for container in admitted["containers"]:
        assert token_volume(container).startswith("kube-api-access-"), container["name"]
