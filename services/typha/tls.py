"""Mutual TLS on Typha's TCP port, as Calico does between Felix and Typha.

Typha presents its certificate; every client must present one signed by the configured CA
(gRPC refuses the handshake otherwise), and, when an allowed common name or URI SAN is
configured, the client certificate must carry it (checked per call, PERMISSION_DENIED if
not). The Unix socket never uses TLS: it is local and guarded by file permissions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from libcalico.runtime import ServiceRuntime
from libcalico.runtime.addresses import AddressError


@dataclass(frozen=True)
class ServerTLS:
    ca_file: str
    cert_file: str
    key_file: str
    client_cn: str | None = None
    client_uri_san: str | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())],
            root_certificates=Path(self.ca_file).read_bytes(),
            require_client_auth=True,
        )

    def client_allowed(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """None if the caller may proceed, else the reason it may not."""
        auth = context.auth_context()
        if auth.get("transport_security_type") != [b"ssl"]:
            return None  # the Unix socket: local, no certificates
        if self.client_cn is None and self.client_uri_san is None:
            return None  # any certificate the CA signed
        names = {v.decode() for v in auth.get("x509_common_name", [])}
        sans = {v.decode() for v in auth.get("x509_subject_alternative_name", [])}
        if self.client_cn is not None and self.client_cn in names:
            return None
        if self.client_uri_san is not None and self.client_uri_san in sans:
            return None
        wanted = [f"{what} {value!r}" for what, value in
                  (("CN", self.client_cn), ("URI SAN", self.client_uri_san)) if value]  # fmt: skip
        return (
            f"client certificate (CN {sorted(names)}, SANs {sorted(sans)}) is not allowed: "
            f"Typha requires {' or '.join(wanted)}"
        )


class TyphaRuntime(ServiceRuntime):
    """The standard runtime, with TLS on the TCP listener when configured."""

    def __init__(self, *args: Any, tls: ServerTLS | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tls_credentials = tls.credentials() if tls is not None else None

    def _add_port(self, server: grpc.aio.Server, address: str) -> int:
        if self._tls_credentials is None or address.startswith("unix:"):
            return super()._add_port(server, address)
        try:
            port = server.add_secure_port(address, self._tls_credentials)
        except RuntimeError as exc:
            raise AddressError(f"{self.name}: cannot listen on {address}") from exc
        if port == 0:
            raise AddressError(f"{self.name}: cannot listen on {address}")
        return port
