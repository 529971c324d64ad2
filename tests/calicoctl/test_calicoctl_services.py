"""calicoctl with Services and EndpointSlices (Kubernetes kinds kept as they are), on the
embedded datastore and real etcd: create/apply/replace/get/delete, and bad input refused with
exit 1, the field named and nothing written."""

from __future__ import annotations

from pathlib import Path

import yaml

from libcalico.datastore import Datastore
from tests.calicoctl.test_calicoctl_resources import get_json, run, stored_everything

OBJECTS = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  selector: {app: web}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP}
status:
  loadBalancer:
    ingress: [{ip: 192.0.2.1}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.244.0.5]
  nodeName: node-1
  conditions: {ready: true}
"""

# (document, the field the error must name)
BAD = {
    "protocol": ("protocol: UDP", "protocol: ICMP", "spec.ports[1].protocol"),
    "port": ("port: 53", "port: 0", "spec.ports[1].port"),
    "node-port": ("nodePort: 30080", "nodePort: 80", "spec.ports[0].nodePort"),
    "target-port": ("targetPort: http", "targetPort: Not_A_Name", "spec.ports[0].targetPort"),
    "ip-family": (
        "clusterIP: 10.96.0.20",
        "clusterIP: fd00::20\n  ipFamilies: [IPv4]",
        "spec.clusterIP",
    ),
    "affinity": ("timeoutSeconds: 60", "timeoutSeconds: 0", "timeoutSeconds"),
    "slice-address-type": ("addressType: IPv4", "addressType: IP", "addressType"),
}


def test_service_and_slice_lifecycle(datastore_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(OBJECTS)
    created = run(datastore_env, "create", "-f", str(path))
    assert created.returncode == 0, created.stderr
    again = run(datastore_env, "create", "-f", str(path))
    assert again.returncode == 1 and "already exists" in again.stderr

    got = get_json(datastore_env, "service", "web", "-n", "shop")
    assert got["apiVersion"] == "v1" and got["kind"] == "Service"
    assert got["spec"]["ports"][0] == {
        "name": "http",
        "port": 80,
        "targetPort": "http",
        "nodePort": 30080,
    }
    assert got["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1"}]
    slices = get_json(datastore_env, "endpointslices", "-n", "shop")
    assert slices["kind"] == "EndpointSliceList"
    assert [s["endpoints"][0]["addresses"] for s in slices["items"]] == [["10.244.0.5"]]
    short = get_json(datastore_env, "svc", "-A")
    assert [s["metadata"]["name"] for s in short["items"]] == ["web"]

    # replace: the stored object changes in place.
    docs = list(yaml.safe_load_all(OBJECTS))
    docs[1]["spec"]["externalTrafficPolicy"] = "Local"
    path.write_text(yaml.safe_dump_all(docs[1:2]))
    replaced = run(datastore_env, "replace", "-f", str(path))
    assert replaced.returncode == 0, replaced.stderr
    assert get_json(datastore_env, "svc", "web", "-n", "shop")["spec"]["externalTrafficPolicy"] == (
        "Local"
    )
    assert run(datastore_env, "apply", "-f", str(path)).returncode == 0

    deleted = run(datastore_env, "delete", "endpointslice", "web-1", "-n", "shop")
    assert deleted.returncode == 0, deleted.stderr
    assert run(datastore_env, "delete", "svc", "web", "-n", "shop").returncode == 0
    gone = run(datastore_env, "get", "svc", "web", "-n", "shop")
    assert gone.returncode == 1 and "web" in gone.stderr


async def test_bad_services_exit_1_name_the_field_and_write_nothing(
    datastore: Datastore, datastore_env: dict[str, str], tmp_path: Path
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(OBJECTS)
    assert run(datastore_env, "apply", "-f", str(good)).returncode == 0
    before = await stored_everything(datastore)
    for case, (old, new, field) in BAD.items():
        assert old in OBJECTS, case
        path = tmp_path / f"{case}.yaml"
        path.write_text(OBJECTS.replace(old, new, 1))
        for command in ("apply", "replace"):
            result = run(datastore_env, command, "-f", str(path))
            assert result.returncode == 1, (case, command, result.stdout)
            assert result.stderr.startswith("error: ") and field in result.stderr, (
                case,
                result.stderr,
            )
        assert await stored_everything(datastore) == before, case
