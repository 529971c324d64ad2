"""`calico-lab kube up|down|status|kubectl`: a real single-node Kubernetes on this machine.

    calico-lab kube up [--manifests DIR|FILE] [--images REF|ARCHIVE ...] [--project-images]
                       [--no-build]
    calico-lab kube kubectl ARGS...     kubectl as the cluster's admin
    calico-lab kube status [--json]
    calico-lab kube down                idempotent; also after a crashed up

State directory: --kube-state-dir DIR, else /run/calico-lab-kube.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lab.kubenode import layout, lifecycle, node, tools
from lab.kubenode.state import KubeState
from lab.processes import is_alive

EXIT_OK = 0
EXIT_FAILED = 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kube = sub.add_parser("kube", help="a real single-node Kubernetes (kubelet + containerd)")
    kube.add_argument(
        "--kube-state-dir",
        type=Path,
        default=layout.DEFAULT_STATE_DIR,
        help=f"state directory (default {layout.DEFAULT_STATE_DIR})",
    )
    commands = kube.add_subparsers(dest="kube_command", required=True)
    up = commands.add_parser("up", help="build (cached) and start the node until it is Ready")
    up.add_argument("--manifests", type=Path, help="kubectl apply -k (kustomization) or -f this")
    up.add_argument(
        "--images",
        nargs="+",
        default=[],
        help="image archives, or podman image names (podman save), to import into containerd",
    )
    up.add_argument(
        "--project-images",
        action="store_true",
        help="import every localhost/calico-py/*:latest from podman's store",
    )
    up.add_argument(
        "--no-build", action="store_true", help="fail instead of building missing tools"
    )
    commands.add_parser("down", help="stop everything and put the host back")
    status = commands.add_parser("status", help="processes, node, API server")
    status.add_argument("--json", action="store_true")
    kubectl = commands.add_parser("kubectl", help="kubectl as the cluster's admin")
    kubectl.add_argument("args", nargs=argparse.REMAINDER)


def _say(text: str) -> None:
    if text:
        print(f"calico-lab kube: {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    directory: Path = args.kube_state_dir.resolve()
    # kubectl's discovery and HTTP caches: in the state directory, which `down` removes,
    # instead of ~/.kube/cache.
    os.environ.setdefault("KUBECACHEDIR", str(directory / "kubectl-cache"))
    command = args.kube_command
    if command == "up":
        options = lifecycle.UpOptions(
            build=not args.no_build,
            images=args.images,
            project_images=args.project_images,
            manifests=args.manifests,
        )
        state = lifecycle.up(directory, options, _say)
        server = lifecycle.server_of(state)
        assert server is not None
        print(f"API server {server.url}; admin kubeconfig {server.kubeconfig}")
        return EXIT_OK
    if command == "down":
        report = lifecycle.down(directory, _say)
        for line in report.problems:
            print(f"problem: {line}", file=sys.stderr)
        for line in report.differences:
            print(f"host differs from before up: {line}", file=sys.stderr)
        return EXIT_FAILED if report.problems or report.differences else EXIT_OK
    if command == "status":
        return _status(directory, args.json)
    return _kubectl(directory, args.args)


def _load(directory: Path) -> KubeState:
    if not (directory / "state.json").exists():
        raise lifecycle.KubeNodeError(f"no node is up ({directory} holds none): calico-lab kube up")
    return KubeState.load(directory)


def _kubectl(directory: Path, argv: list[str]) -> int:
    state = _load(directory)
    server = lifecycle.server_of(state)
    if server is None:
        raise lifecycle.KubeNodeError("the API server never started: calico-lab kube down")
    kubectl = tools.find().kubectl
    os.execv(kubectl, [kubectl, f"--kubeconfig={server.kubeconfig}", *argv])


def _status(directory: Path, as_json: bool) -> int:
    state = _load(directory)
    server = lifecycle.server_of(state)
    processes = {name: is_alive(r) for name, r in state.processes.items()}
    ready = server is not None and processes.get("kube-apiserver", False) and node.ready(server)
    data = {
        "state_dir": str(directory),
        "node": layout.NODE_NAME,
        "node_address": layout.NODE_ADDRESS,
        "ready": ready,
        "api_server": server.url if server else None,
        "kubeconfig": str(server.kubeconfig) if server else None,
        "processes": {n: {"pid": state.processes[n].pid, "alive": a} for n, a in processes.items()},
        "unreachable_routes": state.unreachable,
        "images": state.images,
        "timings_s": state.timings,
    }
    if as_json:
        print(json.dumps(data, indent=1))
    else:
        print(
            f"node {layout.NODE_NAME} ({layout.NODE_ADDRESS}): {'Ready' if ready else 'not Ready'}"
        )
        print(f"API server {data['api_server']}; kubeconfig {data['kubeconfig']}")
        for name, alive in processes.items():
            print(
                f"  {name:<24} pid {state.processes[name].pid:<8} {'running' if alive else 'gone'}"
            )
        print(f"unreachable routes: {', '.join(state.unreachable)}")
    return EXIT_OK if ready and all(processes.values()) else EXIT_FAILED
