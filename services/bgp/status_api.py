"""calico.bgp.v1.BGPStatus: the daemon's status as the proto's BGPStatusReply."""

from __future__ import annotations

from typing import Any

import grpc

from calico.bgp.v1 import bgp_pb2, bgp_pb2_grpc
from services.bgp.daemon import BGPDaemon, DaemonStatus, PeerStatus

SERVICE_NAME = "calico.bgp.v1.BGPStatus"


def _peer(status: PeerStatus) -> bgp_pb2.Peer:
    peer = status.intent
    out = bgp_pb2.Peer(
        address=peer.address,
        port=peer.port,
        type=peer.type,
        protocol=peer.protocol,
        as_number=peer.as_number,
    )
    bird = status.bird
    if bird is not None:
        out.state = bird.bgp_state or bird.state.capitalize()
        out.since = bird.since
        out.info = bird.info
        out.last_error = bird.last_error
        out.routes_imported = bird.routes_imported
        out.routes_exported = bird.routes_exported
    return out


def to_reply(status: DaemonStatus) -> bgp_pb2.BGPStatusReply:
    intent = status.intent
    reply = bgp_pb2.BGPStatusReply(
        node=status.node,
        router_id=(intent.router_id or "") if intent else "",
        as_number=intent.as_number if intent else 0,
        bird_running=status.bird_running,
        bird_pid=status.bird_pid or 0,
        bird_restarts=status.bird_restarts,
        peers=[_peer(p) for p in status.peers],
        advertised=list(intent.advertised) if intent else [],
        note="; ".join(status.notes),
        in_sync=status.in_sync,
    )
    last = status.last_apply
    if last is not None:
        reply.last_apply.CopyFrom(
            bgp_pb2.ConfigApply(
                ok=last.ok,
                error=last.error,
                finished_unix=last.finished_unix,
                duration_seconds=last.duration_seconds,
                config_sha256=last.config_sha256,
                reloaded=last.reloaded,
            )
        )
    return reply


class BGPStatusServicer(bgp_pb2_grpc.BGPStatusServicer):
    def __init__(self, daemon: BGPDaemon) -> None:
        self._daemon = daemon

    async def GetStatus(
        self,
        request: bgp_pb2.GetStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> bgp_pb2.BGPStatusReply:
        return to_reply(await self._daemon.status())


def add_to_server(servicer: BGPStatusServicer, server: grpc.aio.Server) -> None:
    bgp_pb2_grpc.add_BGPStatusServicer_to_server(servicer, server)
