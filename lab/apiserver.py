"""A real Kubernetes API server (kube-apiserver over its own etcd), started and stopped by PID.

`start` makes a working directory of its own (etcd's data, the serving certificate, the token
file, the service-account key pair, a kubeconfig, the two logs), picks free ports, starts etcd
and then kube-apiserver, and returns once /readyz answers `ok`. Given a network namespace it
runs both inside it, bound to the given address (the lab: its network namespace and bridge
address); otherwise on loopback. `stop` stops both by the PIDs it recorded (API server first,
SIGTERM then SIGKILL after a timeout) and removes the working directory.

Authentication is by static bearer tokens only (`--token-auth-file`; anonymous requests are
refused with 401), authorization is `Node,RBAC`: `admin` is in `system:masters`, any other user
asked for gets a token and only the rights RBAC later grants it (none at first: 403).

The binaries come from scripts/build-kube.sh (kube-apiserver, kubectl and kube-etcd, an etcd
3.7 built for it, in .venv/bin); CALICO_KUBE_APISERVER, CALICO_KUBECTL and CALICO_KUBE_ETCD
override each path. Flags and orderings follow what was measured to work on this kind of host:
a loopback advertise address needs `--endpoint-reconciler-type=none`; Debian's etcd 3.4 lacks
the watch-progress requests this API server makes and stalls its shutdown.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import netns
from lab.etcd import healthy as etcd_healthy
from lab.processes import ProcessRecord, is_alive, log_tail, start_detached, stop

ADMIN_USER = "admin"
ADMIN_GROUP = "system:masters"
# Services' cluster IPs: overlaps no lab pool, node subnet or 192.0.2.0/24 (the lab allocates
# from the same range where it has no API server: lab/services.py).
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# Node ports (Kubernetes' default, stated so the lab's cases and commands can rely on it).
SERVICE_NODE_PORT_RANGE = "30000-32767"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ETCD_START_TIMEOUT = 30.0
APISERVER_START_TIMEOUT = 90.0  # ~2.5 s idle; much longer while other builds load the host
APISERVER_STOP_TIMEOUT = 20.0
START_ATTEMPTS = 3  # a free port can be taken between picking it and binding it
CALICO_CRDS_FILE = Path(__file__).resolve().parent.parent / "k8s" / "crds" / "calico-crds.yaml"

# (binary's name in the venv's bin/, the environment variable overriding its path)
_BINARIES = {
    "kube-apiserver": "CALICO_KUBE_APISERVER",
    "kubectl": "CALICO_KUBECTL",
    "kube-etcd": "CALICO_KUBE_ETCD",
}


class ApiServerError(RuntimeError):
    pass


def binary(name: str) -> Path | None:
    """Where one of the binaries is: its environment override, else the venv's bin/.

    Not PATH: another kubectl or etcd there (Debian's etcd 3.4, a distribution's kubectl of
    another version) would quietly change what the tests measure.
    """
    override = os.environ.get(_BINARIES[name])
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    # No resolve(): the venv's python is a symlink to the system interpreter.
    beside = Path(sys.executable).parent / name
    return beside if os.access(beside, os.X_OK) else None


def missing_binaries() -> str | None:
    """Why the API server cannot run here, or None when every binary is present."""
    missing = [name for name in _BINARIES if binary(name) is None]
    if not missing:
        return None
    return (
        f"{', '.join(missing)} not found (built by scripts/build-kube.sh, run from "
        "scripts/setup.sh, which needs a Go toolchain; or set "
        f"{', '.join(_BINARIES[m] for m in missing)})"
    )


def _require(name: str) -> str:
    path = binary(name)
    if path is None:
        raise ApiServerError(missing_binaries() or f"{name} not found")
    return str(path)


@dataclass
class ApiServer:
    """A running API server and everything needed to use and to stop it."""

    address: str
    port: int
    work_dir: str
    admin_token: str
    tokens: dict[str, str]  # user -> bearer token (admin included)
    netns: str | None  # path of the network namespace both processes run in
    etcd: ProcessRecord
    apiserver: ProcessRecord | None = None
    etcd_url: str = ""
    extra_args: list[str] = field(default_factory=list)  # more kube-apiserver flags

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The self-signed serving certificate with its CA (a client's certificate-authority)."""
        return Path(self.work_dir) / "certs" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig."""
        return Path(self.work_dir) / "kubeconfig"

    def records(self) -> list[ProcessRecord]:
        return [r for r in (self.apiserver, self.etcd) if r is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "work_dir": self.work_dir,
            "admin_token": self.admin_token,
            "tokens": dict(self.tokens),
            "netns": self.netns,
            "etcd": self.etcd.to_json(),
            "apiserver": self.apiserver.to_json() if self.apiserver else None,
            "etcd_url": self.etcd_url,
            "extra_args": list(self.extra_args),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApiServer:
        apiserver = data.get("apiserver")
        return cls(
            address=str(data["address"]),
            port=int(data["port"]),
            work_dir=str(data["work_dir"]),
            admin_token=str(data["admin_token"]),
            tokens={str(k): str(v) for k, v in data.get("tokens", {}).items()},
            netns=data.get("netns"),
            etcd=ProcessRecord.from_json(data["etcd"]),
            apiserver=ProcessRecord.from_json(apiserver) if apiserver else None,
            etcd_url=str(data.get("etcd_url", "")),
            extra_args=[str(a) for a in data.get("extra_args") or []],
        )

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def write_kubeconfig(self, path: Path, user: str = ADMIN_USER) -> Path:
        """A kubeconfig for one of the users this server has a token for."""
        token = self.tokens.get(user)
        if token is None:
            raise ApiServerError(f"user: no token for {user!r} (known: {sorted(self.tokens)})")
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "calico",
                    "cluster": {"server": self.url, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "calico", "user": user}}],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def kubectl(
        self, args: Sequence[str], user: str = ADMIN_USER, **run: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this server as `user` (inside its namespace when it has one)."""
        config = self.kubeconfig
        if user != ADMIN_USER:
            config = self.write_kubeconfig(Path(self.work_dir) / f"kubeconfig-{user}", user)
        argv = [_require("kubectl"), f"--kubeconfig={config}", *args]
        run.setdefault("capture_output", True)
        run.setdefault("text", True)
        run.setdefault("timeout", 60)
        with _inside(self.netns):
            return subprocess.run(argv, **run)

    def get(self, path: str, user: str | None = ADMIN_USER, timeout: float = 5.0) -> int:
        """HTTP status of a GET as `user` (None: no credentials at all)."""
        request = urllib.request.Request(self.url + path)
        if user is not None:
            request.add_header("Authorization", f"Bearer {self.tokens[user]}")
        with _inside(self.netns):
            try:
                with urllib.request.urlopen(
                    request, timeout=timeout, context=self.ssl_context()
                ) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return int(error.code)


