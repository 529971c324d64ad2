"""Pods in a lab: objects, a namespace, the CNI plugin, the pod's server.

Creating a pod does what an API server plus a kubelet would: write the Namespace (when new)
and the Pod object (into the datastore, or to the lab's API server when it runs one:
lab/store.py), make the pod's network namespace, start its server process inside it, run
the `calico` CNI plugin's ADD on the pod's node, write the pod's status (podIPs, Running)
where Pods are API objects, and wait for the server to report its ports bound. Several pods,
on any nodes, are created concurrently. Removal runs DEL on the pod's node, stops the server
and deletes the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab import cni, endpointslices, netns, objects
from lab.lab import Lab, LabError, netns_prefix
from lab.podserver import parse_serve
from lab.processes import ProcessRecord, is_alive, log_tail, reap, start_detached, stop
from lab.state import PodState
from lab.store import LabStore

READY_TIMEOUT = 15.0
DEFAULT_SERVE = "tcp:80,udp:80"


@dataclass
class PodSpec:
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    serve: list[tuple[str, int]] = field(default_factory=list)
    node: str = ""  # "" places it on create_pods' node (default: the lab's first)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_pod_key(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise LabError(f"{text!r}: expected NAMESPACE/NAME")
    return namespace, name


def parse_labels(text: str) -> dict[str, str | None]:
    """ "a=1,b=2,c-" -> {"a": "1", "b": "2", "c": None} (a trailing '-' removes, as kubectl)."""
    out: dict[str, str | None] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if "=" in entry:
            key, _, value = entry.partition("=")
            out[key.strip()] = value.strip()
        elif entry.endswith("-"):
            out[entry[:-1].strip()] = None
        else:
            raise LabError(f"label {entry!r}: expected key=value or key-")
    return out


def merge_labels(current: Mapping[str, str], change: Mapping[str, str | None]) -> dict[str, str]:
    merged = dict(current)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def pod_netns_name(lab: Lab, namespace: str, name: str) -> str:
    return f"{netns_prefix(lab.state.name)}-{namespace}.{name}"


def _serve_text(serve: Sequence[tuple[str, int]]) -> list[str]:
    return [f"{proto}:{port}" for proto, port in serve]


def pod_file(lab: Lab, pod: PodState, suffix: str) -> Path:
    # Pod names may hold dots: build the name, never Path.with_suffix.
    return lab.pods_dir / f"{pod.namespace}.{pod.name}{suffix}"


def _start_server(lab: Lab, pod: PodState) -> ProcessRecord:
    lab.pods_dir.mkdir(parents=True, exist_ok=True)
    ready = pod_file(lab, pod, ".ready")
    with contextlib.suppress(FileNotFoundError):
        ready.unlink()
    argv = [
        sys.executable,
        "-m",
        "lab.podserver",
        "--netns",
        str(netns.netns_path(pod.netns)),
        "--name",
        pod.key,
        "--serve",
        ",".join(pod.serve),
        "--ready",
        str(ready),
    ]
    return start_detached(f"pod-server {pod.key}", argv, pod_file(lab, pod, ".log"))


async def _wait_ready(lab: Lab, pod: PodState) -> None:
    ready = pod_file(lab, pod, ".ready")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while not ready.exists():
        if pod.server is not None and not _alive(pod.server):
            log = log_tail(pod.server.log, 1500)
            raise LabError(f"pod server of {pod.key} exited:\n{log}")
        if loop.time() > deadline:
            raise LabError(f"pod server of {pod.key} not ready within {READY_TIMEOUT:.0f}s")
        await asyncio.sleep(0.02)


def _alive(record: ProcessRecord) -> bool:
    reap(record.pid)
    return is_alive(record)


async def ensure_namespaces(
    lab: Lab, labels_by_namespace: Mapping[str, Mapping[str, str] | None]
) -> None:
    """Create missing Namespace objects; given labels replace an existing one's labels."""
    async with LabStore(lab.state) as store:
        for name, labels in labels_by_namespace.items():
            await store.ensure_namespace(name, labels)


