"""Every image scripts/build-images.sh makes starts and answers its health check: from the host
over the mounted socket, and through the image's own HEALTHCHECK (`podman healthcheck run`); it
runs as the user and with only the capabilities images/README.md names, carries version and
source labels, and stops promptly on SIGTERM (Python as PID 1). The calico-cni image installs
working plugins and a conflist into a host directory.

The images are built (or found in podman's layer cache, ~7 s) by the session fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.etcd import EtcdServer
from tests.images import imagekit
from tests.images.imagekit import PodmanSession

_SKIP = imagekit.missing_podman()
if _SKIP:
    print(f"tests/images: skipped: {_SKIP}", file=sys.stderr)
pytestmark = pytest.mark.skipif(bool(_SKIP), reason=_SKIP)

STOP_WITHIN_S = 4.0  # podman's SIGKILL comes at 5 s (`--time 5`): a service ignoring SIGTERM fails


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> None:
    conf = imagekit.containers_conf(tmp_path_factory.mktemp("build-conf"))
    seconds = imagekit.build_images(conf=conf)
    print(f"scripts/build-images.sh took {seconds:.1f} s")


@pytest.fixture
def podman(built: None, tmp_path: Path) -> Iterator[PodmanSession]:
    with PodmanSession(tmp_path) as session:
        yield session


# An API server that is not there: kube-controllers' liveness does not depend on it (it keeps
# retrying its lease), which is what a health check should report.
UNREACHABLE_KUBECONFIG = (
    "apiVersion: v1\nkind: Config\n"
    'clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]\n'
    "users: [{name: u, user: {token: t}}]\n"
    "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
)


@pytest.mark.parametrize("service", list(imagekit.SERVICES))
def test_service_image_starts_healthy(
    service: str, podman: PodmanSession, request: pytest.FixtureRequest
) -> None:
    env: dict[str, str] = {}
    network = "none"
    files: dict[str, str] = {}
    if service == "calico-kube-controllers":
        # It needs etcd or an API server as its datastore: the test's etcd, on loopback.
        etcd: EtcdServer = request.getfixturevalue("etcd_server")
        files = {"kubeconfig": UNREACHABLE_KUBECONFIG}
        env = {
            "DATASTORE_TYPE": "etcdv3",
            "ETCD_ENDPOINTS": etcd.endpoint,
            "KUBECONFIG": "/var/run/calico-host/kubeconfig",
        }
        network = "host"
    with podman.service(service, env, network, files) as ctr:
        seconds = ctr.wait_healthy()
        print(f"{service}: healthy {seconds:.2f} s after podman run")

        check = podman.run("healthcheck", "run", ctr.name)
        assert check.returncode == 0, f"HEALTHCHECK failed: {check.stdout}{check.stderr}"

        inspect = json.loads(podman.run("inspect", ctr.name).stdout)[0]
        assert inspect["Config"]["User"] == ctr.spec.user
        caps = set(inspect["EffectiveCaps"] or [])
        assert caps == {f"CAP_{c}" for c in ctr.spec.caps}, caps
        labels = inspect["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == imagekit.project_version()
        assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
        assert labels["org.opencontainers.image.source"]

        started = time.monotonic()
        stop = podman.run("stop", "--time", "5", ctr.name)
        stopped_in = time.monotonic() - started
        assert stop.returncode == 0, stop.stderr
        print(f"{service}: stopped {stopped_in:.2f} s after SIGTERM")
        assert stopped_in < STOP_WITHIN_S, f"{service} ignored SIGTERM:\n{ctr.logs()}"


def test_cni_image_installs_plugins_onto_host(podman: PodmanSession, tmp_path: Path) -> None:
    bin_dir, net_dir = tmp_path / "opt-cni-bin", tmp_path / "etc-cni-net.d"
    bin_dir.mkdir()
    net_dir.mkdir()
    image = f"{imagekit.PREFIX}/calico-cni:{imagekit.project_version()}"
    install = podman.run(
        "run", "--rm", "--name", podman.new_name("cni"), "--network=none", "--cap-drop=all",
        "--volume", f"{bin_dir}:/host/opt/cni/bin",
        "--volume", f"{net_dir}:/host/etc/cni/net.d",
        "--env", f"CNI_HOST_BIN_DIR={bin_dir}",  # the launchers are exec'd on this host
        "--env", "KUBERNETES_NODE_NAME=node-a", "--env", "CNI_MTU=1400",
        image,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    assert "wrote /host/etc/cni/net.d/10-calico.conflist" in install.stdout

    conflist = json.loads((net_dir / "10-calico.conflist").read_text())
    calico = conflist["plugins"][0]
    assert (calico["type"], calico["nodename"], calico["mtu"]) == ("calico", "node-a", 1400)
    assert calico["ipam"]["type"] == "calico-ipam"
    assert not (net_dir / "calico-kubeconfig").exists()  # no service account outside a pod

    # The installed plugins run on this host, with the host's Python, as a runtime execs them.
    for plugin in ("calico", "calico-ipam"):
        path = bin_dir / plugin
        assert os.access(path, os.X_OK)
        out = subprocess.run(
            [str(path)], input="{}", env={"CNI_COMMAND": "VERSION"},
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "1.0.0" in json.loads(out.stdout)["supportedVersions"]
    libs = [p.name for p in bin_dir.iterdir() if p.name.startswith("calico-py-")]
    assert len(libs) == 1, libs
