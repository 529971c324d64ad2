"""`calicoctl node status`: this node's BGP peers, from the local calico-bgpd.

    calicoctl node status [--socket PATH] [-o json]

Talks to calico-bgpd's Unix socket (default $CALICO_BGPD_SOCKET or /var/run/calico/bgpd.sock),
not to the datastore: the peer states are BIRD's, live. Exit 1 with "Calico process is not
running." when nothing answers there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from calico.bgp.v1 import bgp_pb2, bgp_pb2_grpc

DEFAULT_SOCKET = "/var/run/calico/bgpd.sock"
TIMEOUT_S = 5.0
HEADERS = ("PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO")


def fetch_status(socket_path: str, timeout: float = TIMEOUT_S) -> bgp_pb2.BGPStatusReply:
    """One GetStatus call; grpc.RpcError when calico-bgpd does not answer."""
    with grpc.insecure_channel(f"unix://{os.path.abspath(socket_path)}") as channel:
        stub = bgp_pb2_grpc.BGPStatusStub(channel)
        reply: bgp_pb2.BGPStatusReply = stub.GetStatus(bgp_pb2.GetStatusRequest(), timeout=timeout)
        return reply


def peer_state(peer: bgp_pb2.Peer) -> str:
    """Calico's STATE column: "up" once Established, else BIRD's state in lower case."""
    if peer.state == "Established":
        return "up"
    return peer.state.lower() or "unknown"


def _since(text: str) -> str:
    return text.split(".", 1)[0] if ":" in text else text  # "16:01:02.345" -> "16:01:02"


def peer_rows(reply: bgp_pb2.BGPStatusReply) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for peer in reply.peers:
        address = peer.address if peer.port in (0, 179) else f"{peer.address}:{peer.port}"
        rows.append((address, peer.type, peer_state(peer), _since(peer.since), peer.info))
    return rows


def format_table(rows: list[tuple[str, str, str, str, str]]) -> str:
    """A table like Calico's (tablewriter): centred headers, left-aligned cells."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    header = (f" {h.center(w)} " for h, w in zip(HEADERS, widths, strict=True))
    lines = [rule, "|" + "|".join(header) + "|", rule]
    for row in rows:
        cells = (f" {c.ljust(w)} " for c, w in zip(row, widths, strict=True))
        lines.append("|" + "|".join(cells) + "|")
    lines.append(rule)
    return "\n".join(lines)


def format_apply(apply: bgp_pb2.ConfigApply) -> str:
    if not apply.config_sha256:
        return "Last config apply: none yet"
    when = time.strftime("%H:%M:%S", time.localtime(apply.finished_unix))
    detail = f"{apply.duration_seconds * 1000:.0f} ms, sha256 {apply.config_sha256[:12]}"
    if not apply.ok:
        return (
            f"Last config apply: FAILED at {when} ({detail}); BIRD keeps its previous "
            f"config: {apply.error}"
        )
    what = "reloaded" if apply.reloaded else "unchanged"
    return f"Last config apply: ok at {when} ({what}, {detail})"


def format_status(reply: bgp_pb2.BGPStatusReply) -> str:
    lines = [
        "Calico process is running."
        if reply.bird_running
        else "Calico process is running, but BIRD is not.",
        "",
        "IPv4 BGP status",
    ]
    rows = peer_rows(reply)
    lines.append(format_table(rows) if rows else "No IPv4 peers found.")
    lines += ["", "IPv6 BGP status", "No IPv6 peers found.", "", format_apply(reply.last_apply)]
    if reply.note:
        lines.append(f"Note: {reply.note}")
    return "\n".join(lines)


def status_json(reply: bgp_pb2.BGPStatusReply) -> dict[str, Any]:
    return MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _status(args: argparse.Namespace) -> int:
    try:
        reply = fetch_status(args.socket)
    except grpc.RpcError as exc:
        print("Calico process is not running.", file=sys.stderr)
        print(f"(no answer from calico-bgpd at {args.socket}: {exc.code().name})", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(status_json(reply), indent=2, sort_keys=True))
    else:
        print(format_status(reply))
    return 0


def register(subparsers: Any) -> None:
    node = subparsers.add_parser("node", help="this node's BGP status")
    commands = node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    status = commands.add_parser("status", help="BGP peers as BIRD sees them, last config apply")
    status.add_argument(
        "--socket",
        default=os.environ.get("CALICO_BGPD_SOCKET") or DEFAULT_SOCKET,
        help="calico-bgpd's Unix socket (CALICO_BGPD_SOCKET; default %(default)s)",
    )
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status.set_defaults(func=_status)
