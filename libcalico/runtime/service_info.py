"""calico.common.v1.ServiceInfo: every daemon says who it is."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from calico.common.v1 import service_info_pb2, service_info_pb2_grpc

SERVICE_NAME: str = service_info_pb2.DESCRIPTOR.services_by_name["ServiceInfo"].full_name
PACKAGE = "calico-py"


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


@dataclass(frozen=True)
class ServiceIdentity:
    service_name: str
    version: str = field(default_factory=package_version)
    node_name: str = ""
    datastore_type: str = ""
    start_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    pid: int = field(default_factory=os.getpid)

    def to_proto(self) -> service_info_pb2.Info:
        started = Timestamp()
        started.FromDatetime(self.start_time)
        return service_info_pb2.Info(
            service_name=self.service_name,
            version=self.version,
            node_name=self.node_name,
            datastore_type=self.datastore_type,
            start_time=started,
            pid=self.pid,
        )


class ServiceInfoServicer(service_info_pb2_grpc.ServiceInfoServicer):
    def __init__(self, identity: ServiceIdentity) -> None:
        self.identity = identity

    async def GetInfo(
        self,
        request: service_info_pb2.GetInfoRequest,
        context: grpc.aio.ServicerContext[service_info_pb2.GetInfoRequest, service_info_pb2.Info],
    ) -> service_info_pb2.Info:
        return self.identity.to_proto()