@contextlib.contextmanager
def _inside(path: str | None) -> Iterator[None]:
    if path is None:
        yield
    else:
        with netns.inside(path):
            yield


def free_port(address: str) -> int:
    """A port free on `address` now (in the current namespace); the kernel picks it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _openssl(args: Sequence[str]) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ApiServerError(f"openssl {' '.join(args)}: {proc.stderr.strip()}")


def _wait(what: str, ready: Callable[[], bool], record: ProcessRecord, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not is_alive(record):
            raise ApiServerError(f"{what} exited while starting:\n{log_tail(record.log)}")
        time.sleep(0.1)
    raise ApiServerError(f"{what} not ready after {timeout:.0f} s:\n{log_tail(record.log)}")


def _token_file(path: Path, users: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """`token,user,uid,"group,group"` per user; returns user -> token."""
    tokens: dict[str, str] = {}
    lines = []
    for user, groups in users.items():
        if not user or any(c in user for c in ',"\n'):
            raise ApiServerError(f"users: {user!r} is not a valid user name")
        token = secrets.token_hex(16)
        tokens[user] = token
        lines.append(f'{token},{user},{user}-uid,"{",".join(groups)}"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return tokens


def _etcd_argv(work: Path, client_url: str, peer_url: str) -> list[str]:
    return [
        _require("kube-etcd"),
        "--name=kube",
        f"--data-dir={work / 'etcd-data'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=kube={peer_url}",
        "--initial-cluster-state=new",
        "--logger=zap",
        "--log-level=warn",
    ]


def _apiserver_argv(work: Path, server: ApiServer) -> list[str]:
    certs = work / "certs"
    return [
        _require("kube-apiserver"),
        f"--etcd-servers={server.etcd_url}",
        f"--bind-address={server.address}",
        f"--advertise-address={server.address}",
        f"--secure-port={server.port}",
        # Self-signs a serving certificate (with its CA) for the advertise address, 127.0.0.1
        # and localhost into certs/apiserver.crt.
        f"--cert-dir={certs}",
        f"--token-auth-file={work / 'tokens.csv'}",
        "--anonymous-auth=false",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={work / 'sa.pub'}",
        f"--service-account-signing-key-file={work / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        f"--service-node-port-range={SERVICE_NODE_PORT_RANGE}",
        # Nothing reconciles the `kubernetes` Service's endpoints: with a loopback advertise
        # address the default reconciler refuses to start, and no pod reaches it here anyway.
        "--endpoint-reconciler-type=none",
        # Without a drain period for watches, SIGTERM with watches open (every Calico daemon
        # holds several) hangs until SIGKILL: measured 20 s here, 2-3 s with this.
        "--shutdown-watch-termination-grace-period=2s",
        "--profiling=false",
        *server.extra_args,
    ]


def start(
    work_dir: Path,
    address: str = "127.0.0.1",
    netns_path: str | Path | None = None,
    users: Mapping[str, Sequence[str]] | None = None,
    on_started: Callable[[ProcessRecord], None] | None = None,
    port: int | None = None,
    extra_args: Sequence[str] = (),
) -> ApiServer:
    """Start etcd and kube-apiserver with their files in `work_dir` (made here, must not exist).

    `address`: where the API server listens (etcd listens on loopback only: the API server is
    its one client). `netns_path`: the network namespace both run in (None: the caller's).
    `users`: further users (name -> groups) to make tokens for besides `admin`.
    `on_started`: called with each process record the moment the process exists, so a caller
    keeping state (the lab) can record it before anything else can fail.
    `port`: the API server's port (None: a free one). `extra_args`: more kube-apiserver flags
    (e.g. `--etcd-compaction-interval=10s`).
    """
    for name in _BINARIES:
        _require(name)
    if shutil.which("openssl") is None:
        raise ApiServerError("openssl not found: install it (Debian package openssl)")
    all_users: dict[str, Sequence[str]] = {ADMIN_USER: [ADMIN_GROUP]}
    for user, groups in (users or {}).items():
        if user == ADMIN_USER:
            raise ApiServerError(f"users: {ADMIN_USER!r} is always made (in {ADMIN_GROUP})")
        all_users[user] = list(groups)
    work = Path(work_dir)
    try:
        work.mkdir(parents=True)
    except FileExistsError:
        raise ApiServerError(f"work_dir: {work} already exists") from None
    namespace = str(netns_path) if netns_path is not None else None
    server: ApiServer | None = None
    try:
        work.chmod(0o700)
        (work / "certs").mkdir()
        _openssl(["genrsa", "-out", str(work / "sa.key"), "2048"])
        _openssl(["rsa", "-in", str(work / "sa.key"), "-pubout", "-out", str(work / "sa.pub")])
        tokens = _token_file(work / "tokens.csv", all_users)
        with _inside(namespace):
            server = _start_etcd(work, address, tokens, namespace, on_started)
            server.extra_args = list(extra_args)
            _start_apiserver(work, server, on_started, port)
        server.write_kubeconfig(server.kubeconfig)
        return server
    except BaseException:
        if server is not None:
            stop_server(server)
        else:
            shutil.rmtree(work, ignore_errors=True)
        raise


def _lost_port_race(record: ProcessRecord) -> bool:
    """The process died because another took its port between our probe and its bind."""
    return not is_alive(record) and "address already in use" in log_tail(record.log).lower()


def _start_etcd(
    work: Path,
    address: str,
    tokens: dict[str, str],
    namespace: str | None,
    on_started: Callable[[ProcessRecord], None] | None,
) -> ApiServer:
    """etcd on two free loopback ports, healthy; the ApiServer record around it."""
    for attempt in range(1, START_ATTEMPTS + 1):
        client = f"http://127.0.0.1:{free_port('127.0.0.1')}"
        peer = f"http://127.0.0.1:{free_port('127.0.0.1')}"
        etcd = start_detached("kube-etcd", _etcd_argv(work, client, peer), work / "etcd.log")
        if on_started:
            on_started(etcd)
        server = ApiServer(
            address=address,
            port=0,
            work_dir=str(work),
            admin_token=tokens[ADMIN_USER],
            tokens=tokens,
            netns=namespace,
            etcd=etcd,
            etcd_url=client,
        )
        try:
            _wait("etcd", functools.partial(etcd_healthy, client), etcd, ETCD_START_TIMEOUT)
            return server
        except ApiServerError:
            if attempt == START_ATTEMPTS or not _lost_port_race(etcd):
                stop_server(server, remove=False)
                raise
            shutil.rmtree(work / "etcd-data", ignore_errors=True)
    raise AssertionError("unreachable")


def _start_apiserver(
    work: Path,
    server: ApiServer,
    on_started: Callable[[ProcessRecord], None] | None,
    port: int | None = None,
) -> None:
    """kube-apiserver on `port` (else a free port) of its address, ready (/readyz)."""
    attempts = START_ATTEMPTS if port is None else 1  # a fixed port taken stays taken
    for attempt in range(1, attempts + 1):
        server.port = port if port is not None else free_port(server.address)
        record = start_detached(
            "kube-apiserver", _apiserver_argv(work, server), work / "apiserver.log"
        )
        server.apiserver = record
        if on_started:
            on_started(record)
        try:
            _wait(
                "kube-apiserver",
                lambda: server.ca_file.exists() and _readyz(server),
                record,
                APISERVER_START_TIMEOUT,
            )
            return
        except ApiServerError:
            if attempt == attempts or not _lost_port_race(record):
                raise


def wait_ready(server: ApiServer, timeout: float = APISERVER_START_TIMEOUT) -> None:
    """Wait until a (re)started API server answers /readyz `ok`."""
    if server.apiserver is None:
        raise ApiServerError("kube-apiserver was never started")
    _wait("kube-apiserver", lambda: _readyz(server), server.apiserver, timeout)


def wait_etcd(server: ApiServer, timeout: float = ETCD_START_TIMEOUT) -> None:
    """Wait until a (re)started etcd of the API server is healthy."""
    _wait("etcd", functools.partial(etcd_healthy, server.etcd_url), server.etcd, timeout)


def _readyz(server: ApiServer) -> bool:
    try:
        return server.get("/readyz", timeout=2.0) == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


@dataclass
class StopReport:
    stopped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def stop_server(server: ApiServer, remove: bool = True) -> StopReport:
    """Stop the API server, then its etcd, by recorded PID; remove the work dir unless told not.

    Never raises for a process that is already gone; `problems` lists what could not be undone.
    """
    report = StopReport()
    timeouts = {"kube-apiserver": APISERVER_STOP_TIMEOUT, "kube-etcd": 10.0}
    for record in server.records():
        if stop(record, timeout=timeouts.get(record.name, 10.0)):
            report.stopped.append(f"{record.name} ({record.pid})")
        else:
            report.problems.append(f"{record.name} ({record.pid}) still running")
    if remove and not report.problems:
        shutil.rmtree(server.work_dir, ignore_errors=True)
        if Path(server.work_dir).exists():
            report.problems.append(f"{server.work_dir} remains")
    return report


def install_calico_crds(server: ApiServer, timeout: float = 30.0) -> list[str]:
    """Apply k8s/crds/calico-crds.yaml and wait until every CRD is Established; their names."""
    names = [
        str(doc["metadata"]["name"])
        for doc in yaml.safe_load_all(CALICO_CRDS_FILE.read_text())
        if doc
    ]
    applied = server.kubectl(["apply", "-f", str(CALICO_CRDS_FILE)])
    if applied.returncode != 0:
        raise ApiServerError(f"kubectl apply -f {CALICO_CRDS_FILE}: {applied.stderr.strip()}")
    waited = server.kubectl(
        [
            "wait",
            "--for=condition=Established",
            f"--timeout={timeout:.0f}s",
            *(f"crd/{name}" for name in names),
        ],
        timeout=timeout + 30,
    )
    if waited.returncode != 0:
        raise ApiServerError(f"Calico CRDs not Established: {waited.stderr.strip()}")
    return names
