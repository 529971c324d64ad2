"""The project's images as tests/images and benchmarks/images.py run them: podman with a
containers.conf of its own (CONTAINERS_CONF; nothing under /etc written), each service with the
capabilities images/README.md lists and its socket directory mounted from the host, so the
caller probes gRPC health from outside without a `podman exec` per poll.

    build_images()                       # scripts/build-images.sh (cached: seconds)
    with PodmanSession(tmp) as podman:
        with podman.service("calico-ipamd") as svc:
            svc.wait_healthy()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cni_client.health_probe import probe

REPO = Path(__file__).resolve().parents[2]
PREFIX = "localhost/calico-py"
PYBASE = f"{PREFIX}/python-base:bookworm"
NAME_PREFIX = "calico-py-test-"
BUILD_TIMEOUT_S = 1200


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


@dataclass(frozen=True)
class ServiceImage:
    """How one service image is run: the capabilities it is given (all others dropped), the
    user it must run as, and where its socket is."""

    name: str
    socket_env: str
    socket_name: str
    caps: tuple[str, ...] = ()
    user: str = "999:999"
    env: Mapping[str, str] = field(default_factory=dict)
    # `--volume` arguments the service needs wherever it runs (not its socket directory).
    volumes: tuple[str, ...] = ()

    @property
    def image(self) -> str:
        return f"{PREFIX}/{self.name}:{project_version()}"


SERVICES = {
    s.name: s
    for s in (
        ServiceImage("calico-ipamd", "CALICO_IPAM_SOCKET", "ipam.sock"),
        # As deployed (images/README.md): NET_ADMIN, SYS_ADMIN (setns into pods), and the
        # host's /proc/sys/net writable at /host/proc/sys/net (its own /proc/sys is
        # read-only; Felix refuses to start without a writable one).
        ServiceImage(
            "calico-felix",
            "CALICO_FELIX_SOCKET",
            "felix.sock",
            ("NET_ADMIN", "SYS_ADMIN"),
            "0:999",
            env={"FELIX_PROCSYSNETPATH": "/host/proc/sys/net"},
            volumes=("/proc/sys/net:/host/proc/sys/net",),
        ),
        ServiceImage(
            "calico-bgpd",
            "CALICO_BGPD_SOCKET",
            "bgpd.sock",
            ("NET_ADMIN", "NET_BIND_SERVICE"),
            "0:999",
        ),
        ServiceImage("calico-typha", "TYPHA_SOCKET", "typha.sock"),
        ServiceImage(
            "calico-kube-controllers", "CALICO_KUBE_CONTROLLERS_SOCKET", "kube-controllers.sock"
        ),
    )
}
ALL_IMAGES = (*SERVICES, "calico-cni")


def missing_podman() -> str:
    """Why podman cannot run containers here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root (podman with runc and host-mounted socket directories)"
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/setup.sh installs podman, runc)"
    return ""


def containers_conf(directory: Path) -> Path:
    """The host's workarounds (../shared/ENVIRONMENT.md): explicit ulimits (root lacks
    CAP_SYS_RESOURCE) and runc (crun refuses hybrid cgroups)."""
    path = directory / "containers.conf"
    path.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "none"\n'
    )
    return path


def build_images(names: Sequence[str] = (), conf: Path | None = None) -> float:
    """Run scripts/build-images.sh (layer-cached: ~7 s when nothing changed); seconds taken."""
    env = dict(os.environ)
    if conf is not None:
        env["CONTAINERS_CONF"] = str(conf)
    start = time.monotonic()
    out = subprocess.run(
        ["bash", str(REPO / "scripts/build-images.sh"), *names],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    if out.returncode != 0:
        raise RuntimeError(f"scripts/build-images.sh failed:\n{out.stdout}\n{out.stderr}")
    return time.monotonic() - start


@dataclass
class Container:
    podman: PodmanSession
    name: str
    spec: ServiceImage
    socket_dir: Path
    started_at: float

    @property
    def socket(self) -> Path:
        return self.socket_dir / self.spec.socket_name

    def wait_healthy(self, timeout_s: float = 60.0, poll_s: float = 0.02) -> float:
        """Seconds from `podman run` to the first SERVING answer on the socket."""
        deadline = time.monotonic() + timeout_s
        problem = "not started"
        while time.monotonic() < deadline:
            if self.socket.exists():
                problem = probe(str(self.socket), timeout_s=2.0)
                if not problem:
                    return time.monotonic() - self.started_at
            if not self.running():
                break
            time.sleep(poll_s)
        raise AssertionError(f"{self.name}: not healthy ({problem})\n{self.logs()}")

    def running(self) -> bool:
        out = self.podman.run("inspect", "--format", "{{.State.Running}}", self.name)
        return out.stdout.strip() == "true"

    def logs(self) -> str:
        out = self.podman.run("logs", "--tail", "40", self.name)
        return out.stdout + out.stderr


class PodmanSession:
    """podman with a containers.conf in `work`; removes every container it started, by name.
    Socket directories go under a short temp dir (a Unix socket path has at most 107 bytes)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.sockets = Path(tempfile.mkdtemp(prefix="cpi-"))
        self.conf = containers_conf(work)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        self.started: list[str] = []

    def __enter__(self) -> PodmanSession:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in reversed(self.started):
            self.run("rm", "--force", "--time", "5", name, timeout=60)
        shutil.rmtree(self.sockets, ignore_errors=True)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def new_name(self, what: str) -> str:
        name = f"{NAME_PREFIX}{what}-{uuid.uuid4().hex[:8]}"
        self.started.append(name)  # before `run`: a half-started container is removed too
        return name

    @contextlib.contextmanager
    def service(
        self,
        service: str,
        extra_env: Mapping[str, str] | None = None,
        network: str = "none",
        files: Mapping[str, str] | None = None,
    ) -> Iterator[Container]:
        """Start the service's image detached with only its capabilities and its socket
        directory on the host (holding `files`, seen at /var/run/calico-host); remove it
        (SIGTERM, then SIGKILL after 5 s) afterwards."""
        spec = SERVICES[service]
        name = self.new_name(service)
        socket_dir = self.sockets / name
        socket_dir.mkdir()
        socket_dir.chmod(0o777)  # the image's user (999) creates its socket here
        for file_name, text in (files or {}).items():
            (socket_dir / file_name).write_text(text)
            (socket_dir / file_name).chmod(0o644)
        env = {
            spec.socket_env: f"/var/run/calico-host/{spec.socket_name}",
            **spec.env,
            **(extra_env or {}),
        }
        argv = [
            "run", "--detach", "--name", name, f"--network={network}",
            "--cap-drop=all", *(f"--cap-add={c}" for c in spec.caps),
            "--health-interval=disable",  # no systemd timers here; `healthcheck run` by hand
            "--volume", f"{socket_dir}:/var/run/calico-host",
            *(f"--volume={v}" for v in spec.volumes),
            *(f"--env={k}={v}" for k, v in env.items()),
        ]  # fmt: skip
        started = time.monotonic()
        out = self.run(*argv, spec.image)
        assert out.returncode == 0, f"podman run {service}: {out.stderr}"
        try:
            yield Container(self, name, spec, socket_dir, started)
        finally:
            self.run("rm", "--force", "--time", "5", name, timeout=60)
            self.started.remove(name)
            shutil.rmtree(socket_dir, ignore_errors=True)
