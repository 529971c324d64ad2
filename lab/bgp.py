"""BGP in the lab: the objects each mode writes, who must peer with whom, and each node's
calico-bgpd asked (GetStatus over its socket) until every expected session is Established.

Modes (`--bgp`):
  mesh  Calico's default full node-to-node mesh: no BGP objects needed.
  rr    node-1 is the route reflector (routeReflectorClusterID, label route-reflector=true);
        the mesh is off (BGPConfiguration default) and every node peers with the reflector
        (BGPPeer peer-with-route-reflectors), as Calico documents it.
  none  no calico-bgpd: a single node needs no routing protocol.
A top-of-rack router (`--tor`) is a global BGPPeer at the lab network's gateway address, which
every node peers with in either mode.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from lab import network, objects
from lab.lab import Lab, LabError
from lab.state import NodeState

MODES = ("mesh", "rr", "none")
NODE_AS = 64512  # Calico's default AS number (no BGPConfiguration sets another)
DEFAULT_TOR_ASN = 65000
TOR_ADDRESS = str(network.GATEWAY)
RR_CLUSTER_ID = "244.0.0.1"
RR_LABEL = "route-reflector"
ESTABLISHED = "Established"
CONVERGE_TIMEOUT = 30.0
STATUS_TIMEOUT = 2.0
POLL_PAUSE = 0.2
STATUS_SERVICE = "calico.bgp.v1.BGPStatus"


def default_mode(nodes: int, tor: bool) -> str:
    """Routing is needed once there is more than one node or a router to tell."""
    return "mesh" if nodes > 1 or tor else "none"


def node_objects(nodes: Sequence[NodeState], mode: str) -> list[dict[str, Any]]:
    """The Node resources: each with its address and its subnet's prefix length (what
    CrossSubnet compares); in rr mode node-1 is the reflector."""
    out = []
    for index, node in enumerate(nodes):
        reflector = mode == "rr" and index == 0
        out.append(
            objects.node(
                node.name,
                network.prefix_of(node.address),
                labels={RR_LABEL: "true"} if reflector else None,
                route_reflector_cluster_id=RR_CLUSTER_ID if reflector else "",
            )
        )
    return out


def mode_objects(mode: str, tor_asn: int | None) -> list[dict[str, Any]]:
    """BGPConfiguration and BGPPeers of a mode, plus the ToR's global peer when there is one."""
    out = []
    if mode == "rr":
        out.append(objects.bgp_configuration("default", {"nodeToNodeMeshEnabled": False}))
        out.append(
            objects.bgp_peer(
                "peer-with-route-reflectors",
                {"nodeSelector": "all()", "peerSelector": f"{RR_LABEL} == 'true'"},
            )
        )
    if tor_asn is not None:
        out.append(objects.bgp_peer("tor", {"peerIP": TOR_ADDRESS, "asNumber": tor_asn}))
    return out


def expected_peers(mode: str, nodes: Sequence[NodeState], tor: bool) -> dict[str, set[str]]:
    """Node name -> addresses it must have an Established session with."""
    if mode == "none":
        return {}
    addresses = [n.address for n in nodes]
    out: dict[str, set[str]] = {}
    for index, node in enumerate(nodes):
        if mode == "mesh":
            peers = set(addresses) - {node.address}
        elif index == 0:  # the reflector: every client
            peers = set(addresses[1:])
        else:  # a client: the reflector only
            peers = {addresses[0]}
        out[node.name] = peers | ({TOR_ADDRESS} if tor else set())
    return out


# ---- status from calico-bgpd ----


def get_status(socket: str, timeout: float = STATUS_TIMEOUT) -> Any:
    """calico-bgpd's BGPStatusReply (raises grpc.RpcError when it does not answer)."""
    import grpc

    from calico.bgp.v1 import bgp_pb2, bgp_pb2_grpc

    with grpc.insecure_channel(f"unix://{socket}") as channel:
        return bgp_pb2_grpc.BGPStatusStub(channel).GetStatus(
            bgp_pb2.GetStatusRequest(), timeout=timeout
        )


def status_dict(reply: Any) -> dict[str, Any]:
    """A reply as JSON-able data, field names as in the proto."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def sessions(reply: Any) -> dict[str, str]:
    """Peer address -> BIRD's state of the session ("Established", "Active", ...)."""
    return {peer.address: peer.state for peer in reply.peers}


def node_sessions(node_socket: str) -> dict[str, str] | str:
    """A node's sessions, or why they could not be read."""
    import grpc

    try:
        return sessions(get_status(node_socket))
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        return f"calico-bgpd does not answer ({code.name if code else exc})"


def unconverged(lab: Lab, expected: Mapping[str, set[str]]) -> dict[str, str]:
    """Node name -> what is missing ("10.66.0.12 Active, 10.66.0.1 absent") for every node
    whose expected sessions are not all Established."""
    missing: dict[str, str] = {}
    for name, want in expected.items():
        found = node_sessions(lab.node(name).bgpd_socket)
        if isinstance(found, str):
            missing[name] = found
            continue
        pending = [
            f"{peer} {found.get(peer, 'absent')}"
            for peer in sorted(want)
            if found.get(peer) != ESTABLISHED
        ]
        if pending:
            missing[name] = ", ".join(pending)
    return missing


def wait_converged(lab: Lab, timeout: float = CONVERGE_TIMEOUT) -> float:
    """Wait until every node's expected sessions are Established; returns the seconds it
    took. LabError names each node and peer still missing after `timeout`."""
    expected = expected_peers(lab.state.bgp, lab.state.nodes, bool(lab.state.tor))
    started = time.monotonic()
    while True:
        missing = unconverged(lab, expected)
        elapsed = time.monotonic() - started
        if not missing:
            return elapsed
        if elapsed > timeout:
            detail = "; ".join(f"{node}: {what}" for node, what in sorted(missing.items()))
            raise LabError(
                f"BGP did not converge within {timeout:.0f}s: {detail} "
                f"(logs: nodes/<node>/bgpd.log and bird/bird.log in {lab.dir})"
            )
        time.sleep(POLL_PAUSE)
