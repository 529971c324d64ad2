"""A client for BIRD's control socket: what `birdc -s SOCK <command>` does, without a process.

BIRD's CLI protocol: on connect BIRD sends "0001 BIRD 2.0.12 ready."; each command is one
line; the reply is lines "NNNN-text" (a new item with code NNNN), " text" (continuing the last
item) and ends with a line "NNNN text" (code, space). Codes 8000-9999 are errors. One
connection per command keeps the client stateless (BIRD serves many CLI clients at once).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT_S = 10.0
_STREAM_LIMIT = 1 << 24  # lines of `show protocols all` are short; the limit is per line


class BirdControlError(Exception):
    """The control socket did not answer, or answered an error (`code` then set)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class BirdReply:
    code: int  # the final line's code
    lines: tuple[tuple[int, str], ...]  # (code, text) per line, continuation lines included

    @property
    def text(self) -> str:
        """The reply as birdc prints it (codes stripped)."""
        return "\n".join(text for _, text in self.lines)

    @property
    def ok(self) -> bool:
        return self.code < 8000

    def message(self) -> str:
        """The last non-empty line: BIRD's verdict ("Reconfigured", an error, ...)."""
        for _, text in reversed(self.lines):
            if text.strip():
                return text.strip()
        return ""


def _parse_line(raw: str, last_code: int) -> tuple[int, str, bool]:
    """-> (code, text, final)."""
    if len(raw) >= 5 and raw[:4].isdigit() and raw[4] in "- ":
        return int(raw[:4]), raw[5:], raw[4] == " "
    if raw.startswith(" "):
        return last_code, raw[1:], False
    return last_code, raw, False


class BirdControl:
    def __init__(self, socket_path: str | Path, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    async def command(self, command: str, within: float | None = None) -> BirdReply:
        """Run one CLI command; BirdControlError when BIRD does not answer in time."""
        if "\n" in command:
            raise ValueError("a BIRD command is one line")
        try:
            return await asyncio.wait_for(self._command(command), within or self.timeout)
        except TimeoutError:
            raise BirdControlError(
                f"BIRD control socket {self.socket_path}: no answer to {command!r} in time"
            ) from None
        except OSError as exc:
            raise BirdControlError(f"BIRD control socket {self.socket_path}: {exc}") from exc

    async def _command(self, command: str) -> BirdReply:
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=_STREAM_LIMIT)
        try:
            hello = await self._read_reply(reader)
            if hello.code != 1:
                raise BirdControlError(f"unexpected greeting from BIRD: {hello.text!r}")
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return await self._read_reply(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @staticmethod
    async def _read_reply(reader: asyncio.StreamReader) -> BirdReply:
        lines: list[tuple[int, str]] = []
        code = 0
        while True:
            raw = await reader.readline()
            if not raw:
                raise BirdControlError("BIRD closed the control connection mid-reply")
            code, text, final = _parse_line(raw.decode(errors="replace").rstrip("\n"), code)
            lines.append((code, text))
            if final:
                if code == 0 and not text:
                    lines.pop()  # "0000 " only terminates a listing
                return BirdReply(code, tuple(lines))

    async def alive(self, within: float = 2.0) -> bool:
        """BIRD answers on the socket."""
        try:
            reply = await self.command("show status", within)
        except BirdControlError:
            return False
        return reply.ok
