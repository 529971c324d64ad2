"""`up` and `down` of the single-node Kubernetes: the order things start and stop in.

up: snapshot the host; the node's link and unreachable routes; images; containerd; etcd and
the API server; controller manager and scheduler; kubelet, until the node is Ready; then,
when asked, the user's images and manifests. A failure part way takes down what was made.

down (idempotent, also after a crashed `up`): delete the workloads so the kubelet runs every
pod's CNI DEL while the CNI's agents still run (controllers' pods, then ordinary pods, then
DaemonSets, then the rest); stop the kubelet, controllers and scheduler; remove what containerd
still holds and stop it; stop what is still in the node's cgroups (pods, shims); stop the API
server and etcd; remove the routes and link; restore the host from the snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import apiserver
from lab.apiserver import ApiServer
from lab.kubenode import (
    control_plane,
    hostroutes,
    hostsnap,
    images,
    layout,
    node,
    runtime,
    tools,
)
from lab.kubenode.state import LOCK_FILE, KubeState, locked
from lab.processes import ProcessRecord, is_alive, process_start_time, stop

STOP_TIMEOUTS = {"kubelet": 15.0, "containerd": 15.0}
Say = Callable[[str], None]


class KubeNodeError(RuntimeError):
    pass


@dataclass
class UpOptions:
    build: bool = True
    images: Sequence[str] = ()  # archive files or podman image names
    project_images: bool = False  # every localhost/calico-py/*:latest in podman's store
    manifests: Path | None = None


@dataclass
class DownReport:
    stopped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)


def _quiet(_text: str) -> None:
    pass


def up(directory: Path, options: UpOptions, say: Say = _quiet) -> KubeState:
    with locked(directory):
        if (directory / "state.json").exists() or (directory / "snapshot.json").exists():
            raise KubeNodeError(
                f"{directory} holds a node already (up, or a crashed up): calico-lab kube down"
            )
        _clear(directory)  # logs of an earlier node
        state = KubeState(directory)
        try:
            _up(state, options, say)
        except BaseException:
            say("up failed: taking down what was made")
            report = _down(state, say, keep_logs=True)
            for problem in report.problems:
                say(f"  {problem}")
            raise
        return state


def _timed(state: KubeState, name: str, started: float) -> float:
    state.timings[name] = round(time.monotonic() - started, 2)
    state.save()
    return state.timings[name]


def _record(state: KubeState) -> Callable[[ProcessRecord], None]:
    def on_started(record: ProcessRecord) -> None:
        state.processes[record.name] = record
        state.save()

    return on_started


def _up(state: KubeState, options: UpOptions, say: Say) -> None:
    directory = state.directory
    t0 = time.monotonic()
    lacking = tools.missing()
    if lacking:
        if not options.build:
            raise KubeNodeError("missing (and --no-build): " + "; ".join(lacking))
        say("building the node's tools (cold: ~8 min on 2 cores; log: build.log)")
    tools.build(directory / "build.log")
    found = tools.find()
    say(f"tools ready in {_timed(state, 'tools', t0):.1f} s")

    state.save_snapshot(hostsnap.take(layout.UNREACHABLE_RANGES))
    state.save()
    t_up = time.monotonic()
    hostroutes.add_node_link(layout.NODE_LINK, layout.NODE_ADDRESS)
    state.link = layout.NODE_LINK
    state.save()
    for cidr in layout.UNREACHABLE_RANGES:
        if hostroutes.add_unreachable(cidr):
            state.unreachable.append(cidr)
            state.save()

    image_dir = directory / "images"
    image_dir.mkdir(exist_ok=True)
    archives = [images.build_pause(image_dir), images.build_busybox(image_dir)]

    ctrd = runtime.start(found, directory)
    _record(state)(ctrd)
    runtime.wait_ready(found, ctrd)
    for archive in archives:
        state.images += images.import_archive(found.ctr, archive)
    state.save()

    pki = control_plane.make_pki(directory / "pki")
    server = control_plane.start_apiserver(directory / "control-plane", pki, _record(state))
    state.apiserver = server.to_json()
    state.save()
    _record(state)(control_plane.start_controller_manager(found, server, directory))
    _record(state)(control_plane.start_scheduler(found, server, directory))
    say(f"control plane ready in {time.monotonic() - t_up:.1f} s")

    kubelet = node.start(found, server, pki, directory)
    _record(state)(kubelet)
    node.wait_ready(server, kubelet)
    say(f"node {layout.NODE_NAME} Ready {_timed(state, 'up_to_ready', t_up):.1f} s after start")
    control_plane.wait_for_pods_prerequisites(server)
    say(f"default ServiceAccount there {_timed(state, 'up_to_pods', t_up):.1f} s after start")

    refs = list(options.images)
    if options.project_images:
        refs += images.project_images()
    if refs:
        t_images = time.monotonic()
        archives = [Path(r) for r in refs if Path(r).is_file()]
        named = [r for r in refs if not Path(r).is_file()]
        if named:
            archives.append(images.podman_save(named, image_dir / "podman.tar"))
        for archive in archives:
            state.images += images.import_archive(found.ctr, archive)
            state.save()
        (image_dir / "podman.tar").unlink(missing_ok=True)  # in containerd now; /run is RAM
        say(f"{len(refs)} images imported in {_timed(state, 'images', t_images):.1f} s")
    if options.manifests is not None:
        apply_manifests(server, options.manifests, say)


def apply_manifests(server: ApiServer, manifests: Path, say: Say) -> None:
    """`kubectl apply -k DIR` when DIR is a kustomization, else `kubectl apply -f PATH`."""
    if not manifests.exists():
        raise KubeNodeError(f"manifests: {manifests} does not exist")
    kustomized = manifests.is_dir() and any(
        (manifests / name).exists()
        for name in ("kustomization.yaml", "kustomization.yml", "Kustomization")
    )
    args = ["apply", "-k", str(manifests)] if kustomized else ["apply", "-f", str(manifests)]
    if manifests.is_dir() and not kustomized:
        args.append("--recursive")
    proc = server.kubectl(args, timeout=120)
    say(proc.stdout.strip())
    if proc.returncode != 0:
        raise KubeNodeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")


def server_of(state: KubeState) -> ApiServer | None:
    return ApiServer.from_json(state.apiserver) if state.apiserver else None


def down(directory: Path, say: Say = _quiet) -> DownReport:
    with locked(directory):
        if not (directory / "state.json").exists():
            if (directory / "snapshot.json").exists():
                return _down(KubeState(directory), say)
            say(f"nothing to take down ({directory} holds no node)")
            return DownReport()
        return _down(KubeState.load(directory), say)


def _alive(state: KubeState, name: str) -> bool:
    record = state.processes.get(name)
    return record is not None and is_alive(record)


def _delete_workloads(server: ApiServer, say: Say) -> None:
    """Workloads before DaemonSets, so the CNI's agents still answer every pod's DEL."""

    def kubectl(*args: str) -> None:
        proc = server.kubectl(list(args), timeout=120)
        if proc.returncode != 0:
            say(f"  kubectl {' '.join(args)}: {proc.stderr.strip()[:300]}")

    kubectl("delete", "deployments,replicasets,statefulsets,jobs", "--all", "-A", "--wait=false")
    proc = server.kubectl(["get", "pods", "-A", "-o", "json"], timeout=60)
    pods = json.loads(proc.stdout).get("items", []) if proc.returncode == 0 else []
    ordinary = [p for p in pods if not p.get("spec", {}).get("hostNetwork") and not _daemon_pod(p)]
    for pod in ordinary:
        meta = pod["metadata"]
        kubectl(
            "delete", "pod", "-n", meta["namespace"], meta["name"],
            "--grace-period=1", "--wait=false",
        )  # fmt: skip
    for pod in ordinary:
        meta = pod["metadata"]
        kubectl(
            "wait", "--for=delete", "-n", meta["namespace"], f"pod/{meta['name']}", "--timeout=60s"
        )
    kubectl("delete", "daemonsets", "--all", "-A", "--wait=false")
    kubectl("delete", "pods", "--all", "-A", "--grace-period=1", "--timeout=60s")


def _daemon_pod(pod: dict[str, Any]) -> bool:
    owners = pod.get("metadata", {}).get("ownerReferences", [])
    return any(o.get("kind") == "DaemonSet" for o in owners)


def _shim_pids(shim: str) -> list[int]:
    """containerd shims of our containerd (by their executable), which outlive it."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/exe") == shim:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _kill(pids: Sequence[int], name: str, report: DownReport) -> None:
    for pid in pids:
        start = process_start_time(pid)
        if start is None:
            continue
        record = ProcessRecord(name, pid, start, [], "")
        if stop(record, timeout=3.0):
            report.stopped.append(f"{name} ({pid})")
        else:
            report.problems.append(f"{name} ({pid}) still running")