async def create_pods(lab: Lab, specs: Sequence[PodSpec], node_name: str | None = None) -> None:
    """Create pods concurrently, each on its spec's node (else `node_name`, else the first
    node); on failure the failed pods are removed again and the first error is raised (pods
    that came up stay, recorded)."""
    placed = [(spec, lab.node(spec.node or node_name)) for spec in specs]  # all nodes checked
    for spec in specs:
        if spec.key in lab.state.pods:
            raise LabError(f"pod {spec.key} already exists")
    await ensure_namespaces(lab, {spec.namespace: None for spec in specs})
    async with LabStore(lab.state) as store:
        await store.apply_all(
            [
                objects.pod(spec.namespace, spec.name, node.name, spec.labels, spec.serve)
                for spec, node in placed
            ]
        )
    pods: list[PodState] = []
    try:
        for spec, node in placed:
            pod = PodState(
                namespace=spec.namespace,
                name=spec.name,
                node=node.name,
                netns=pod_netns_name(lab, spec.namespace, spec.name),
                container_id=secrets.token_hex(32),
                labels=dict(spec.labels),
                serve=_serve_text(spec.serve),
            )
            lab.state.pods[pod.key] = pod
            pods.append(pod)
            lab.save()  # recorded before it exists: `down` can always find it
            netns.delete(pod.netns)  # a leftover of a crashed run of the same lab
            netns.create(pod.netns)
            pod.server = _start_server(lab, pod)
            lab.save()
    except BaseException:
        with contextlib.suppress(Exception):
            await remove_pods(lab, [p.key for p in pods], delete_objects=True)
        raise

    async def plumb(pod: PodState, store: LabStore) -> None:
        node = lab.node(pod.node)
        result = await cni.add(
            node.cni_config(),
            node.state.cni_bin_dir,
            pod.container_id,
            str(netns.netns_path(pod.netns)),
            pod.namespace,
            pod.name,
            node.netns_path,
        )
        pod.ips = cni.result_ips(result)
        pod.host_interface = cni.result_host_interface(result)
        if not pod.ips:
            raise LabError(f"CNI ADD for {pod.key} returned no address: {result}")
        await store.set_pod_running(pod.namespace, pod.name, pod.ips, node.address)
        await _wait_ready(lab, pod)

    async with LabStore(lab.state) as store:
        outcomes = await asyncio.gather(*(plumb(p, store) for p in pods), return_exceptions=True)
        lab.save()
        await endpointslices.sync(lab.state, store)
    failed = [p.key for p, o in zip(pods, outcomes, strict=True) if isinstance(o, BaseException)]
    if failed:
        with contextlib.suppress(Exception):
            await remove_pods(lab, failed, delete_objects=True)
        first = next(o for o in outcomes if isinstance(o, BaseException))
        raise LabError(f"pod {failed[0]}: {first}") from first


async def remove_pods(lab: Lab, keys: Sequence[str], delete_objects: bool = True) -> None:
    """CNI DEL, stop the server, delete the namespace (and the Pod objects)."""
    pods = [lab.pod(key) for key in keys]

    async def unplumb(pod: PodState) -> None:
        node = lab.node(pod.node)
        if node.daemons_alive():
            await cni.delete(
                node.cni_config(),
                node.state.cni_bin_dir,
                pod.container_id,
                str(netns.netns_path(pod.netns)),
                pod.namespace,
                pod.name,
                node.netns_path,
            )

    outcomes = await asyncio.gather(*(unplumb(p) for p in pods), return_exceptions=True)
    errors = [
        f"{p.key}: {o}" for p, o in zip(pods, outcomes, strict=True) if isinstance(o, BaseException)
    ]
    for pod in pods:
        if pod.server is not None and not stop(pod.server):
            errors.append(f"{pod.key}: server (pid {pod.server.pid}) survived")
            continue
        netns.delete(pod.netns)
        for suffix in (".ready", ".log"):
            with contextlib.suppress(FileNotFoundError):
                pod_file(lab, pod, suffix).unlink()
        del lab.state.pods[pod.key]
    lab.save()
    if delete_objects:  # not at `down`, where the datastore may already be gone
        async with LabStore(lab.state) as store:
            await endpointslices.sync(lab.state, store)
            await store.delete_if_present(
                [
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": p.name, "namespace": p.namespace},
                    }
                    for p in pods
                ],
            )
    if errors:
        raise LabError("; ".join(errors))


async def label_pod(lab: Lab, key: str, change: Mapping[str, str | None]) -> dict[str, str]:
    pod = lab.pod(key)
    async with LabStore(lab.state) as store:
        labels = merge_labels(await store.labels("Pod", pod.name, pod.namespace), change)
        await store.set_labels("Pod", pod.name, pod.namespace, labels)
        pod.labels = labels
        lab.save()
        await endpointslices.sync(lab.state, store)
    return labels


async def set_ready(lab: Lab, key: str, ready: bool) -> None:
    """A pod's Ready condition, as a passing or failing readiness probe sets it: the pod keeps
    running and answering on its own address; its EndpointSlice entries follow."""
    pod = lab.pod(key)
    pod.ready = ready
    lab.save()
    async with LabStore(lab.state) as store:
        await store.set_pod_ready(pod.namespace, pod.name, ready)
        await endpointslices.sync(lab.state, store)


async def label_namespace(lab: Lab, name: str, change: Mapping[str, str | None]) -> dict[str, str]:
    async with LabStore(lab.state) as store:
        labels = merge_labels(await store.labels("Namespace", name, None), change)
        await store.set_labels("Namespace", name, None, labels)
    return labels


def spec_from_cli(key: str, labels: str, serve: str, node: str = "") -> PodSpec:
    namespace, name = parse_pod_key(key)
    try:
        ports = parse_serve(serve or DEFAULT_SERVE)
    except ValueError as exc:
        raise LabError(f"--serve: {exc}") from None
    parsed = parse_labels(labels)
    return PodSpec(namespace, name, {k: v for k, v in parsed.items() if v is not None}, ports, node)
