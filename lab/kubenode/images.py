"""Images for a node without a registry: built here as OCI archives, imported into containerd.

Nothing can be pulled on this machine, so the sandbox image (`pause`, a static C program built
with gcc) and a test image (Debian's busybox-static) are made locally, each a single-layer OCI
image archive written with the standard library, and imported with `ctr -n k8s.io images
import` under full names (localhost/...), which the CRI and the kubelet resolve as given. Pods
use `imagePullPolicy: Never` or `IfNotPresent`. The project's own images come the same way
from `podman save` (a docker-archive keeps its name, localhost/calico-py/<service>:latest).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.kubenode import layout

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The sandbox's one process: holds the pod's namespaces, reaps orphans, exits on TERM/INT.
PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void leave(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGTERM, leave);
    signal(SIGINT, leave);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"""


class ImageError(RuntimeError):
    pass


def _add_blob(archive: tarfile.TarFile, data: bytes, media_type: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _layer(root: Path) -> bytes:
    """The directory as an uncompressed tar layer, owned by root, timestamps zeroed."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                path = Path(dirpath, name)
                info = layer.gettarinfo(str(path), str(path.relative_to(root)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as data:
                        layer.addfile(info, data)
                else:
                    layer.addfile(info)
    return buffer.getvalue()


def write_archive(root: Path, ref: str, out: Path, cmd: Sequence[str]) -> Path:
    """An OCI image archive of `root` named `ref` whose default command is `cmd`."""
    layer = _layer(root)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": list(cmd), "Env": [PATH_ENV]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    with tarfile.open(out, "w") as archive:
        layer_desc = _add_blob(archive, layer, "application/vnd.oci.image.layer.v1.tar")
        config_desc = _add_blob(
            archive, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = _add_blob(
            archive, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
        )
        manifest_desc["annotations"] = {
            "io.containerd.image.name": ref,
            "org.opencontainers.image.ref.name": ref,
        }
        index = {"schemaVersion": 2, "manifests": [manifest_desc]}
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out


def _rootfs_dirs(root: Path) -> None:
    # Mount points runc expects; /etc for the hosts/resolv.conf files the kubelet mounts.
    for name in ("proc", "sys", "dev", "etc", "tmp", "bin"):
        (root / name).mkdir(exist_ok=True)


def build_pause(out_dir: Path) -> Path:
    """The sandbox image from a static C `pause` (gcc -static; ~700 KiB)."""
    if shutil.which("gcc") is None:
        raise ImageError("gcc not found: the pause image is built with gcc -static (apt gcc)")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        work = Path(tmp)
        (work / "pause.c").write_text(PAUSE_C)
        root = work / "rootfs"
        root.mkdir()
        _rootfs_dirs(root)
        proc = subprocess.run(
            ["gcc", "-static", "-Os", "-s", "-o", str(root / "pause"), str(work / "pause.c")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise ImageError(f"gcc -static pause.c: {proc.stderr.strip()}")
        return write_archive(root, layout.PAUSE_IMAGE, out_dir / "pause.tar", ["/pause"])


def build_busybox(out_dir: Path) -> Path:
    """A test image from Debian's busybox-static: sh, sleep, wget, nc, httpd, ip."""
    if not BUSYBOX.exists():
        raise ImageError(f"{BUSYBOX} not found (Debian package busybox-static)")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        _rootfs_dirs(root)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        applets = subprocess.run(
            [str(BUSYBOX), "--list"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        return write_archive(root, layout.BUSYBOX_IMAGE, out_dir / "busybox.tar", ["sh"])


PROJECT_IMAGE_PREFIX = "localhost/calico-py/"  # scripts/build-images.sh names them so


def _podman(*args: str, timeout: float = 600) -> str:
    if shutil.which("podman") is None:
        raise ImageError("images: podman is not installed (an image name needs its store)")
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise ImageError(f"images: podman {' '.join(args[:2])}: {proc.stderr.strip()}")
    return proc.stdout


def project_images() -> list[str]:
    """The project's images in podman's store (`<prefix><service>:latest`)."""
    listed = _podman("images", "--format", "{{.Repository}}:{{.Tag}}", timeout=60).split()
    found = sorted(
        {r for r in listed if r.startswith(PROJECT_IMAGE_PREFIX) and r.endswith(":latest")}
    )
    if not found:
        raise ImageError(
            f"images: no {PROJECT_IMAGE_PREFIX}*:latest in podman's store "
            "(scripts/build-images.sh builds them)"
        )
    return found


def podman_save(refs: Sequence[str], out: Path) -> Path:
    """Images from podman's store as one docker-archive (names kept; shared layers once)."""
    out.unlink(missing_ok=True)
    _podman("save", "--format", "docker-archive", "--multi-image-archive", "-o", str(out), *refs)
    return out


def archive_names(archive: Path) -> list[str]:
    """The image names an archive carries: a docker-archive's RepoTags, an OCI archive's
    name annotations."""
    with tarfile.open(archive) as tar:
        names: list[str] = []
        try:
            member = tar.extractfile("manifest.json")
        except KeyError:
            member = None
        if member is not None:
            for entry in json.load(member):
                names += [str(tag) for tag in entry.get("RepoTags") or []]
            return names
        index = tar.extractfile("index.json")
        if index is None:
            raise ImageError(f"images: {archive} is neither a docker-archive nor an OCI archive")
        for manifest in json.load(index).get("manifests", []):
            annotations = manifest.get("annotations") or {}
            name = annotations.get("io.containerd.image.name") or annotations.get(
                "org.opencontainers.image.ref.name"
            )
            if name:
                names.append(str(name))
        return names


def _ctr(ctr: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ctr, "--address", layout.CONTAINERD_SOCKET, "-n", layout.IMAGE_NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def import_archive(ctr: str, archive: Path) -> list[str]:
    """Import one archive into containerd's CRI namespace; the image names it brought."""
    try:
        names = archive_names(archive)
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise ImageError(f"images: {archive}: {exc}") from exc
    if not names:
        raise ImageError(f"images: {archive} names no image (pods could not refer to it)")
    proc = _ctr(ctr, "images", "import", str(archive), timeout=600)
    if proc.returncode != 0:
        raise ImageError(f"ctr images import {archive}: {proc.stderr.strip()}")
    present = set(_ctr(ctr, "images", "ls", "-q").stdout.split())
    missing = [n for n in names if n not in present]
    if missing:
        raise ImageError(f"ctr images import {archive}: {', '.join(missing)} not in containerd")
    return names