def _down(state: KubeState, say: Say, keep_logs: bool = False) -> DownReport:
    report = DownReport()
    t0 = time.monotonic()
    server = server_of(state)
    if server is not None and _alive(state, "kube-apiserver") and _alive(state, "kubelet"):
        _delete_workloads(server, say)
        say(f"workloads deleted in {time.monotonic() - t0:.1f} s")
    for name in ("kubelet", "kube-scheduler", "kube-controller-manager"):
        record = state.processes.get(name)
        if record is not None:
            if stop(record, timeout=STOP_TIMEOUTS.get(name, 10.0)):
                report.stopped.append(f"{name} ({record.pid})")
            else:
                report.problems.append(f"{name} ({record.pid}) still running")
    found = tools.find() if not tools.missing() else None
    ctrd = state.processes.get("containerd")
    if ctrd is not None and found is not None:
        if is_alive(ctrd):
            report.problems += runtime.remove_all_containers(found)
        if stop(ctrd, timeout=STOP_TIMEOUTS["containerd"]):
            report.stopped.append(f"containerd ({ctrd.pid})")
        else:
            report.problems.append(f"containerd ({ctrd.pid}) still running")
    snapshot = state.snapshot()
    if found is not None:
        _kill(
            _shim_pids(str(Path(found.containerd_bin_dir) / "containerd-shim-runc-v2")),
            "containerd-shim",
            report,
        )
    if snapshot is not None:
        _kill(hostsnap.cgroup_pids(snapshot.get("cgroups", [])), "pod process", report)
    if server is not None:
        stopped = apiserver.stop_server(server, remove=False)
        report.stopped += stopped.stopped
        report.problems += stopped.problems
    report.problems += hostroutes.remove_unreachable(state.unreachable)
    if state.link:
        hostroutes.remove_link(state.link)
    if snapshot is not None:
        report.problems += hostsnap.restore(snapshot)
        report.differences = hostsnap.differences(snapshot, hostsnap.take(snapshot["ranges"]))
    say(f"down in {time.monotonic() - t0:.1f} s")
    if report.problems or report.differences:
        return report  # the record stays for the next `down`
    if keep_logs:  # a failed `up`: its logs say why
        for name in ("state.json", "snapshot.json"):
            (state.directory / name).unlink(missing_ok=True)
    else:
        _clear(state.directory)  # kept otherwise: the record for the next `down`, the logs
    return report


def _clear(directory: Path) -> None:
    """Everything in the state directory but the lock (held by the caller)."""
    for entry in directory.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
