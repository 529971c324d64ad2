"""Test helpers: a real calico-typha process, certificates made with openssl, stream readers.

TyphaProcess starts the console script with a --ready-file and waits for it (Typha writes it
once listening and in sync); it stops the process by its PID, gracefully or with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from calico.typha.v1 import typha_pb2, typha_pb2_grpc
from libcalico.datastore import Datastore
from libcalico.syncer.api import Delete, InSync, SyncerUpdate, Update
from libcalico.syncer.typha import TyphaTLS, open_typha_channel

TYPHA = str(Path(sys.executable).parent / "calico-typha")
START_TIMEOUT = 30.0


class TyphaProcess:
    def __init__(
        self,
        workdir: Path,
        datastore_env: Mapping[str, str],
        args: Sequence[str] = (),
        listen: str | None = "127.0.0.1:0",
        socket: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.env = {**os.environ, **datastore_env, "NODENAME": "typha-test"}
        self.args = list(args)
        self.listen = listen
        self.socket = socket
        self.proc: subprocess.Popen[bytes] | None = None
        self.tcp: str | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"typha-{self.starts}.log"

    def start(self, wait: bool = True) -> TyphaProcess:
        self.starts += 1
        ready = self.workdir / "typha-ready.json"
        ready.unlink(missing_ok=True)
        argv = [TYPHA, "--ready-file", str(ready), *self.args]
        if self.listen is not None:
            argv += ["--listen", self.listen]
        if self.socket is not None:
            argv += ["--socket", str(self.socket)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        if wait:
            self.wait_ready(ready)
        return self

    def wait_ready(self, ready: Path) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if ready.exists():
                info = json.loads(ready.read_text())
                self.tcp = info["tcp"]
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"calico-typha did not get ready:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    @property
    def address(self) -> str:
        if self.tcp is not None:
            return self.tcp
        assert self.socket is not None
        return str(self.socket)

    def kill(self) -> None:
        """SIGKILL: Typha dies without any goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> TyphaProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def typha_status(address: str, tls: TyphaTLS | None = None) -> typha_pb2.TyphaStatus:
    async with open_typha_channel(address, tls, tracing=False) as channel:
        stub = typha_pb2_grpc.TyphaStub(channel)
        return await stub.GetStatus(typha_pb2.GetStatusRequest(), timeout=5)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], within: float = 20.0, interval: float = 0.05
) -> None:
    """Until `await predicate()` is true; AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within:.1f}s")
        await asyncio.sleep(interval)


async def typha_has(address: str, syncer_type: str, size: int, tls: TyphaTLS | None = None) -> None:
    """Until Typha's cache for `syncer_type` holds `size` keys: writes reach Typha through its
    watch, so a snapshot taken right after a write may not include it yet (as in Calico)."""

    async def ready() -> bool:
        status = await typha_status(address, tls)
        return any(c.syncer_type == syncer_type and c.snapshot_size == size for c in status.caches)

    await wait_for(ready)


@dataclass
class View:
    """A consumer's picture built from syncer batches, checking the stream's rules."""

    state: dict[str, bytes]
    in_sync: bool = False
    batches: int = 0
    updates: int = 0
    # Typha never repeats a value; a direct DatastoreSyncer sends a same-value rewrite (it
    # deduplicates by revision only), so its views relax this check.
    no_repeats: bool = True

    def apply(self, batch: list[SyncerUpdate]) -> None:
        self.batches += 1
        for item in batch:
            if isinstance(item, InSync):
                assert not self.in_sync, "second InSync"
                self.in_sync = True
            elif isinstance(item, Update):
                if self.no_repeats:
                    assert self.state.get(item.key) != item.value, f"duplicate of {item.key}"
                self.state[item.key] = item.value
                self.updates += 1
            elif isinstance(item, Delete):
                assert item.key in self.state, f"delete of unknown {item.key}"
                del self.state[item.key]


async def datastore_view(datastore: Datastore, prefixes: Sequence[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for prefix in prefixes:
        for kv in (await datastore.list(prefix)).items:
            out[kv.key] = kv.value
    return out


def make_certs(directory: Path) -> dict[str, Path]:
    """A CA, Typha's server certificate (CN typha-server), two client certificates signed by
    the CA (CN typha-client and CN intruder) and one signed by another CA (CN typha-client)."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    def ca(name: str) -> None:
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN={name}")  # fmt: skip

    def leaf(name: str, cn: str, issuer: str, san: str) -> None:
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")  # fmt: skip
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.crt", "-CAkey",
            f"{issuer}.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip

    ca("ca")
    ca("other-ca")
    leaf("server", "typha-server", "ca", "DNS:typha-server")
    leaf("client", "typha-client", "ca", "DNS:typha-client")
    leaf("intruder", "intruder", "ca", "DNS:intruder")
    leaf("foreign", "typha-client", "other-ca", "DNS:typha-client")
    return {p.stem + p.suffix: p for p in directory.iterdir()}


@contextlib.asynccontextmanager
async def raw_stream(address: str, hello: typha_pb2.ClientHello, tls: TyphaTLS | None = None):  # type: ignore[no-untyped-def]
    """The Sync call itself, for tests that read messages one by one."""
    channel = open_typha_channel(address, tls, tracing=False)
    try:
        yield typha_pb2_grpc.TyphaStub(channel).Sync(hello)
    finally:
        await channel.close(grace=None)
