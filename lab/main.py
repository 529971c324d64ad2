"""calico-lab: Calico nodes in network namespaces, their pods, probes and conformance runs.

    calico-lab up [--nodes N] [--subnets 1|2] [--bgp mesh|rr|none] [--tor bird|gobgp
                  [--tor-asn AS]] [--encap none|vxlan|vxlan-crosssubnet] [--internet]
                  [--datastore embedded|etcdv3|kubernetes] [--kube-apiserver]
                  [--dataplane nftables|iptables|iptables-legacy] [--typha]
    calico-lab status [--json]
    calico-lab node status NODE [-o json]   calicoctl node status of that node's calico-bgpd
    calico-lab node restart NODE calico-bgpd|calico-felix|calico-ipamd [--kill] [--env K=V]...
    calico-lab pod run NS/NAME [--node NODE] [--labels k=v,...] [--serve tcp:80,udp:80,...]
    calico-lab pod rm NS/NAME...
    calico-lab pod label NS/NAME k=v,...[,k-]
    calico-lab ns label NAME k=v,...[,k-]
    calico-lab pod ready NS/NAME true|false     its Ready condition (EndpointSlices follow)
    calico-lab svc create NS/NAME --port PORT[:TARGET][/tcp|udp|sctp]... [--selector k=v,...]
                   [--type ClusterIP|NodePort|LoadBalancer] [--node-port N]...
                   [--affinity ClientIP[:SECONDS]] [--external-traffic-policy Cluster|Local]
                   [--internal-traffic-policy Cluster|Local] [--external-ip IP]...
                   [--load-balancer-ip IP]...
    calico-lab svc rm NS/NAME...  |  svc ls [--json]  |  svc sync
    calico-lab probe FROM TO --port P --protocol tcp|udp|sctp [--json]   exit 0 connected, 1 not
               FROM: NS/NAME | @outside;  TO: [pod:]NS/NAME | svc:NS/NAME | node:NAME |
               extip:ADDR | ip:ADDR
    calico-lab matrix --port P --protocol tcp[,udp,...]
    calico-lab calicoctl ARGS...        calicoctl against the lab's datastore
    calico-lab kubectl ARGS...          kubectl against the lab's API server (as admin)
    calico-lab apiserver restart [--etcd|--etcd-only] [--compact] [--down-for S]
    calico-lab conformance --cases FILE --report OUT.json [--nodes N] [--subnets N] [--bgp ..]
                           [--encap ..] [--datastore ..]
    calico-lab demo [--nodes N] [--bgp ..]
    calico-lab kube up|down|status|kubectl ...   a real single-node Kubernetes (lab/kubenode/)
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
import time
from pathlib import Path
from typing import Any

from lab import bgp, network
from lab.cluster import MAX_NODES, bring_down, bring_up
from lab.daemons import DaemonError, find_program
from lab.kubenode import cli as kube_cli
from lab.lab import DATAPLANES, DATASTORES, DEFAULT_POOL, ENCAPS, Lab, LabError
from lab.node import BGPD, BIRD, RESTARTABLE
from lab.state import STATE_ENV, LabStateError, locked, resolve_state_dir

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calico-lab", description="Calico nodes in network namespaces."
    )
    parser.add_argument("--name", default=None, help="lab name (default: default)")
    parser.add_argument("--state-dir", default=None, help="state directory of the lab")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="bring nodes up")
    _add_lab_options(up)
    up.add_argument("--pool", default=DEFAULT_POOL, help=f"IP pool CIDR (default {DEFAULT_POOL})")
    up.add_argument(
        "--tor",
        default=None,
        metavar="bird|gobgp",
        help="a top-of-rack router at 10.66.0.1 in the lab network, peered with every node",
    )
    up.add_argument(
        "--tor-asn",
        type=int,
        default=bgp.DEFAULT_TOR_ASN,
        help=f"the ToR's AS number (default {bgp.DEFAULT_TOR_ASN}; nodes are {bgp.NODE_AS})",
    )
    up.add_argument(
        "--internet",
        action="store_true",
        help=f"an outside host at {network.OUTSIDE_ADDRESS} beyond the lab network, routed "
        "back to the node subnets only, answering TCP/UDP port 80 with the source it saw",
    )

    sub.add_parser("down", help="remove everything the lab made")
    status = sub.add_parser("status", help="show nodes, services, BGP sessions and pods")
    status.add_argument("--json", action="store_true")

    node = sub.add_parser("node", help="nodes").add_subparsers(dest="node_command", required=True)
    nstatus = node.add_parser("status", help="`calicoctl node status` against a node's calico-bgpd")
    nstatus.add_argument("node", nargs="?", default=None, help="node name (default node-1)")
    nstatus.add_argument("-o", "--output", choices=("table", "json"), default=None)
    restart = node.add_parser(
        "restart", help="stop one of a node's daemons (SIGTERM, or SIGKILL) and start it again"
    )
    restart.add_argument("node", help="node name, e.g. node-2")
    restart.add_argument("service", choices=RESTARTABLE)
    restart.add_argument(
        "--kill", action="store_true", help="SIGKILL instead of SIGTERM, as a crash would"
    )
    restart.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="extra environment for the new process (repeatable), e.g. "
        "CALICO_BGPD_EXTRA_CONFIG_FILE=/path",
    )

    pod = sub.add_parser("pod", help="pods").add_subparsers(dest="pod_command", required=True)
    run = pod.add_parser("run", help="create a pod")
    run.add_argument("pod")
    run.add_argument("--node", default="", help="the node to run it on (default node-1)")
    run.add_argument("--labels", default="", help="k=v,...")
    run.add_argument("--serve", default="", help="tcp:80,udp:80,... (default tcp:80,udp:80)")
    rm = pod.add_parser("rm", help="delete pods")
    rm.add_argument("pods", nargs="+")
    plabel = pod.add_parser("label", help="change a pod's labels")
    plabel.add_argument("pod")
    plabel.add_argument("labels", help="k=v,... (k- removes k)")
    pready = pod.add_parser("ready", help="set a pod's Ready condition (readiness probe)")
    pready.add_argument("pod")
    pready.add_argument("ready", choices=("true", "false"))

    svc = sub.add_parser("svc", help="Services").add_subparsers(dest="svc_command", required=True)
    screate = svc.add_parser("create", help="create or replace a Service")
    screate.add_argument("service", help="NS/NAME")
    screate.add_argument("--selector", default="", help="k=v,... (pods of NS it selects)")
    screate.add_argument(
        "--port",
        action="append",
        default=[],
        required=True,
        help="PORT[:TARGET][/tcp|udp|sctp], TARGET a number or a container port name (repeatable)",
    )
    screate.add_argument("--type", default="ClusterIP", help="ClusterIP|NodePort|LoadBalancer")
    screate.add_argument(
        "--node-port", type=int, action="append", default=[], help="for the ports in order"
    )
    screate.add_argument("--affinity", default="", help="ClientIP[:SECONDS]")
    screate.add_argument("--external-traffic-policy", default="", help="Cluster|Local")
    screate.add_argument("--internal-traffic-policy", default="", help="Cluster|Local")
    screate.add_argument("--external-ip", action="append", default=[], help="(repeatable)")
    screate.add_argument(
        "--load-balancer-ip",
        action="append",
        default=[],
        help="status.loadBalancer.ingress (repeatable; default: one free 192.0.2.128/25 address)",
    )
    srm = svc.add_parser("rm", help="delete Services")
    srm.add_argument("services", nargs="+", help="NS/NAME")
    sls = svc.add_parser("ls", help="list Services")
    sls.add_argument("--json", action="store_true")
    svc.add_parser("sync", help="bring EndpointSlices in line with pods and Services now")

    ns = sub.add_parser("ns", help="namespaces").add_subparsers(dest="ns_command", required=True)
    nlabel = ns.add_parser("label", help="change a namespace's labels")
    nlabel.add_argument("namespace")
    nlabel.add_argument("labels", help="k=v,... (k- removes k)")

    probe = sub.add_parser("probe", help="one connection attempt; exit 0 when it succeeds")
    probe.add_argument("source", help="NS/NAME or @outside")
    probe.add_argument(
        "target", help="[pod:]NS/NAME, svc:NS/NAME, node:NAME, extip:ADDR or ip:ADDR"
    )
    probe.add_argument("--port", type=int, required=True)
    probe.add_argument("--protocol", default="tcp", type=str.lower)
    probe.add_argument("--timeout", type=float, default=1.0)
    probe.add_argument(
        "--json",
        action="store_true",
        help="print {outcome: connected|refused|no-answer, served_by, client_seen, ...}",
    )

    matrix = sub.add_parser("matrix", help="reachability table of all pods")
    matrix.add_argument("--port", type=int, required=True)
    matrix.add_argument("--protocol", default="tcp", help="tcp,udp,...")
    matrix.add_argument("--timeout", type=float, default=1.0)
    matrix.add_argument("--json", action="store_true")

    ctl = sub.add_parser("calicoctl", help="run calicoctl against the lab's datastore")
    ctl.add_argument("args", nargs=argparse.REMAINDER)
    kubectl = sub.add_parser("kubectl", help="run kubectl against the lab's API server (admin)")
    kubectl.add_argument("args", nargs=argparse.REMAINDER)
    api = sub.add_parser("apiserver", help="the lab's Kubernetes API server").add_subparsers(
        dest="apiserver_command", required=True
    )
    api_restart = api.add_parser(
        "restart", help="stop the API server (and its etcd) by PID and start it again"
    )
    which = api_restart.add_mutually_exclusive_group()
    which.add_argument("--etcd", action="store_true", help="restart its etcd too")
    which.add_argument(
        "--etcd-only",
        action="store_true",
        help="restart only its etcd (the API server's own watches on etcd break)",
    )
    api_restart.add_argument(
        "--compact",
        action="store_true",
        help="compact its etcd to the latest revision while the API server's view is behind "
        "(it is down, or its etcd restarted): watches resuming from older revisions get 410 "
        "Gone and list again",
    )
    api_restart.add_argument(
        "--down-for", type=float, default=0.0, help="seconds to stay down (default 0)"
    )

    conf = sub.add_parser("conformance", help="run a network-policy or Services case file")
    files = conf.add_mutually_exclusive_group(required=True)
    files.add_argument("--cases", type=Path, help="a network-policy case file")
    files.add_argument(
        "--services", type=Path, help="a Services case file (services-report/1 report)"
    )
    conf.add_argument("--report", required=True, type=Path)
    _add_lab_options(conf)
    conf.add_argument("--case", action="append", default=[], help="run only this case id")
    conf.add_argument("--tor", default=None, metavar="bird|gobgp", help="add a top-of-rack router")
    conf.add_argument("--tor-asn", type=int, default=bgp.DEFAULT_TOR_ASN)
    conf.add_argument(
        "--deadline", type=float, default=10.0, help="seconds to poll each probe (default 10)"
    )

    demo = sub.add_parser("demo", help="up, pods, matrix, policy, matrix, down")
    _add_lab_options(demo)
    kube_cli.add_parser(sub)
    return parser


def _add_lab_options(parser: argparse.ArgumentParser) -> None:
    """What every command that brings a lab up accepts."""
    parser.add_argument(
        "--nodes", type=int, default=1, help=f"number of nodes, 1..{MAX_NODES} (default 1)"
    )
    parser.add_argument(
        "--bgp",
        choices=bgp.MODES,
        default=None,
        help="mesh: full node-to-node mesh; rr: node-1 is the route reflector; none: no "
        "calico-bgpd (default: mesh with more than one node or a --tor, else none: a single "
        "node without a router needs no routing protocol)",
    )
    parser.add_argument(
        "--subnets",
        type=int,
        default=1,
        help=f"node subnets, 1..{network.MAX_SUBNETS} (default 1): with 2, odd nodes are on "
        "10.66.0.0/24 and even nodes on 10.66.1.0/24, routed by the lab network",
    )
    parser.add_argument(
        "--encap",
        choices=ENCAPS,
        default="none",
        help="vxlan: the lab pool has vxlanMode Always and Felix carries pod traffic between "
        "nodes in VXLAN (BGP then defaults to none); vxlan-crosssubnet: vxlanMode "
        "CrossSubnet, VXLAN only between nodes on different subnets; none: plain routing "
        "(default)",
    )
    parser.add_argument(
        "--datastore",
        choices=DATASTORES,
        default="embedded",
        help="embedded (default): a SQLite file; etcdv3: a lab-owned etcd; kubernetes: a "
        "lab-owned kube-apiserver (Calico's data as custom resources and Node/Pod fields)",
    )
    parser.add_argument(
        "--kube-apiserver",
        action="store_true",
        help="with --datastore etcdv3: run a kube-apiserver too; Nodes, Namespaces, Pods and "
        "NetworkPolicies are API objects, copied into etcd by calico-kube-controllers",
    )
    parser.add_argument(
        "--kube-apiserver-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="an extra kube-apiserver flag (repeatable), e.g. --etcd-compaction-interval=10s",
    )
    parser.add_argument("--dataplane", choices=DATAPLANES, default=None)
    parser.add_argument(
        "--typha",
        action="store_true",
        help="put a calico-typha between the datastore and every node's Felix and calico-bgpd",
    )


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


def _bring_up(args: argparse.Namespace, state_dir: Path, name: str) -> Lab:
    return bring_up(
        state_dir,
        name,
        args.datastore,
        args.dataplane,
        getattr(args, "pool", DEFAULT_POOL),
        typha=args.typha,
        nodes=args.nodes,
        bgp_mode=args.bgp,
        tor=getattr(args, "tor", None),
        tor_asn=getattr(args, "tor_asn", bgp.DEFAULT_TOR_ASN),
        encap=getattr(args, "encap", "none"),
        subnets=args.subnets,
        internet=getattr(args, "internet", False),
        kube_apiserver=args.kube_apiserver,
        kube_apiserver_args=args.kube_apiserver_arg,
    )


def cmd_up(args: argparse.Namespace) -> int:
    state_dir, name = _state_dir(args)
    with locked(state_dir, create=True):
        lab = _bring_up(args, state_dir, name)
    print(
        f"lab {name} up: {len(lab.nodes)} node(s) on {lab.state.subnets} subnet(s), "
        f"BGP {lab.state.bgp}, encap {lab.state.encap}, "
        f"datastore {lab.state.datastore.get('type')}; state in {state_dir}"
    )
    for node in lab.nodes:
        print(f"node {node.name} {node.address} in network namespace {node.netns}")
        for daemon, record in node.state.processes.items():
            where = node.state.sockets.get(daemon) or (str(node.bird_dir) if daemon == BIRD else "")
            print(f"  {daemon:14} pid {record.pid:<7} {where}")
    if len(lab.nodes) > 1 and lab.state.bgp == "none" and lab.state.encap == "none":
        print("note: --bgp none: pods on different nodes cannot reach each other")
    elif lab.state.subnets > 1 and lab.state.encap == "none":
        # As on a real network: the router between the subnets does not peer with the nodes,
        # so it has no route to the pools (Calico's answer is CrossSubnet encapsulation).
        print(
            "note: the router between the subnets learns no pod routes: pods reach each "
            "other across subnets only with --encap vxlan-crosssubnet (or vxlan)"
        )
    if lab.state.outside:
        out = lab.state.outside
        print(
            f"outside host {out['address']} in network namespace {out['netns']} "
            f"(answers tcp/udp port {out['port']} with the source address it sees)"
        )
    if lab.state.typha:
        print(f"felix and calico-bgpd read through calico-typha at {lab.state.typha}")
    if lab.state.kube:
        kube = lab.state.kube
        print(
            f"kube-apiserver https://{kube['address']}:{kube['port']} in network namespace "
            f"{lab.state.network_netns}; admin kubeconfig {kube['kubeconfig']} "
            "(`calico-lab kubectl ...`)"
        )
    if lab.state.tor:
        print(
            f"top-of-rack router {lab.state.tor['kind']} at {bgp.TOR_ADDRESS} "
            f"(AS {lab.state.tor['asn']}) in network namespace {lab.state.network_netns}"
        )
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    state_dir, _ = _state_dir(args)
    with locked(state_dir):
        problems = bring_down(state_dir)
    for problem in problems:
        print(f"left behind: {problem}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from lab import status

    state_dir, _ = _state_dir(args)
    data = status.gather(Lab.load(state_dir))
    print(json.dumps(data, indent=2) if args.json else status.render(data))
    return EXIT_OK


def parse_env(items: list[str]) -> dict[str, str]:
    """["K=V", ...] -> {K: V}; LabError naming the entry that is not K=V."""
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise LabError(f"--env: expected K=V with K a variable name, got {item!r}")
        env[key] = value
    return env


def cmd_node_restart(args: argparse.Namespace) -> int:
    """`node restart`: one daemon stopped and started again as `up` does (the new PID is
    recorded, so `down` stops it)."""
    env = parse_env(args.env)
    state_dir, _ = _state_dir(args)
    with locked(state_dir):
        lab = Lab.load(state_dir)
        node = lab.node(args.node)
        try:
            old = node.restart(
                args.service,
                lab.daemon_env(),
                lab.state.dataplane,
                lab.state.typha,
                kill=args.kill,
                extra_env=env,
            )
        except DaemonError as exc:
            raise LabError(str(exc)) from None
        finally:
            lab.save()
    new = node.state.processes[args.service]
    how = "killed" if args.kill else "stopped"
    before = f"pid {old.pid} {how}" if old else "was not running"
    print(f"{args.service} on {node.name}: {before}; started pid {new.pid}")
    if args.service == BGPD:
        print(f"{BIRD} on {node.name}: pid {node.state.processes[BIRD].pid}")
    return EXIT_OK


def cmd_node(args: argparse.Namespace) -> int:
    """`node status`: calicoctl's own output and exit status, for that node's calico-bgpd."""
    if args.node_command == "restart":
        return cmd_node_restart(args)
    state_dir, _ = _state_dir(args)
    lab = Lab.load(state_dir)
    node = lab.node(args.node)
    if not node.bgpd_socket:
        raise LabError(f"{node.name} runs no calico-bgpd (the lab is up with --bgp none)")
    program = find_program("calicoctl")
    argv = [program, "node", "status", "--socket", node.bgpd_socket]
    if args.output:
        argv += ["-o", args.output]
    os.execv(program, argv)


def cmd_pod(args: argparse.Namespace) -> int:
    from lab import pods

    state_dir, _ = _state_dir(args)
    with locked(state_dir):
        lab = _loaded(state_dir)
        if args.pod_command == "run":
            spec = pods.spec_from_cli(args.pod, args.labels, args.serve, args.node)
            asyncio.run(pods.create_pods(lab, [spec]))
            pod = lab.pod(spec.key)
            print(f"{pod.key} {pod.ip} {pod.host_interface} on {pod.node}")
        elif args.pod_command == "rm":
            for key in args.pods:
                lab.pod(key)  # every name checked before anything is removed
            asyncio.run(pods.remove_pods(lab, args.pods))
            print(f"removed {' '.join(args.pods)}")
        elif args.pod_command == "ready":
            asyncio.run(pods.set_ready(lab, args.pod, args.ready == "true"))
            print(f"{args.pod} ready={args.ready}")
        else:
            labels = asyncio.run(pods.label_pod(lab, args.pod, pods.parse_labels(args.labels)))
            print(f"{args.pod} labels {json.dumps(labels, sort_keys=True)}")
    return EXIT_OK


def cmd_svc(args: argparse.Namespace) -> int:
    from lab import endpointslices, services, svcspec
    from lab.store import LabStore

    state_dir, _ = _state_dir(args)
    service: dict[str, object] = {}
    if args.svc_command == "create":
        try:
            service = svcspec.from_cli(
                args.service,
                selector=args.selector,
                ports=args.port,
                type_=args.type,
                node_ports=args.node_port,
                affinity=args.affinity,
                external_traffic_policy=args.external_traffic_policy,
                internal_traffic_policy=args.internal_traffic_policy,
                external_ips=args.external_ip,
                load_balancer_ips=args.load_balancer_ip,
            )
        except svcspec.SpecError as exc:
            raise LabError(str(exc)) from None

    async def run(lab: Lab) -> int:
        async with LabStore(lab.state) as store:
            if args.svc_command == "create":
                try:
                    stored = await services.apply_service(lab.state, store, service)
                except services.ServiceError as exc:
                    raise LabError(str(exc)) from None
                print(services.describe(stored))
            elif args.svc_command == "rm":
                missing = []
                for key in args.services:
                    namespace, _, name = key.partition("/")
                    if not await services.remove_service(lab.state, store, namespace, name):
                        missing.append(key)
                if missing:
                    raise LabError(f"no Service {', '.join(missing)}")
                print(f"removed {' '.join(args.services)}")
            elif args.svc_command == "ls":
                found = await services.list_services(store)
                if args.json:
                    print(json.dumps(found, indent=2))
                for one in [] if args.json else found:
                    print(services.describe(one))
            else:
                changes = await endpointslices.sync(lab.state, store)
                print(f"{changes} EndpointSlice(s) written or deleted")
        return EXIT_OK

    with locked(state_dir):
        return asyncio.run(run(_loaded(state_dir)))


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
    """One try from FROM to TO: exit 0 when the server answered."""
    from lab import services, targets
    from lab.prober import CONNECTED, Flow, Observation, observe
    from lab.store import LabStore

    state_dir, _ = _state_dir(args)
    lab = _loaded(state_dir)

    async def run() -> tuple[str, Observation]:
        found: dict[str, dict[str, object]] = {}
        if targets.split(args.target)[0] == "svc":
            async with LabStore(lab.state) as store:
                found = {services.key_of(s): s for s in await services.list_services(store)}
        src = targets.source(lab.state, args.source)
        ip = targets.address(lab.state, args.target, found)
        seen = await observe([Flow(src, ip)], args.port, args.protocol, args.timeout)
        return ip, seen[0]

    try:
        ip, observation = asyncio.run(run())
    except targets.TargetError as exc:
        raise LabError(str(exc)) from None
    where = f"{ip}:{args.port}/{args.protocol.upper()}"
    if args.json:
        print(
            json.dumps(
                {"from": args.source, "to": args.target, "target": where, **observation.to_json()}
            )
        )
    else:
        detail = (
            f" (served by {observation.served_by}, client seen {observation.client_seen})"
            if observation.outcome == CONNECTED
            else ""
        )
        print(f"{args.source} -> {args.target} {where}: {observation.outcome}{detail}")
    return EXIT_OK if observation.outcome == CONNECTED else EXIT_FAILED


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


def cmd_kubectl(args: argparse.Namespace) -> int:
    """kubectl as admin with the lab's kubeconfig, from node-1's namespace (where the API
    server's address is reachable)."""
    from lab import apiserver, kubeapi

    state_dir, _ = _state_dir(args)
    lab = Lab.load(state_dir)
    try:
        kubeconfig = kubeapi.admin_kubeconfig(lab.state)
    except kubeapi.KubeApiError as exc:
        raise LabError(str(exc)) from None
    program = apiserver.binary("kubectl")
    if program is None:
        raise LabError(apiserver.missing_binaries() or "kubectl not found")
    lab.enter()
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    os.execve(str(program), [str(program), *args.args], env)


def cmd_apiserver(args: argparse.Namespace) -> int:
    """`apiserver restart`: the lab's API server (and its etcd) stopped and started again."""
    from lab import kubeapi

    state_dir, _ = _state_dir(args)
    with locked(state_dir):
        lab = Lab.load(state_dir)
        started = time.monotonic()
        try:
            done = kubeapi.restart(
                lab.state,
                lab.save,
                apiserver_too=not args.etcd_only,
                etcd_too=args.etcd or args.etcd_only,
                compact_etcd=args.compact,
                down_for=args.down_for,
            )
        except kubeapi.KubeApiError as exc:
            raise LabError(str(exc)) from None
    for name, pid in done["stopped"].items():
        print(f"{name}: pid {pid} stopped; started pid {done['started'][name]}")
    if "compacted" in done:
        print(f"kube-etcd compacted at revision {done['compacted']}")
    print(f"ready again after {time.monotonic() - started:.1f}s")
    return EXIT_OK


def _select_cases(cases: list[Any], wanted_ids: list[str], path: Path) -> list[Any]:
    """The cases `--case` names (all without one); LabError naming unknown ids."""
    if not wanted_ids:
        return cases
    wanted = set(wanted_ids)
    unknown = wanted - {c.id for c in cases}
    if unknown:
        raise LabError(f"--case: no case {', '.join(sorted(unknown))} in {path}")
    return [c for c in cases if c.id in wanted]


def cmd_conformance_services(args: argparse.Namespace) -> int:
    from lab.conformance import svcreport
    from lab.conformance.cases import CaseFileError
    from lab.conformance.svccases import load_cases
    from lab.conformance.svcrunner import probes_per_case, run_cases

    try:
        cases = _select_cases(load_cases(args.services), args.case, args.services)
    except CaseFileError as exc:
        raise LabError(str(exc)) from None
    state_dir, name = _state_dir(args, "conformance")
    problems: list[str] = []
    with locked(state_dir, create=True):
        started = time.monotonic()
        lab = _bring_up(args, state_dir, name)
        print(
            f"lab up in {time.monotonic() - started:.1f}s: {len(lab.nodes)} node(s), "
            f"dataplane {lab.state.dataplane}, datastore {lab.state.datastore.get('type')}",
            file=sys.stderr,
            flush=True,
        )
        try:
            results = asyncio.run(run_cases(lab, cases, deadline=args.deadline))
        finally:
            problems = bring_down(state_dir)
            for problem in problems:
                print(f"left behind: {problem}", file=sys.stderr)
    written = svcreport.build(
        results,
        probes_per_case(cases),
        str(args.services),
        str(lab.state.dataplane or "nftables"),
        str(lab.state.datastore.get("type")),
        len(lab.nodes),
    )
    svcreport.write(args.report, written)
    summary = written["summary"]
    print(
        f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped "
        f"probes ({len(results)} cases); report in {args.report}"
    )
    return EXIT_FAILED if svcreport.failed(written) or problems else EXIT_OK


def cmd_conformance(args: argparse.Namespace) -> int:
    from lab.conformance import report
    from lab.conformance.cases import load_cases
    from lab.conformance.runner import run_cases

    if args.services:
        return cmd_conformance_services(args)
    cases = _select_cases(load_cases(args.cases), args.case, args.cases)
    state_dir, name = _state_dir(args, "conformance")
    with locked(state_dir, create=True):
        started = time.monotonic()
        lab = _bring_up(args, state_dir, name)
        print(
            f"lab up in {time.monotonic() - started:.1f}s: {len(lab.nodes)} node(s), "
            f"{lab.state.subnets} subnet(s), BGP {lab.state.bgp}, encap {lab.state.encap}",
            file=sys.stderr,
            flush=True,
        )
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
    command = " ".join(
        ["calico-lab up", f"--nodes {args.nodes}", f"--datastore {args.datastore}"]
        + ([f"--subnets {args.subnets}"] if args.subnets != 1 else [])
        + ([f"--bgp {args.bgp}"] if args.bgp else [])
        + ([f"--encap {args.encap}"] if args.encap != "none" else [])
        + ([f"--dataplane {args.dataplane}"] if args.dataplane else [])
        + (["--typha"] if args.typha else [])
        + (["--kube-apiserver"] if args.kube_apiserver else [])
    )
    with locked(state_dir, create=True):
        return run_demo(state_dir, command, lambda: _bring_up(args, state_dir, name))


COMMANDS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "node": cmd_node,
    "pod": cmd_pod,
    "ns": cmd_ns,
    "svc": cmd_svc,
    "probe": cmd_probe,
    "matrix": cmd_matrix,
    "calicoctl": cmd_calicoctl,
    "kubectl": cmd_kubectl,
    "apiserver": cmd_apiserver,
    "conformance": cmd_conformance,
    "demo": cmd_demo,
    "kube": kube_cli.run,
}


def _exit_on_signal(signum: int, _frame: object) -> None:
    # SIGTERM/SIGHUP would kill us on the spot; as an exception, `finally` blocks still take
    # the lab down (demo, conformance) and release the lock.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # kubectl/calicoctl pass-through: argparse's REMAINDER does not take a leading
        # option (`kubectl -n kube-system get pods`), which lands here, in order.
        if not isinstance(getattr(args, "args", None), list):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.args = [*extra, *args.args]
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
