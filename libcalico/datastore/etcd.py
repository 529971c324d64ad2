"""The etcd v3 datastore, over aetcd.

aetcd gives us the gRPC channel and the watch-stream multiplexer; key-value calls go straight
to its KV stub with etcd's own protobuf messages, because every write needs the response
header (the new revision) and, on a failed compare, the current state of the keys to report
which condition failed — aetcd's convenience wrappers drop both.

Writes are single etcd txns: create compares create_revision == 0, update compares
mod_revision (and version > 0, so a missing key never matches), delete compares version > 0
(and mod_revision when given). The failure branch reads the keys, so a failed compare costs
no second round trip.

TLS: https:// endpoints get a TLS channel (`_TLSClient`), with the CA and, for mutual TLS,
the client certificate and key from `EtcdTLSFiles` (libcalico/config.py: ETCD_CA_CERT_FILE,
ETCD_CERT_FILE, ETCD_KEY_FILE), read again on every (re)connect so rotated files take effect.
gRPC checks the server's certificate against the endpoint's host (DNS name or IP SAN).
"""

from __future__ import annotations

import builtins  # `list` inside the class names the list() method
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aetcd
import grpc
from aetcd import exceptions as aetcd_errors
from aetcd import rpc, watcher

from libcalico.config import ConfigError, EtcdTLSFiles, etcd_endpoint_scheme
from libcalico.datastore.api import (
    Datastore,
    DatastoreError,
    DatastoreUnavailableError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    ResyncRequiredError,
    RevisionConflictError,
    TxnOp,
    TxnOpType,
    WatchEvent,
)
from libcalico.datastore.common import check_key, check_txn_ops, prefix_range_end

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
_UNAVAILABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# etcd's "from this key to the end of the keyspace".
_ALL_KEYS = b"\0"


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """'https://127.0.0.1:2379' (or '127.0.0.1:2379', plain) -> ('127.0.0.1', 2379)."""
    parts = urlsplit(endpoint if "://" in endpoint else "http://" + endpoint)
    if parts.scheme not in ("http", "https"):
        raise DatastoreError(f"etcd endpoint {endpoint!r}: expected http:// or https://")
    if not parts.hostname:
        raise DatastoreError(f"etcd endpoint {endpoint!r}: no host")
    return parts.hostname, parts.port or 2379


def _to_kv(kv: Any) -> KeyValue:
    return KeyValue(
        key=bytes(kv.key).decode(),
        value=bytes(kv.value),
        mod_revision=int(kv.mod_revision),
        create_revision=int(kv.create_revision),
    )


def _compare(key: bytes, target: Any, result: Any, **value: int) -> Any:
    return rpc.Compare(key=key, target=target, result=result, **value)


def _conditions(op: TxnOp) -> builtins.list[Any]:
    key = op.key.encode()
    exists = _compare(key, rpc.Compare.VERSION, rpc.Compare.GREATER, version=0)
    if op.type is TxnOpType.CREATE:
        return [_compare(key, rpc.Compare.CREATE, rpc.Compare.EQUAL, create_revision=0)]
    conditions = [exists]
    if op.revision is not None:
        mod = _compare(key, rpc.Compare.MOD, rpc.Compare.EQUAL, mod_revision=op.revision)
        conditions.append(mod)
    return conditions


def _request(op: TxnOp) -> Any:
    key = op.key.encode()
    if op.type is TxnOpType.DELETE:
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, prev_kv=True))
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=op.value, prev_kv=True))


def _failure(op: TxnOp, current: KeyValue | None) -> DatastoreError | None:
    """The error `op`'s condition raises against the key's current state, if it fails."""
    if op.type is TxnOpType.CREATE:
        return KeyExistsError(op.key) if current is not None else None
    if current is None:
        return KeyNotFoundError(op.key)
    if op.revision is not None and current.mod_revision != op.revision:
        return RevisionConflictError(op.key, op.revision, current.mod_revision)
    return None


