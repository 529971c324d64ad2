"""`calico-lab status`: what runs where, gathered from the record and asked of the live parts.

The record names the nodes, their processes and the pods; liveness comes from /proc, BGP
sessions from each node's calico-bgpd (GetStatus) and from the top-of-rack router, Typha's
clients from Typha, the API server's readiness from its /readyz. A part that does not answer is
reported, never fatal: status is what one runs when something is broken.
"""

from __future__ import annotations

from typing import Any

from lab import bgp, netns
from lab import typha as lab_typha
from lab.lab import Lab
from lab.node import BIRD, LabNode, bird_from_pidfile
from lab.processes import ProcessRecord, is_alive


def _process(node: str, name: str, record: ProcessRecord, socket: str) -> dict[str, Any]:
    return {
        "node": node,
        "name": name,
        "pid": record.pid,
        "alive": is_alive(record),
        "socket": socket,
        "log": record.log,
    }


def _bgp(lab: Lab) -> list[dict[str, Any]]:
    """Per node: its sessions as calico-bgpd reports them, or why it could not say."""
    import grpc

    out: list[dict[str, Any]] = []
    for node in lab.nodes:
        if not node.bgpd_socket:
            continue
        entry: dict[str, Any] = {"node": node.name, "peers": [], "error": ""}
        try:
            reply = bgp.get_status(node.bgpd_socket)
        except grpc.RpcError as exc:
            entry["error"] = f"calico-bgpd does not answer: {exc}"
        else:
            entry["bird_running"] = reply.bird_running
            entry["last_apply_ok"] = reply.last_apply.ok
            entry["last_apply_error"] = reply.last_apply.error
            entry["peers"] = [
                {
                    "address": p.address,
                    "type": p.type,
                    "state": p.state,
                    "since": p.since,
                    "info": p.info,
                }
                for p in reply.peers
            ]
        out.append(entry)
    return out


def _overlay(lab: Lab) -> list[dict[str, Any]]:
    """Per node: the overlay as its Felix reports it (VXLAN, IPIP, CrossSubnet's direct
    routes, MTUs), or why it could not say."""
    import grpc

    from calico.felix.v1 import status_pb2, status_pb2_grpc

    out: list[dict[str, Any]] = []
    for node in lab.nodes:
        entry: dict[str, Any] = {"node": node.name, "error": ""}
        try:
            with grpc.insecure_channel(f"unix://{node.felix_socket}") as channel:
                reply = status_pb2_grpc.StatusStub(channel).GetStatus(
                    status_pb2.GetStatusRequest(), timeout=bgp.STATUS_TIMEOUT
                )
        except grpc.RpcError as exc:
            entry["error"] = f"calico-felix does not answer: {exc.code().name}"
        else:
            o = reply.overlay
            entry |= {
                "vxlan_device": o.vxlan.device_present,
                "vtep": o.vxlan.vtep_address,
                "vxlan_mtu": o.vxlan.mtu,
                "vxlan_routes": o.vxlan.routes,
                "direct_routes": o.direct_routes,
                "ipip": o.ipip.state,
                "pod_mtu": o.pod_mtu,
                "problem": "; ".join(
                    p for p in (o.last_error, o.vxlan.problem, o.ipip.problem) if p
                ),
            }
        out.append(entry)
    return out


def _tor(lab: Lab) -> dict[str, Any] | None:
    if not lab.state.tor:
        return None
    record = lab.state.infra.get("tor")
    out: dict[str, Any] = {
        **lab.state.tor,
        "address": bgp.TOR_ADDRESS,
        "alive": bool(record and is_alive(record)),
        "sessions": {},
        "error": "",
    }
    try:
        from lab import tor

        out["sessions"] = tor.sessions(str(lab.state.tor["kind"]), lab.dir)
    except Exception as exc:  # status reports a broken router, it does not fail on it
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _typha(lab: Lab) -> dict[str, Any] | None:
    if not lab.state.typha:
        return None
    try:
        # Typha listens on the lab network, which the first node reaches.
        with netns.inside(lab.node().netns_path):
            return lab_typha.status(lab.state.typha)
    except Exception as exc:
        return {"address": lab.state.typha, "error": str(exc)}


def _apiserver(lab: Lab) -> dict[str, Any] | None:
    """The lab's kube-apiserver: where, its and its etcd's PIDs, and whether /readyz is ok."""
    if not lab.state.kube:
        return None
    from lab import kubeapi

    kube = lab.state.kube
    out: dict[str, Any] = {
        "url": f"https://{kube['address']}:{kube['port']}",
        "kubeconfig": kube["kubeconfig"],
        "ready": False,
        "error": "",
    }
    for key, name in (("apiserver", kubeapi.APISERVER), ("etcd", kubeapi.ETCD)):
        record = lab.state.infra.get(name)
        out[f"{key}_pid"] = record.pid if record else None
        out[f"{key}_alive"] = bool(record and is_alive(record))
    try:
        status = kubeapi.server_of(lab.state).get("/readyz", timeout=2.0)
        out["ready"] = status == 200
        if status != 200:
            out["error"] = f"/readyz answered {status}"
    except Exception as exc:  # status reports a broken API server, it does not fail on it
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _outside(lab: Lab) -> dict[str, Any] | None:
    if not lab.state.outside:
        return None
    ns = str(lab.state.outside.get("netns") or "")
    return {**lab.state.outside, "netns_exists": netns.exists(ns)}


