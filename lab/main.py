"""calico-lab: a Calico node in network namespaces, its pods, probes and conformance runs.

    calico-lab up [--datastore embedded|etcdv3] [--dataplane nftables|iptables|iptables-legacy]
    calico-lab status [--json]
    calico-lab pod run NS/NAME [--labels k=v,...] [--serve tcp:80,udp:80,...]
    calico-lab pod rm NS/NAME...
    calico-lab pod label NS/NAME k=v,...[,k-]
    calico-lab ns label NAME k=v,...[,k-]
    calico-lab probe FROM TO --port P --protocol tcp|udp|sctp     exit 0 connected, 1 not
    calico-lab matrix --port P --protocol tcp[,udp,...]
    calico-lab calicoctl ARGS...        calicoctl against the lab's datastore
    calico-lab conformance --cases FILE --report OUT.json [--datastore ..] [--dataplane ..]
    calico-lab demo
    calico-lab down

Global: --name LAB (default `default`), --state-dir DIR (or $CALICO_LAB_STATE; default
/run/calico-lab/<name>). Nothing is changed in the host's own network namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from lab import netns
from lab import typha as lab_typha
from lab.daemons import find_program
from lab.lab import DATAPLANES, DATASTORES, DEFAULT_POOL, Lab, LabError, bring_down, bring_up
from lab.processes import is_alive
from lab.state import STATE_ENV, LabStateError, locked, resolve_state_dir

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calico-lab", description="A Calico node in network namespaces."
    )
    parser.add_argument("--name", default=None, help="lab name (default: default)")
    parser.add_argument("--state-dir", default=None, help="state directory of the lab")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="bring a node up")
    up.add_argument("--datastore", choices=DATASTORES, default="embedded")
    up.add_argument("--dataplane", choices=DATAPLANES, default=None)
    up.add_argument("--pool", default=DEFAULT_POOL, help=f"IP pool CIDR (default {DEFAULT_POOL})")
    up.add_argument(
        "--typha", action="store_true", help="put a calico-typha between the datastore and Felix"
    )

    sub.add_parser("down", help="remove everything the lab made")
    status = sub.add_parser("status", help="show services and pods")
    status.add_argument("--json", action="store_true")

    pod = sub.add_parser("pod", help="pods").add_subparsers(dest="pod_command", required=True)
    run = pod.add_parser("run", help="create a pod")
    run.add_argument("pod")
    run.add_argument("--labels", default="", help="k=v,...")
    run.add_argument("--serve", default="", help="tcp:80,udp:80,... (default tcp:80,udp:80)")
    rm = pod.add_parser("rm", help="delete pods")
    rm.add_argument("pods", nargs="+")
    plabel = pod.add_parser("label", help="change a pod's labels")
    plabel.add_argument("pod")
    plabel.add_argument("labels", help="k=v,... (k- removes k)")

    ns = sub.add_parser("ns", help="namespaces").add_subparsers(dest="ns_command", required=True)
    nlabel = ns.add_parser("label", help="change a namespace's labels")
    nlabel.add_argument("namespace")
    nlabel.add_argument("labels", help="k=v,... (k- removes k)")

    probe = sub.add_parser("probe", help="one connection attempt; exit 0 when it succeeds")
    probe.add_argument("source")
    probe.add_argument("target")
    probe.add_argument("--port", type=int, required=True)
    probe.add_argument("--protocol", default="tcp", type=str.lower)
    probe.add_argument("--timeout", type=float, default=1.0)

    matrix = sub.add_parser("matrix", help="reachability table of all pods")
    matrix.add_argument("--port", type=int, required=True)
    matrix.add_argument("--protocol", default="tcp", help="tcp,udp,...")
    matrix.add_argument("--timeout", type=float, default=1.0)
    matrix.add_argument("--json", action="store_true")

    ctl = sub.add_parser("calicoctl", help="run calicoctl against the lab's datastore")
    ctl.add_argument("args", nargs=argparse.REMAINDER)

    conf = sub.add_parser("conformance", help="run a network-policy case file")
    conf.add_argument("--cases", required=True, type=Path)
    conf.add_argument("--report", required=True, type=Path)
    conf.add_argument("--datastore", choices=DATASTORES, default="embedded")
    conf.add_argument("--dataplane", choices=DATAPLANES, default=None)
    conf.add_argument("--case", action="append", default=[], help="run only this case id")
    conf.add_argument(
        "--typha", action="store_true", help="put a calico-typha between the datastore and Felix"
    )
    conf.add_argument(
        "--deadline", type=float, default=10.0, help="seconds to poll each probe (default 10)"
    )

    demo = sub.add_parser("demo", help="up, pods, matrix, policy, matrix, down")
    demo.add_argument("--datastore", choices=DATASTORES, default="embedded")
    demo.add_argument("--dataplane", choices=DATAPLANES, default=None)
    demo.add_argument(
        "--typha", action="store_true", help="put a calico-typha between the datastore and Felix"
    )
    return parser


def _state_dir(args: argparse.Namespace, default_name: str = "default") -> tuple[Path, str]:
    """The lab's state directory and name. A lab given only by its directory is named after
    it, so two such labs never share namespace names."""
    state_dir = resolve_state_dir(args.state_dir, args.name or default_name)
    name = args.name or (
        state_dir.name if (args.state_dir or os.environ.get(STATE_ENV)) else default_name
    )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", name):
        raise LabError(f"lab name {name!r}: use letters, digits, '_', '.', '-' (at most 41)")
    return state_dir, name


def _loaded(state_dir: Path) -> Lab:
    lab = Lab.load(state_dir)
    lab.enter()
    return lab


def cmd_up(args: argparse.Namespace) -> int:
    state_dir, name = _state_dir(args)
    with locked(state_dir, create=True):
        lab = bring_up(state_dir, name, args.datastore, args.dataplane, args.pool, typha=args.typha)
    node = lab.node()
    print(f"lab {name} up: node {node.name} in network namespace {node.netns}")
    for daemon, record in node.state.processes.items():
        print(f"  {daemon:14} pid {record.pid:<7} {node.state.sockets.get(daemon, '')}")
    print(f"  datastore {lab.state.datastore.get('type')}; state in {state_dir}")
    if lab.state.typha:
        print(f"  felix reads through calico-typha at {lab.state.typha}")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    state_dir, _ = _state_dir(args)
    with locked(state_dir):
        problems = bring_down(state_dir)
    for problem in problems:
        print(f"left behind: {problem}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    state_dir, _ = _state_dir(args)
    lab = Lab.load(state_dir)
    services: list[dict[str, Any]] = []
    for node in lab.nodes:
        for daemon, record in node.state.processes.items():
            services.append(
                {
                    "node": node.name,
                    "name": daemon,
                    "pid": record.pid,
                    "alive": is_alive(record),
                    "socket": node.state.sockets.get(daemon, ""),
                    "log": record.log,
                }
            )
    for daemon, record in lab.state.infra.items():
        services.append(
            {
                "node": "",
                "name": daemon,
                "pid": record.pid,
                "alive": is_alive(record),
                "socket": "",
                "log": record.log,
            }
        )
    typha_status: dict[str, object] | None = None
    if lab.state.typha:
        try:
            lab.enter()  # Typha listens on the lab network, which the node reaches
            typha_status = lab_typha.status(lab.state.typha)
        except Exception as exc:  # status reports a broken Typha, it does not fail on it
            typha_status = {"address": lab.state.typha, "error": str(exc)}
    pods: list[dict[str, Any]] = [
        {
            "pod": p.key,
            "ip": p.ip,
            "node": p.node,
            "netns": p.netns,
            "interface": p.host_interface,
            "labels": p.labels,
            "serve": p.serve,
            "server_alive": bool(p.server and is_alive(p.server)),
        }
        for _, p in sorted(lab.state.pods.items())
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "lab": lab.state.name,
                    "datastore": lab.state.datastore,
                    "dataplane": lab.state.dataplane,
                    "typha": typha_status,
                    "nodes": [
                        {"name": n.name, "netns": n.netns, "netns_exists": netns.exists(n.netns)}
                        for n in lab.nodes
                    ],
                    "services": services,
                    "pods": pods,
                },
                indent=2,
            )
        )
        return EXIT_OK
    print(
        f"lab {lab.state.name}: datastore {lab.state.datastore.get('type')}, "
        f"dataplane {lab.state.dataplane or '(felix default)'}"
        + (f", typha {lab.state.typha}" if lab.state.typha else "")
    )
    for node in lab.nodes:
        present = "present" if netns.exists(node.netns) else "MISSING"
        print(f"node {node.name}: netns {node.netns} ({present})")
    print("\nSERVICE        NODE      PID      STATE    SOCKET")
    for s in services:
        state = "running" if s["alive"] else "DEAD"
        print(f"{s['name']:14} {s['node']:9} {s['pid']:<8} {state:8} {s['socket']}")
    print("\nPOD                  IP               INTERFACE        SERVER   LABELS")
    for p in pods:
        labels = ",".join(f"{k}={v}" for k, v in p["labels"].items())
        server = "running" if p["server_alive"] else "DEAD"
        print(f"{p['pod']:20} {p['ip']:16} {p['interface']:16} {server:8} {labels}")
    return EXIT_OK


def cmd_pod(args: argparse.Namespace) -> int:
    from lab import pods

    state_dir, _ = _state_dir(args)
    with locked(state_dir):
        lab = _loaded(state_dir)
        if args.pod_command == "run":
            spec = pods.spec_from_cli(args.pod, args.labels, args.serve)
            asyncio.run(pods.create_pods(lab, [spec]))
            pod = lab.pod(spec.key)
            print(f"{pod.key} {pod.ip} {pod.host_interface}")
        elif args.pod_command == "rm":
            for key in args.pods:
                lab.pod(key)  # every name checked before anything is removed
            asyncio.run(pods.remove_pods(lab, args.pods))
            print(f"removed {' '.join(args.pods)}")
        else:
            labels = asyncio.run(pods.label_pod(lab, args.pod, pods.parse_labels(args.labels)))
            print(f"{args.pod} labels {json.dumps(labels, sort_keys=True)}")
    return EXIT_OK


def cmd_ns(args: argparse.Namespace) -> int:
    from lab import pods

    state_dir, _ = _state_dir(args)
    with locked(state_dir):
        lab = _loaded(state_dir)
        labels = asyncio.run(
            pods.label_namespace(lab, args.namespace, pods.parse_labels(args.labels))
        )
    print(f"namespace {args.namespace} labels {json.dumps(labels, sort_keys=True)}")
    return EXIT_OK


def cmd_probe(args: argparse.Namespace) -> int:
    from lab.matrix import endpoint_of
    from lab.prober import probe_pairs

    state_dir, _ = _state_dir(args)
    lab = _loaded(state_dir)
    src, dst = endpoint_of(lab.pod(args.source)), endpoint_of(lab.pod(args.target))
    result = asyncio.run(probe_pairs([(src, dst)], args.port, args.protocol, args.timeout))
    ok = result[(src.key, dst.key)]
    verdict = "connected" if ok else "blocked"
    print(f"{src.key} -> {dst.key} ({dst.ip}) {args.protocol}/{args.port}: {verdict}")
    return EXIT_OK if ok else EXIT_FAILED


def cmd_matrix(args: argparse.Namespace) -> int:
    from lab.matrix import lab_endpoints, probe_all, render

    state_dir, _ = _state_dir(args)
    lab = _loaded(state_dir)
    endpoints = lab_endpoints(lab)
    keys = [e.key for e in endpoints]
    protocols = [p.strip().lower() for p in args.protocol.split(",") if p.strip()]
    out = {}
    for proto in protocols:
        table = asyncio.run(probe_all(endpoints, args.port, proto, args.timeout))
        out[proto] = table
        if not args.json:
            print(render(keys, table, f"{proto.upper()}/{args.port} (rows: from, columns: to)"))
            print()
    if args.json:
        print(json.dumps({p: [[s, d, ok] for (s, d), ok in t.items()] for p, t in out.items()}))
    return EXIT_OK


def cmd_calicoctl(args: argparse.Namespace) -> int:
    state_dir, _ = _state_dir(args)
    lab = _loaded(state_dir)
    env = {**os.environ, **lab.datastore_env()}
    program = find_program("calicoctl")
    os.execve(program, [program, *args.args], env)


def cmd_conformance(args: argparse.Namespace) -> int:
    from lab.conformance import report
    from lab.conformance.cases import load_cases
    from lab.conformance.runner import run_cases

    cases = load_cases(args.cases)
    if args.case:
        wanted = set(args.case)
        unknown = wanted - {c.id for c in cases}
        if unknown:
            raise LabError(f"--case: no case {', '.join(sorted(unknown))} in {args.cases}")
        cases = [c for c in cases if c.id in wanted]
    state_dir, name = _state_dir(args, "conformance")
    with locked(state_dir, create=True):
        lab = bring_up(state_dir, name, args.datastore, args.dataplane, typha=args.typha)
        try:
            results = asyncio.run(run_cases(lab, cases, deadline=args.deadline))
        finally:
            problems = bring_down(state_dir)
            for problem in problems:
                print(f"left behind: {problem}", file=sys.stderr)
    written = report.write(args.report, results)
    summary = written["summary"]
    print(
        f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped "
        f"({len(results)} cases); report in {args.report}"
    )
    return EXIT_OK if summary["failed"] == 0 and not problems else EXIT_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    from lab.demo import run_demo

    state_dir, name = _state_dir(args, "demo")
    with locked(state_dir, create=True):
        return run_demo(state_dir, name, args.datastore, args.dataplane, typha=args.typha)


COMMANDS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "pod": cmd_pod,
    "ns": cmd_ns,
    "probe": cmd_probe,
    "matrix": cmd_matrix,
    "calicoctl": cmd_calicoctl,
    "conformance": cmd_conformance,
    "demo": cmd_demo,
}


def _exit_on_signal(signum: int, _frame: object) -> None:
    # SIGTERM/SIGHUP would kill us on the spot; as an exception, `finally` blocks still take
    # the lab down (demo, conformance) and release the lock.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    if os.geteuid() != 0:
        print("calico-lab: needs root (network namespaces)", file=sys.stderr)
        return EXIT_ERROR
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except (LabError, LabStateError) as exc:
        print(f"calico-lab: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("CALICO_LAB_DEBUG"):
            raise
        print(f"calico-lab: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