class _TLSClient(aetcd.Client):  # type: ignore[misc]  # aetcd is untyped
    """aetcd.Client over a TLS channel.

    Why a subclass: aetcd 1.0.0's Client.connect() always opens `rpc.insecure_channel` and has
    no TLS option. This connect() is aetcd's own with `grpc.aio.secure_channel` in its place
    (minus the username/password authentication, which we do not use); the stubs and the
    watcher are aetcd's public ones, so the rest of Client (watch, close) works unchanged.
    """

    def __init__(
        self, host: str, port: int, credentials: grpc.ChannelCredentials, timeout: float
    ) -> None:
        super().__init__(host=host, port=port, timeout=timeout)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        self.channel = grpc.aio.secure_channel(
            f"{self._host}:{self._port}", self._credentials, options=list(self._options.items())
        )
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(
            rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()


class EtcdDatastore(Datastore):
    """Datastore on an etcd v3 cluster; endpoints are tried in turn when one is unreachable.

    https:// endpoints use TLS with `tls` (None: the system's CA bundle, no client
    certificate); every endpoint must have the same scheme.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tls: EtcdTLSFiles | None = None,
    ):
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        endpoints = [e.strip() for e in endpoints]
        if not endpoints:
            raise DatastoreError("no etcd endpoint given")
        try:
            scheme = etcd_endpoint_scheme(endpoints)
        except ConfigError as exc:
            raise DatastoreError(str(exc)) from None
        if scheme == "http" and tls is not None:
            raise DatastoreError(
                f"etcd TLS settings given but the endpoints are plain http:// "
                f"({','.join(endpoints)}); use https://"
            )
        self._scheme = scheme
        self._tls = (tls or EtcdTLSFiles()) if scheme == "https" else None
        self._endpoints = [parse_endpoint(e) for e in endpoints]
        self._current = 0
        self._timeout = timeout
        self._client: Any = None
        self._closed = False

    # ---- connection and error mapping ----

    async def _connected(self) -> Any:
        if self._closed:
            raise DatastoreError("datastore is closed")
        if self._client is None:
            host, port = self._endpoints[self._current]
            # aetcd's timeout applies to unary calls and watch creation.
            client: Any
            if self._tls is None:
                client = aetcd.Client(host=host, port=port, timeout=self._timeout)
            else:
                client = _TLSClient(host, port, self._credentials(), self._timeout)
            await client.connect()
            self._client = client
        return self._client

    def _credentials(self) -> grpc.ChannelCredentials:
        assert self._tls is not None
        try:
            ca, cert, key = self._tls.load()
        except ConfigError as exc:
            # Checked at start-up (DatastoreConfig); gone now is most likely a rotation in
            # progress, so callers retry as for an unreachable etcd.
            raise DatastoreUnavailableError(f"etcd TLS: {exc}") from None
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )

    async def _fail_over(self) -> None:
        """Drop the client so the next call connects to the next endpoint."""
        client, self._client = self._client, None
        self._current = (self._current + 1) % len(self._endpoints)
        if client is not None:
            await client.close()

    def _endpoint_name(self) -> str:
        host, port = self._endpoints[self._current]
        return f"{self._scheme}://{host}:{port}"

    def _unavailable(self, details: str | None) -> str:
        """gRPC's words for a failed connection, plus what they most likely mean for TLS
        (gRPC reports a refused client certificate as a corrupted record, for one)."""
        details = details or ""
        message = f"etcd {self._endpoint_name()}: {details}"
        tls = self._tls
        if tls is None:
            if "Socket closed" in details:
                message += " (if etcd serves TLS, use an https:// endpoint)"
            return message
        if "CERTIFICATE_VERIFY_FAILED" in details:
            ca = tls.ca_cert_file
            source = f"ETCD_CA_CERT_FILE {ca}" if ca else "the system CA bundle"
            return message + f" (etcd's certificate is not signed by a CA in {source})"
        if "Hostname Verification" in details:
            host = self._endpoints[self._current][0]
            return message + f" (etcd's certificate does not name the endpoint's host {host})"
        if any(s in details for s in ("TSI_DATA_CORRUPTED", "BAD_CERTIFICATE", "CERT_REQUIRED")):
            if tls.cert_file is None:
                return message + (
                    " (etcd refused the connection: it may require a client certificate; "
                    "set ETCD_CERT_FILE and ETCD_KEY_FILE)"
                )
            return message + (
                f" (etcd refused the client certificate ETCD_CERT_FILE {tls.cert_file}: "
                "not signed by a CA etcd trusts?)"
            )
        return message

    async def _call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run one RPC against the KV stub, mapping gRPC failures to datastore errors."""
        try:
            client = await self._connected()
            return await fn(client.kvstub)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _UNAVAILABLE_CODES:
                message = self._unavailable(exc.details())
                await self._fail_over()
                raise DatastoreUnavailableError(message) from exc
            raise DatastoreError(f"etcd: {exc.code().name}: {exc.details()}") from exc
        except (aetcd_errors.ConnectionFailedError, aetcd_errors.ConnectionTimeoutError) as exc:
            name = self._endpoint_name()
            await self._fail_over()
            raise DatastoreUnavailableError(f"etcd {name}: {exc}") from exc

    async def _txn(
        self, compare: builtins.list[Any], success: builtins.list[Any], failure: builtins.list[Any]
    ) -> Any:
        request = rpc.TxnRequest(compare=compare, success=success, failure=failure)
        return await self._call(lambda kv: kv.Txn(request, timeout=self._timeout))

    # ---- reads ----

    async def get(self, key: str) -> KeyValue:
        check_key(key)
        request = rpc.RangeRequest(key=key.encode())
        response = await self._call(lambda kv: kv.Range(request, timeout=self._timeout))
        if not response.kvs:
            raise KeyNotFoundError(key)
        return _to_kv(response.kvs[0])

    async def list(self, prefix: str) -> ListResult:
        end = prefix_range_end(prefix)
        request = rpc.RangeRequest(
            key=prefix.encode() or _ALL_KEYS,
            range_end=_ALL_KEYS if end is None else end.encode(),
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.KEY,
        )
        response = await self._call(lambda kv: kv.Range(request, timeout=self._timeout))
        return ListResult(
            items=[_to_kv(kv) for kv in response.kvs], revision=int(response.header.revision)
        )

    async def current_revision(self) -> int:
        request = rpc.RangeRequest(key=_ALL_KEYS, count_only=True)
        response = await self._call(lambda kv: kv.Range(request, timeout=self._timeout))
        return int(response.header.revision)

    # ---- writes ----

    @staticmethod
    def _written(op: TxnOp, revision: int, put_response: Any) -> KeyValue:
        created = revision
        if put_response.HasField("prev_kv"):
            created = int(put_response.prev_kv.create_revision)
        return KeyValue(op.key, op.value, mod_revision=revision, create_revision=created)

    async def txn(self, ops: builtins.list[TxnOp]) -> builtins.list[KeyValue | None]:
        check_txn_ops(ops)
        if not ops:
            return []
        compare = [c for op in ops for c in _conditions(op)]
        reads = [rpc.RequestOp(request_range=rpc.RangeRequest(key=op.key.encode())) for op in ops]
        response = await self._txn(compare, [_request(op) for op in ops], reads)
        if not response.succeeded:
            # The failure branch read every key in the same atomic step as the compare.
            for op, read in zip(ops, response.responses, strict=True):
                kvs = read.response_range.kvs
                error = _failure(op, _to_kv(kvs[0]) if kvs else None)
                if error is not None:
                    raise error
            raise DatastoreError("etcd txn failed but no condition was violated")
        revision = int(response.header.revision)
        results: builtins.list[KeyValue | None] = []
        for op, written in zip(ops, response.responses, strict=True):
            if op.type is TxnOpType.DELETE:
                results.append(None)
            else:
                results.append(self._written(op, revision, written.response_put))
        return results

    async def create(self, key: str, value: bytes) -> KeyValue:
        (kv,) = await self.txn([TxnOp(TxnOpType.CREATE, key, value)])
        assert kv is not None
        return kv

    async def update(self, key: str, value: bytes, revision: int) -> KeyValue:
        (kv,) = await self.txn([TxnOp(TxnOpType.UPDATE, key, value, revision)])
        assert kv is not None
        return kv

    async def put(self, key: str, value: bytes) -> KeyValue:
        check_key(key)
        request = rpc.PutRequest(key=key.encode(), value=value, prev_kv=True)
        response = await self._call(lambda kv: kv.Put(request, timeout=self._timeout))
        op = TxnOp(TxnOpType.CREATE, key, value)
        return self._written(op, int(response.header.revision), response)

    async def delete(self, key: str, revision: int | None = None) -> KeyValue:
        check_key(key)
        op = TxnOp(TxnOpType.DELETE, key, revision=revision)
        read = rpc.RequestOp(request_range=rpc.RangeRequest(key=key.encode()))
        response = await self._txn(_conditions(op), [_request(op)], [read])
        if not response.succeeded:
            kvs = response.responses[0].response_range.kvs
            error = _failure(op, _to_kv(kvs[0]) if kvs else None)
            raise error or DatastoreError(f"etcd delete of {key!r} failed")
        return _to_kv(response.responses[0].response_delete_range.prev_kvs[0])

    async def compact(self, revision: int) -> None:
        """Drop history below `revision`; watching from earlier then raises ResyncRequired."""
        request = rpc.CompactionRequest(revision=revision, physical=True)
        await self._call(lambda kv: kv.Compact(request, timeout=self._timeout))

    # ---- watch ----

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """See Datastore.watch; `start_revision` <= 0 means "changes after now"."""
        end = prefix_range_end(prefix)
        try:
            client = await self._connected()
            stream = await client.watch(
                prefix.encode() or _ALL_KEYS,
                range_end=_ALL_KEYS if end is None else end.encode(),
                start_revision=start_revision if start_revision > 0 else None,
                prev_kv=True,
            )
        except aetcd_errors.RevisionCompactedError as exc:
            raise ResyncRequiredError(
                f"watch of {prefix!r} from revision {start_revision}: {exc}"
            ) from exc
        except (TimeoutError, aetcd_errors.ClientError, grpc.aio.AioRpcError) as exc:
            raise DatastoreUnavailableError(f"etcd watch of {prefix!r}: {exc}") from exc
        try:
            async for event in stream:
                deleted = event.kind == "DELETE"
                value: bytes | None = bytes(event.kv.value)
                if deleted:
                    prev = event.prev_kv
                    value = bytes(prev.value) if prev is not None and prev.key else None
                yield WatchEvent(
                    type=EventType.DELETE if deleted else EventType.PUT,
                    key=bytes(event.kv.key).decode(),
                    value=value,
                    revision=int(event.kv.mod_revision),
                )
        except aetcd_errors.RevisionCompactedError as exc:
            raise ResyncRequiredError(f"watch of {prefix!r}: {exc}") from exc
        except Exception as exc:  # any stream failure: the caller must list and re-watch
            raise ResyncRequiredError(f"watch of {prefix!r} broke: {exc!r}") from exc
        finally:
            if not self._closed and self._client is client:
                await stream.cancel()

    # ---- lifecycle ----

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            # Ends every watch stream: aetcd delivers end-of-stream to each watcher.
            await client.close()
