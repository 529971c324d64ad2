"""`calico`: the CNI plugin. A runtime execs it once per pod and command with CNI_* variables
and the network config on stdin; it asks calico-ipamd for addresses and calico-felix for the
endpoint, and prints the spec's result or error JSON on stdout.

Start-up cost matters more than anything else here (see cni_client/DESIGN.md): this module and
everything it imports use built-in modules only, and the installed launcher runs Python with
`-S -E` (cni_client/install.py).
"""

from __future__ import annotations

import sys

from cni_client.cni import env, errors, jsonio, netconf, versions
from cni_client.cni.entry import plugin_main
from cni_client.cni.errors import CniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cni_client.cni.span import PluginSpan


_OTLP_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def run(environ: dict[str, str], stdin: bytes) -> tuple[int, str]:
    """One invocation: (exit status, stdout text). Separate from main() for tests."""
    if not any(environ.get(name) for name in _OTLP_ENVS):
        return _run(environ, stdin, None)  # no tracing: nothing more is imported
    from cni_client.cni import span

    target = span.endpoint(environ)
    if not target:
        return _run(environ, stdin, None)
    recorder = span.PluginSpan()
    status, out = _run(environ, stdin, recorder)
    recorder.export(target, environ)
    return status, out


def _run(environ: dict[str, str], stdin: bytes, recorder: PluginSpan | None) -> tuple[int, str]:
    version = versions.LATEST
    try:
        inv = env.read_invocation(environ)
        if recorder is not None:
            recorder.inv = inv
        if inv.command == "VERSION":
            return 0, jsonio.dumps(versions.version_info())
        raw = netconf.decode_object(stdin)
        requested = netconf.version_of(raw)
        if requested in versions.SUPPORTED:
            version = requested
        conf = netconf.parse(stdin, inv.command)
        return 0, _dispatch(inv, conf, environ, recorder)
    except CniError as exc:
        if recorder is not None:
            recorder.error = (exc.code, exc.msg)
        return 1, jsonio.dumps(exc.to_dict(version))
    except Exception as exc:  # a bug: still answer in the spec's format
        err = CniError(errors.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        if recorder is not None:
            recorder.error = (err.code, err.msg)
        return 1, jsonio.dumps(err.to_dict(version))


def _dispatch(
    inv: env.Invocation, conf: netconf.NetConf, environ: dict[str, str], recorder: PluginSpan | None
) -> str:
    # Imported here so VERSION and input errors never load the gRPC side.
    from cni_client.cni import commands
    from cni_client.cni.trace import new_traceparent

    traceparent = new_traceparent(environ)
    if recorder is not None:
        recorder.traceparent = traceparent  # the daemons' spans become children of ours
    if inv.command == "ADD":
        return jsonio.dumps(commands.cmd_add(inv, conf, traceparent))
    if inv.command == "DEL":
        commands.cmd_del(inv, conf, traceparent)
    elif inv.command == "CHECK":
        commands.cmd_check(inv, conf, traceparent)
    elif inv.command == "STATUS":
        commands.cmd_status(conf)
    elif inv.command == "GC":
        commands.cmd_gc(conf, traceparent)
    return ""


def main() -> int:
    return plugin_main(run, versions.LATEST)


if __name__ == "__main__":
    sys.exit(main())