def _node_processes(node: LabNode) -> list[dict[str, Any]]:
    out = []
    for name, record in node.state.processes.items():
        if name == BIRD:
            # calico-bgpd may have started another BIRD since `up`: show the running one.
            record = bird_from_pidfile(node.bird_dir) or record
        out.append(_process(node.name, name, record, node.state.sockets.get(name, "")))
    return out


def gather(lab: Lab) -> dict[str, Any]:
    services = [s for node in lab.nodes for s in _node_processes(node)] + [
        _process("", name, record, "") for name, record in lab.state.infra.items()
    ]
    pods = [
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
    return {
        "lab": lab.state.name,
        "datastore": lab.state.datastore,
        "dataplane": lab.state.dataplane,
        "bgp": lab.state.bgp,
        "encap": lab.state.encap,
        "subnets": lab.state.subnets,
        "outside": _outside(lab),
        "typha": _typha(lab),
        "apiserver": _apiserver(lab),
        "tor": _tor(lab),
        "nodes": [
            {
                "name": n.name,
                "address": n.address,
                "netns": n.netns,
                "netns_exists": netns.exists(n.netns),
            }
            for n in lab.nodes
        ],
        "services": services,
        "bgp_sessions": _bgp(lab),
        "overlay": _overlay(lab),
        "pods": pods,
    }


def render(data: dict[str, Any]) -> str:
    lines = [
        f"lab {data['lab']}: datastore {data['datastore'].get('type')}, "
        f"dataplane {data['dataplane'] or '(felix default)'}, BGP {data['bgp']}, "
        f"encap {data['encap']}, {data['subnets']} subnet(s)"
        + (f", typha {data['typha']['address']}" if data["typha"] else "")
    ]
    if data["outside"]:
        out = data["outside"]
        present = "present" if out["netns_exists"] else "MISSING"
        lines.append(f"outside {out['address']}:{out['port']}: netns {out['netns']} ({present})")
    api = data.get("apiserver")
    if api:
        state = "ready" if api["ready"] else "NOT READY"
        lines.append(
            f"kube-apiserver {api['url']}: {state} (pid {api['apiserver_pid']}"
            f"{'' if api['apiserver_alive'] else ' DEAD'}, etcd pid {api['etcd_pid']}"
            f"{'' if api['etcd_alive'] else ' DEAD'}); kubeconfig {api['kubeconfig']}"
            + (f"; {api['error']}" if api["error"] else "")
        )
    for node in data["nodes"]:
        present = "present" if node["netns_exists"] else "MISSING"
        lines.append(f"node {node['name']} {node['address']}: netns {node['netns']} ({present})")
    lines.append("\nSERVICE        NODE      PID      STATE    SOCKET")
    for s in data["services"]:
        state = "running" if s["alive"] else "DEAD"
        lines.append(f"{s['name']:14} {s['node']:9} {s['pid']:<8} {state:8} {s['socket']}")
    if data["bgp_sessions"] or data["tor"]:
        lines.append("\nBGP NODE   PEER             TYPE                    STATE        SINCE")
        for entry in data["bgp_sessions"]:
            if entry["error"]:
                lines.append(f"{entry['node']:10} {entry['error']}")
            for p in entry["peers"]:
                lines.append(
                    f"{entry['node']:10} {p['address']:16} {p['type']:23} {p['state']:12} "
                    f"{p['since']}"
                )
        tor = data["tor"]
        if tor:
            where = f"tor ({tor['kind']}, AS {tor['asn']}, {'running' if tor['alive'] else 'DEAD'})"
            lines.append(f"\n{where}" + (f": {tor['error']}" if tor["error"] else ""))
            for address, state in sorted(tor["sessions"].items()):
                lines.append(f"tor        {address:16} {'':23} {state}")
    lines.append("\nOVERLAY    VXLAN VTEP          MTU   ROUTES DIRECT POD-MTU IPIP")
    for o in data["overlay"]:
        if o["error"]:
            lines.append(f"{o['node']:10} {o['error']}")
            continue
        vtep = o["vtep"] if o["vxlan_device"] else "-"
        lines.append(
            f"{o['node']:10} {vtep:16} {o['vxlan_mtu'] or '-':<5} {o['vxlan_routes']:<6} "
            f"{o['direct_routes']:<6} {o['pod_mtu']:<7} {o['ipip'] or '-'}"
            + (f"  ({o['problem']})" if o["problem"] else "")
        )
    lines.append(
        "\nPOD                  IP               NODE      INTERFACE        SERVER   LABELS"
    )
    for p in data["pods"]:
        labels = ",".join(f"{k}={v}" for k, v in p["labels"].items())
        server = "running" if p["server_alive"] else "DEAD"
        lines.append(
            f"{p['pod']:20} {p['ip']:16} {p['node']:9} {p['interface']:16} {server:8} {labels}"
        )
    return "\n".join(lines)
