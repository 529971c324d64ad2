"""Calico installed on the real node the way a user installs it.

The project's images are built from this tree (scripts/build-images.sh, cached), k8s/ is
copied and completed by its make-certs.sh for the node's API server, and then
`calico-lab kube up --project-images --manifests DIR` imports the images into containerd and
runs `kubectl apply -k DIR`. Then:

- every calico-node, calico-typha and calico-kube-controllers pod becomes Ready; Felix runs
  unprivileged (exactly NET_ADMIN and SYS_ADMIN, its /proc/sys read-only);
- the conflist the runtime uses is the one the DaemonSet's init container installed
  (10-calico.conflist sorts before podman's 87-podman-bridge.conflist, which this host has);
- busybox pods in three namespaces, made only once calico-node is Ready, get addresses from
  the pool through the CNI plugin and reach each other; a NetworkPolicy applied with kubectl
  is enforced between them;
- deleting a pod releases its address (the kubelet's CNI DEL: the IPAM handle goes, the
  block's slot is free);
- a rolling update of calico-node to rebuilt images keeps the pods connected and the policy
  enforced: two prober pods connect five times a second throughout; the allowed one may go
  at most ALLOWED_OUTAGE_S (3 s) without a success (measured: never more than a probe
  period, 0.2 s, apart), the denied one must never connect;
- `calico-lab kube down` leaves the host as the snapshot taken before `up` recorded it.

The timings (image build, up, all Ready, pod to Running, rollout, down) are printed at the end.
Order matters: the last test takes the node down.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.daemons import find_program
from lab.kubenode import hostsnap, images, layout, lifecycle, tools
from lab.kubenode.state import KubeState
from tests.kubenode.kubenodekit import (
    NO_BUILD_ENV,
    KubeNode,
    busybox_pod,
    node_processes,
    wait_for_other_node,
    wait_running,
)

pytestmark = pytest.mark.timeout(2400)  # a cold build of the node's tools: 8-18 min on 2 cores

REPO = Path(__file__).resolve().parents[2]
SERVICE_IMAGES = (
    "calico-ipamd",
    "calico-felix",
    "calico-bgpd",
    "calico-typha",
    "calico-kube-controllers",
    "calico-cni",
)
CALICO_NS = "calico-system"
POOL = ipaddress.ip_network("192.168.0.0/16")  # k8s/config.yaml, ipv4_pool_cidr
CONFLIST = Path(layout.CNI_CONF_DIR) / "10-calico.conflist"
APPS = ("install-a", "install-b", "install-c")
PORT = 8080
PROBE_PERIOD_US = 200_000
# The longest an allowed connection may keep failing during calico-node's rolling update:
# the gap between two successful probes (one probe takes up to 1 s when it fails).
ALLOWED_OUTAGE_S = 3.0
# calico-node's containers (and init containers) and the image each runs, for the rollout.
NODE_CONTAINERS = {
    "default-pool": "calico-ipamd",
    "install-cni": "calico-cni",
    "felix": "calico-felix",
    "ipamd": "calico-ipamd",
    "bgpd": "calico-bgpd",
}
ROLLOUT_TAG = "rollout"
TIMINGS: dict[str, float] = {}
UP_STARTED: dict[str, float] = {}  # "up": time.monotonic() when `up` was started


# -- bringing it up ----------------------------------------------------------------------------


def _calico_lab_kube(
    state_dir: Path, *args: str, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it; its output goes to the test's output."""
    proc = subprocess.run(
        [sys.executable, "-m", "lab.main", "kube", "--kube-state-dir", str(state_dir), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(proc.stdout, end="")
    print(proc.stderr, end="", file=sys.stderr)
    return proc


def _build_images() -> float:
    """The service images from this tree (podman's layer cache keeps a rebuild quick)."""
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-images.sh"), *SERVICE_IMAGES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    print("\n".join(line for line in proc.stdout.splitlines() if "build-images:" in line))
    assert proc.returncode == 0, f"build-images.sh: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return time.monotonic() - started


def _manifests(work: Path) -> Path:
    """k8s/ as a user completes it: make-certs.sh --apiserver <the node's API server>. In a
    copy, so the tree's own k8s/site/ is left alone."""
    target = work / "k8s"
    shutil.copytree(REPO / "k8s", target, ignore=shutil.ignore_patterns("site"))
    proc = subprocess.run(
        [
            "sh",
            str(target / "make-certs.sh"),
            "--apiserver",
            f"{layout.NODE_ADDRESS}:{layout.APISERVER_PORT}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"make-certs.sh: {proc.stderr}"
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeNode]:
    if os.geteuid() != 0:
        print("SKIP: the node needs root (kubelet, containerd, host routes)")
        pytest.skip("the node needs root (kubelet, containerd, host routes)")
    lacking = tools.missing()
    if lacking and os.environ.get(NO_BUILD_ENV):
        reason = (
            f"{NO_BUILD_ENV} is set and the node's tools are not built "
            f"(cold build ~8 min): {'; '.join(lacking)}"
        )
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("install")
    TIMINGS["images build"] = _build_images()
    manifests = _manifests(work)
    wait_for_other_node()
    state_dir = work / "state"
    os.environ["KUBECACHEDIR"] = str(state_dir / "kubectl-cache")
    started = time.monotonic()
    try:
        up = _calico_lab_kube(state_dir, "up", "--project-images", "--manifests", str(manifests))
        assert up.returncode == 0, f"calico-lab kube up: exit {up.returncode}"
        TIMINGS["up (node Ready, images imported, applied)"] = time.monotonic() - started
        state = KubeState.load(state_dir)
        server = lifecycle.server_of(state)
        before = state.snapshot()
        assert server is not None and before is not None
        UP_STARTED["up"] = started
        yield KubeNode(state, server, before)
    finally:
        lifecycle.down(state_dir, say=print)  # idempotent: nothing left once the test's down ran


# -- looking at the cluster --------------------------------------------------------------------


def _pods(node: KubeNode, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", "pods", "-n", namespace, "-o", "json"]
    if selector:
        args += ["-l", selector]
    items: list[dict[str, Any]] = json.loads(node.kubectl(*args))["items"]
    return items


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _diagnosis(node: KubeNode) -> str:
    """What a person would look at when calico's pods do not come up."""
    out = [node.server.kubectl(["get", "pods", "-A", "-o", "wide"]).stdout]
    events = node.server.kubectl(
        ["get", "events", "-n", CALICO_NS, "--sort-by=.lastTimestamp"], timeout=30
    )
    out.append("\n".join(events.stdout.splitlines()[-25:]))
    for pod in _pods(node, CALICO_NS):
        name = pod["metadata"]["name"]
        spec = pod["spec"]
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            logs = node.server.kubectl(
                ["logs", "-n", CALICO_NS, name, "-c", container["name"], "--tail=15"], timeout=30
            )
            out.append(f"--- {name}/{container['name']}\n{logs.stdout}{logs.stderr}")
    return "\n".join(out)


def _waited(node: KubeNode, *args: str, timeout: float = 240) -> None:
    """A kubectl wait/rollout command that prints the cluster's state when it fails."""
    proc = node.server.kubectl(list(args), timeout=timeout + 30)
    if proc.returncode != 0:
        print(_diagnosis(node))
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")


def _rollout(node: KubeNode, kind_name: str, timeout: float = 240) -> None:
    _waited(
        node, "rollout", "status", "-n", CALICO_NS, kind_name, f"--timeout={timeout:.0f}s",
        timeout=timeout,
    )  # fmt: skip


def _host_device(ip: str) -> str:
    """The device the host's route to `ip` goes out of ("" for the pools' unreachable route)."""
    proc = subprocess.run(["ip", "-j", "route", "get", ip], capture_output=True, text=True)
    if proc.returncode != 0:
        return ""
    return str(json.loads(proc.stdout)[0].get("dev", ""))


def _connects(node: KubeNode, namespace: str, pod: str, ip: str) -> bool:
    proc = node.server.kubectl(
        ["exec", "-n", namespace, pod, "--", "sh", "-c", f"nc -w 2 {ip} {PORT} </dev/null"],
        timeout=30,
    )
    return proc.returncode == 0


def _eventually(check: Callable[[], bool], want: bool, within: float = 15.0) -> float:
    """Seconds until `check()` is `want` (AssertionError after `within`)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if check() == want:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"still {not want} after {within:.0f} s")


def _has_default_account(node: KubeNode, namespace: str) -> bool:
    proc = node.server.kubectl(["get", "serviceaccount", "default", "-n", namespace])
    return proc.returncode == 0


def _pod_ip(node: KubeNode, namespace: str, name: str) -> str:
    return str(node.pod(namespace, name)["status"]["podIP"])


def _calicoctl(node: KubeNode, *args: str) -> str:
    proc = subprocess.run(
        [find_program("calicoctl"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "DATASTORE_TYPE": "kubernetes",
            "KUBECONFIG": str(node.server.kubeconfig),
        },
        check=False,
    )
    assert proc.returncode == 0, f"calicoctl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _in_use(node: KubeNode) -> int:
    """Addresses in use in the default pool (`calicoctl ipam show`)."""
    usage: dict[str, Any] = json.loads(_calicoctl(node, "ipam", "show", "-o", "json"))
    for pool in usage["pools"]:
        if pool["cidr"] == str(POOL):
            return int(pool["inUse"])
    raise AssertionError(f"{POOL} not in {usage}")


def _handles(node: KubeNode) -> set[str]:
    """IPAM handles in the datastore (the IPAMHandle custom resources)."""
    data = json.loads(node.kubectl("get", "ipamhandles.crd.projectcalico.org", "-o", "json"))
    return {str(item["spec"]["handleID"]) for item in data["items"]}


def _allocated(node: KubeNode, ip: str) -> bool:
    """Whether the IPAMBlock holding `ip` has its slot allocated."""
    address = ipaddress.ip_address(ip)
    data = json.loads(node.kubectl("get", "ipamblocks.crd.projectcalico.org", "-o", "json"))
    for item in data["items"]:
        block = ipaddress.ip_network(item["spec"]["cidr"])
        if address in block:
            ordinal = int(address) - int(block.network_address)
            return item["spec"]["allocations"][ordinal] is not None
    return False


# -- the tests ---------------------------------------------------------------------------------


def test_calico_pods_become_ready_with_calicos_conflist(installed: KubeNode) -> None:
    node = installed
    _rollout(node, "daemonset/calico-node")
    _rollout(node, "deployment/calico-typha")
    TIMINGS["up start -> calico-node and Typha Ready"] = time.monotonic() - UP_STARTED["up"]
    # calico-kube-controllers is an ordinary pod (Calico's shape): on a fresh node the runtime
    # has no network until calico-node installs the CNI, so it waits; this host's podman
    # conflist lets it start earlier on podman's bridge (lab/README.md). Then it is moved,
    # as a user would, once Calico's network is there.
    pod = _pods(node, CALICO_NS, "k8s-app=calico-kube-controllers")[0]
    ip = pod.get("status", {}).get("podIP")
    if ip and ipaddress.ip_address(ip) not in POOL:
        print(
            f"calico-kube-controllers started before the CNI was installed and got {ip} "
            "(podman's network): restarting it onto Calico's"
        )
        node.kubectl("rollout", "restart", "-n", CALICO_NS, "deployment/calico-kube-controllers")
    _rollout(node, "deployment/calico-kube-controllers")
    pods = _pods(node, CALICO_NS)
    TIMINGS["up start -> every calico pod Ready"] = time.monotonic() - UP_STARTED["up"]
    print(node.kubectl("get", "pods", "-n", CALICO_NS, "-o", "wide"))
    by_app: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        by_app.setdefault(pod["metadata"]["labels"]["k8s-app"], []).append(pod)
    assert sorted(by_app) == ["calico-kube-controllers", "calico-node", "calico-typha"], by_app
    for app, members in by_app.items():
        assert len(members) == 1 and all(_ready(p) for p in members), (app, members)
    controllers_ip = by_app["calico-kube-controllers"][0]["status"]["podIP"]
    assert ipaddress.ip_address(controllers_ip) in POOL, controllers_ip

    # The runtime's network config: the first conflist by name is the one install-cni wrote.
    names = sorted(
        p.name
        for p in Path(layout.CNI_CONF_DIR).iterdir()
        if p.suffix in (".conf", ".conflist", ".json")
    )
    assert names[0] == CONFLIST.name, names
    conflist = json.loads(CONFLIST.read_text())
    plugin = conflist["plugins"][0]
    assert plugin["type"] == "calico" and plugin["ipam"]["type"] == "calico-ipam", conflist
    assert plugin["nodename"] == layout.NODE_NAME
    for binary in ("calico", "calico-ipam"):
        assert os.access(Path(layout.CNI_BIN_DIRS[0]) / binary, os.X_OK), binary
    # The installer ran without the service-account token: no credential on the host.
    assert not (Path(layout.CNI_CONF_DIR) / "calico-kubeconfig").exists()


def test_felix_runs_unprivileged_with_only_its_capabilities(installed: KubeNode) -> None:
    # Not privileged: Felix (PID 1 of its container) holds exactly NET_ADMIN and SYS_ADMIN,
    # and its own /proc/sys is the runtime's read-only one; the pods below are plumbed
    # through the host's /proc/sys/net at FELIX_PROCSYSNETPATH.
    node = installed

    def felix_file(path: str) -> str:
        return node.kubectl(
            "exec", "-n", CALICO_NS, "daemonset/calico-node", "-c", "felix", "--", "cat", path
        )  # fmt: skip

    caps: dict[str, int] = {}
    for line in felix_file("/proc/1/status").splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapBnd"):
            caps[key] = int(value, 16)
    net_admin, sys_admin = 1 << 12, 1 << 21
    assert caps == {"CapEff": net_admin | sys_admin, "CapBnd": net_admin | sys_admin}, caps
    options = {
        fields[1]: fields[3].split(",")
        for fields in (line.split() for line in felix_file("/proc/1/mounts").splitlines())
    }
    assert "ro" in options["/proc/sys"], options.get("/proc/sys")
    assert "rw" in options["/host/proc/sys/net"], options.get("/host/proc/sys/net")


def test_pods_in_three_namespaces_get_pool_addresses_and_reach_each_other(
    installed: KubeNode,
) -> None:
    node = installed
    node.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in APPS])
    for ns in APPS:  # the controller manager makes each one's `default` account
        _eventually(functools.partial(_has_default_account, node, ns), True)
    started = time.monotonic()
    node.apply([busybox_pod("web", ns, command=f"exec httpd -f -p {PORT}") for ns in APPS])
    for ns in APPS:
        wait_running(node, ns, "web", timeout=90)
    TIMINGS["3 pods create -> all Running (Ready)"] = time.monotonic() - started
    ips = {ns: _pod_ip(node, ns, "web") for ns in APPS}
    print(f"pod addresses: {ips}")
    assert len(set(ips.values())) == len(ips)
    for ns, ip in ips.items():
        assert ipaddress.ip_address(ip) in POOL, (ns, ip)
        assert _host_device(ip).startswith("cali"), (ns, ip, _host_device(ip))  # Calico's veth
        annotations = node.pod(ns, "web")["metadata"].get("annotations", {})
        assert annotations.get("cni.projectcalico.org/podIP", "").startswith(f"{ip}/"), annotations
    for src in APPS:
        for dst in APPS:
            if src != dst:
                assert _connects(node, src, "web", ips[dst]), f"{src} -> {dst} ({ips[dst]})"


def test_network_policy_applied_with_kubectl_is_enforced(installed: KubeNode) -> None:
    """install-c's web accepts only install-a's pods; other pairs are untouched."""
    node = installed
    a, b, c = APPS
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-from-a-only", "namespace": c},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": a}}}
                    ],
                    "ports": [{"protocol": "TCP", "port": PORT}],
                }
            ],
        },
    }
    proc = node.server.kubectl(["apply", "-f", "-"], input=yaml.safe_dump(policy), timeout=60)
    assert proc.returncode == 0, proc.stderr
    ip = {ns: _pod_ip(node, ns, "web") for ns in APPS}
    seconds = _eventually(lambda: _connects(node, b, "web", ip[c]), False)
    print(f"b -> c denied {seconds:.2f} s after kubectl apply (with its 2 s probe)")
    assert _connects(node, a, "web", ip[c]), "a -> c is allowed"
    assert _connects(node, b, "web", ip[a]), "b -> a has no policy"
    assert _connects(node, c, "web", ip[b]), "c's egress has no policy"


def test_deleting_a_pod_releases_its_address(installed: KubeNode) -> None:
    node = installed
    # Reference, same run: a pod with no CNI at all (host network).
    node.apply([busybox_pod("reference", "install-b", host_network=True)])
    reference = wait_running(node, "install-b", "reference")
    node.kubectl("delete", "pod", "-n", "install-b", "reference", "--wait=false")
    in_use = _in_use(node)
    node.apply([busybox_pod("short-lived", "install-b")])
    seconds = wait_running(node, "install-b", "short-lived")
    TIMINGS["pod create -> Running (Ready), through calico's CNI"] = seconds
    TIMINGS["reference: hostNetwork pod create -> Running (no CNI)"] = reference
    ratio = seconds / reference
    print(f"pod create -> Ready {seconds:.2f} s; hostNetwork {reference:.2f} s; x{ratio:.2f}")
    pod = node.pod("install-b", "short-lived")
    ip = pod["status"]["podIP"]
    handle = (
        f"k8s-pod-network.{pod['metadata']['annotations']['cni.projectcalico.org/containerID']}"
    )
    assert ipaddress.ip_address(ip) in POOL
    assert handle in _handles(node) and _allocated(node, ip)
    assert _in_use(node) == in_use + 1
    node.kubectl("delete", "pod", "-n", "install-b", "short-lived", "--wait=true", "--timeout=60s")
    seconds = _eventually(
        lambda: handle not in _handles(node) and not _allocated(node, ip), True, within=30
    )
    print(f"{ip} released (handle {handle} gone) {seconds:.2f} s after the delete returned")
    assert _in_use(node) == in_use
    assert _host_device(ip) == "", "the pod's route is gone (only the pool's unreachable one)"


def _prober(namespace: str, target: str) -> dict[str, Any]:
    """A pod connecting to target:PORT five times a second, printing one line per try."""
    loop = (
        "i=0; while :; do i=$((i+1)); "
        f"if nc -w 1 {target} {PORT} </dev/null >/dev/null 2>&1; "
        'then echo "$i ok"; else echo "$i fail"; fi; '
        f"usleep {PROBE_PERIOD_US}; done"
    )
    return busybox_pod("prober", namespace, command=loop)


def _probes(node: KubeNode, namespace: str) -> list[tuple[float, bool]]:
    """(when, connected) for each probe, from the container log's timestamps."""
    out = node.kubectl("logs", "-n", namespace, "prober", "--timestamps")
    probes = []
    for line in out.splitlines():
        stamp, _, text = line.partition(" ")
        if not text.endswith((" ok", " fail")):
            continue
        whole, _, fraction = stamp.rstrip("Z").partition(".")
        when = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
        probes.append((when.timestamp() + float(f"0.{fraction or 0}"), text.endswith(" ok")))
    return probes


def _rebuilt_images(work: Path) -> dict[str, str]:
    """calico-node's images rebuilt (a new image: the same layers, a new label) under the
    tag ROLLOUT_TAG, imported into containerd. Image name -> new reference."""
    env = dict(os.environ)
    conf = (
        Path(os.environ.get("CALICO_IMAGES_CACHE", Path.home() / ".cache" / "calico-py" / "images"))
        / "containers.conf"
    )
    if "CONTAINERS_CONF" not in env and conf.exists():
        env["CONTAINERS_CONF"] = str(conf)  # build-images.sh's (runc, ulimits)
    refs = {}
    for name in sorted(set(NODE_CONTAINERS.values())):
        source = f"{images.PROJECT_IMAGE_PREFIX}{name}:latest"
        target = f"{images.PROJECT_IMAGE_PREFIX}{name}:{ROLLOUT_TAG}"
        containerfile = work / f"{name}.Containerfile"
        containerfile.write_text(f"FROM {source}\n")
        proc = subprocess.run(
            [
                "podman", "build", "--pull=never", "--format", "docker", "-q",
                "--label", f"calico-py.rollout={time.time():.0f}",
                "-t", target, "-f", str(containerfile), str(work),
            ],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"podman build {target}: {proc.stderr}"
        refs[name] = target
    archive = images.podman_save(list(refs.values()), work / "rollout.tar")
    imported = images.import_archive(tools.find().ctr, archive)
    archive.unlink()
    assert sorted(imported) == sorted(refs.values()), imported
    return refs


def test_rolling_update_keeps_pods_connected_and_policy_enforced(
    installed: KubeNode, tmp_path: Path
) -> None:
    node = installed
    a, b, c = APPS
    target = _pod_ip(node, c, "web")
    node.apply([_prober(a, target), _prober(b, target)])
    wait_running(node, a, "prober")
    wait_running(node, b, "prober")
    _eventually(lambda: sum(ok for _, ok in _probes(node, a)) >= 3, True, within=20)
    _eventually(lambda: len(_probes(node, b)) >= 3, True, within=20)
    old = _pods(node, CALICO_NS, "k8s-app=calico-node")[0]["metadata"]["name"]

    t_build = time.monotonic()
    refs = _rebuilt_images(tmp_path)
    try:
        print(f"rebuilt and imported {len(refs)} images in {time.monotonic() - t_build:.1f} s")
        started, started_wall = time.monotonic(), time.time()
        node.kubectl(
            "set", "image", "-n", CALICO_NS, "daemonset/calico-node",
            *[f"{container}={refs[image]}" for container, image in NODE_CONTAINERS.items()],
        )  # fmt: skip
        _rollout(node, "daemonset/calico-node")
        TIMINGS["calico-node rolling update (set image -> new pod Ready)"] = (
            time.monotonic() - started
        )
        finished_wall = time.time()
    finally:
        subprocess.run(["podman", "rmi", *refs.values()], capture_output=True, check=False)
    time.sleep(3)  # a few more probes with the new calico-node in charge
    new = _pods(node, CALICO_NS, "k8s-app=calico-node")
    assert [p["metadata"]["name"] for p in new] != [old]
    assert all(_ready(p) for p in new)
    status = new[0]["status"]
    ran = {s["name"]: s["image"] for s in status["initContainerStatuses"]}
    ran |= {s["name"]: s["image"] for s in status["containerStatuses"]}
    assert ran == {name: refs[image] for name, image in NODE_CONTAINERS.items()}, ran

    allowed, denied = _probes(node, a), _probes(node, b)
    end = finished_wall + 3
    # Allowed: the longest time between two successful probes that spans any of the rollout.
    successes = [when for when, ok in allowed if ok]
    gaps = [q - p for p, q in itertools.pairwise(successes) if q >= started_wall and p <= end]
    during = [(when, ok) for when, ok in allowed if started_wall <= when <= end]
    failures = sum(not ok for _, ok in during)
    leaks = [when for when, ok in denied if ok]
    print(
        f"during the rollout ({end - started_wall:.1f} s): allowed pair {len(during)} probes, "
        f"{failures} failed, longest gap between successes {max(gaps, default=0):.2f} s; "
        f"denied pair {sum(started_wall <= w <= end for w, _ in denied)} probes, "
        f"{len(leaks)} connected (whole run: {len(denied)} probes)"
    )
    assert len(during) >= 5 and gaps, "the allowed prober kept running through the rollout"
    assert max(gaps) <= ALLOWED_OUTAGE_S, f"allowed pair cut for {max(gaps):.2f} s"
    assert not leaks, f"the denied pair connected at {leaks}"

    # The new calico-node serves new pods (its ipamd, its Felix, the re-installed plugin).
    node.apply([busybox_pod("after-rollout", a)])
    wait_running(node, a, "after-rollout")
    ip = _pod_ip(node, a, "after-rollout")
    assert ipaddress.ip_address(ip) in POOL
    assert _connects(node, a, "after-rollout", target)


def test_down_leaves_the_host_as_it_was(installed: KubeNode) -> None:
    node = installed
    started = time.monotonic()
    proc = _calico_lab_kube(node.state.directory, "down", timeout=300)
    TIMINGS["calico-lab kube down"] = time.monotonic() - started
    assert proc.returncode == 0, f"calico-lab kube down: exit {proc.returncode}"
    after = hostsnap.take(node.before["ranges"])
    assert hostsnap.differences(node.before, after) == []
    assert not CONFLIST.exists()
    assert not (Path(layout.CNI_BIN_DIRS[0]) / "calico").exists()
    assert node_processes(node) == []
    print("timings:")
    for name, seconds in TIMINGS.items():
        print(f"  {name:<58} {seconds:7.2f} s")
