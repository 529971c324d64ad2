"""podman with its CNI backend, confined to a test's temp dirs: storage (--root/--runroot/
--tmpdir), a containers.conf of its own (CONTAINERS_CONF; nothing in /etc is written), /var/lib
replaced for it (confine.py), and its CNI network living in the node's namespace (nsenter).

Per /work/shared/ENVIRONMENT.md: runc (crun refuses hybrid cgroups), explicit ulimits (root
lacks CAP_SYS_RESOURCE), nsenter rather than `ip netns exec` (which remounts /sys), and an
image imported from a busybox-static rootfs tarball (there is no registry).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from tests.cni_runtimes.confine import with_private_var_lib
from tests.cni_runtimes.node import CalicoNode, in_netns

BUSYBOX = Path("/bin/busybox")


def missing_tools() -> str:
    for tool in ("podman", "runc", "conmon"):
        if shutil.which(tool) is None and not Path(f"/usr/libexec/podman/{tool}").exists():
            return f"{tool} not installed (scripts/setup.sh installs podman, runc)"
    if not BUSYBOX.exists() or "static" not in _file_kind(BUSYBOX):
        return "busybox-static not installed"
    return ""


def _file_kind(path: Path) -> str:
    # A dynamically linked busybox would need its libraries in the image.
    with path.open("rb") as f:
        head = f.read(1 << 16)
    return "dynamic" if b"ld-linux" in head else "static"


def containers_conf(node: CalicoNode) -> str:
    return f"""[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["{node.bin_dir}"]
network_config_dir = "{node.conf_dir}"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
"""


class Podman:
    def __init__(self, node: CalicoNode) -> None:
        self.node = node
        self.dir = node.work / "podman"
        self.conf = self.dir / "containers.conf"
        self.image = f"localhost/cpt-busybox:{node.tag}"
        self.imported = False

    def setup(self) -> None:
        for sub in ("root", "runroot", "tmp", "var-lib"):
            (self.dir / sub).mkdir(parents=True)
        self.conf.write_text(containers_conf(self.node))
        tarball = self._busybox_rootfs()
        out = self.run("import", str(tarball), self.image)
        assert out.returncode == 0, out.stdout + out.stderr
        self.imported = True

    def _busybox_rootfs(self) -> Path:
        tarball = self.dir / "busybox-rootfs.tar"
        with tarfile.open(tarball, "w") as tar:
            for name in ("bin", "etc", "tmp"):
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, "bin/busybox")
            link = tarfile.TarInfo("bin/sh")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        return tarball

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = in_netns(
            self.node.netns,
            "podman",
            "--root", str(self.dir / "root"),
            "--runroot", str(self.dir / "runroot"),
            "--tmpdir", str(self.dir / "tmp"),
            *args,
        )  # fmt: skip
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        return subprocess.run(
            with_private_var_lib(self.dir / "var-lib", argv),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cleanup(self) -> None:
        """Every container, then the imported image; storage goes with the node's temp dir."""
        if self.conf.exists():
            self.run("rm", "--all", "--force", "--time", "0")
            if self.imported:
                self.run("rmi", "--force", self.image)
