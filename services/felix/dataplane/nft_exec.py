"""Running nft transactions: in-process libnftables (default) or the ``nft`` binary.

libnftables (python3-nftables) runs a whole script as one atomic batch without a fork; it
runs on a worker thread that sits in the target namespace. ``nft -f -`` is the fallback and
the reference the benchmark compares with.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any, Protocol

from services.felix.dataplane.netns import NetnsWorker, command_in_netns


class NftError(RuntimeError):
    """nft refused a transaction (nothing of it was applied)."""


class NftRunner(Protocol):
    async def run(self, script: str) -> None: ...

    async def list_json(self, what: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LibNftRunner:
    def __init__(self, netns_path: str | None) -> None:
        self._worker = NetnsWorker(netns_path, "nft")
        self._nft: Any = self._worker.call(self._make)

    @staticmethod
    def _make() -> Any:
        import nftables

        nft = nftables.Nftables()
        nft.set_handle_output(False)
        return nft

    def _cmd(self, script: str, as_json: bool) -> str:
        self._nft.set_json_output(as_json)
        rc, out, err = self._nft.cmd(script)
        if rc != 0:
            raise NftError(err.strip() or f"nft failed with {rc}")
        return str(out)

    async def run(self, script: str) -> None:
        if script.strip():
            await asyncio.wrap_future(self._worker.submit(lambda: self._cmd(script, False)))

    async def list_json(self, what: str) -> dict[str, Any]:
        out = await asyncio.wrap_future(self._worker.submit(lambda: self._cmd(what, True)))
        return json.loads(out) if out.strip() else {"nftables": []}

    def close(self) -> None:
        self._worker.close()


class CliNftRunner:
    def __init__(self, netns_path: str | None) -> None:
        self._path = netns_path

    async def _nft(self, args: list[str], script: str | None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *command_in_netns(self._path, ["nft", *args]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate(script.encode() if script is not None else None)
        if proc.returncode != 0:
            raise NftError(err.decode().strip() or f"nft failed with {proc.returncode}")
        return out.decode()

    async def run(self, script: str) -> None:
        if script.strip():
            await self._nft(["-f", "-"], script)

    async def list_json(self, what: str) -> dict[str, Any]:
        out = await self._nft(["-j", *what.split()], None)
        return json.loads(out) if out.strip() else {"nftables": []}

    def close(self) -> None:
        pass


def make_runner(netns_path: str | None, backend: str = "lib") -> NftRunner:
    if backend == "cli":
        return CliNftRunner(netns_path)
    try:
        return LibNftRunner(netns_path)
    except ImportError:
        return CliNftRunner(netns_path)
