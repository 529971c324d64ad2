"""What both plugins' `main()` share: read the process environment and stdin, run one
invocation, print its JSON and return the exit status. Built-in modules only (start-up cost)."""

from __future__ import annotations

import posix
import sys

from cni_client.cni import errors, jsonio
from cni_client.cni.errors import CniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Runner = Callable[[dict[str, str], bytes], tuple[int, str]]


def process_environ() -> dict[str, str]:
    return {
        k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
        for k, v in posix.environ.items()
    }


def read_stdin() -> bytes:
    try:
        return sys.stdin.buffer.read()
    except (OSError, AttributeError, ValueError) as exc:
        raise CniError(
            errors.IO_FAILURE, f"cannot read the network config from stdin: {exc}"
        ) from None


def plugin_main(run: Runner, latest_version: str) -> int:
    """Run one invocation with `run(environ, stdin) -> (status, stdout)`; VERSION needs no stdin."""
    environ = process_environ()
    try:
        version_query = environ.get("CNI_COMMAND") == "VERSION" and sys.stdin.isatty()
        stdin = b"" if version_query else read_stdin()
    except CniError as exc:
        sys.stdout.write(jsonio.dumps(exc.to_dict(latest_version)) + "\n")
        return 1
    status, out = run(environ, stdin)
    if out:
        sys.stdout.write(out + "\n")
    sys.stdout.flush()
    return status
