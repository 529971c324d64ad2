"""`calico-ipam`: the CNI IPAM plugin, a thin client of the node's calico-ipamd.

A main plugin (or a runtime, for tests) execs it with CNI_* variables and the network config
on stdin; ADD prints a result with `ips`, DEL releases the attachment's handle, CHECK checks the
prevResult's addresses are still held, STATUS and GC (CNI 1.1) ask calico-ipamd, VERSION lists
the supported versions. The handle is `<network name>.<CNI_CONTAINERID>`, so Kubernetes'
`k8s-pod-network` gives Calico's `k8s-pod-network.<containerID>`.

Light like `calico` (cni_client/DESIGN.md): only built-in modules, the launcher runs Python
with `-S -E`, and VERSION and input errors return before the gRPC side is imported.
"""

from __future__ import annotations

import sys

from cni_client.cni import env, errors, ipam_netconf, jsonio, netconf
from cni_client.cni.entry import plugin_main
from cni_client.cni.errors import CniError

# A main plugin may hand over a config in an old version; the answer to VERSION is the newest.
LATEST = "1.1.0"


def version_info() -> dict[str, object]:
    return {"cniVersion": LATEST, "supportedVersions": list(ipam_netconf.SUPPORTED)}


def run(environ: dict[str, str], stdin: bytes) -> tuple[int, str]:
    """One invocation: (exit status, stdout text). Separate from main() for tests."""
    version = LATEST
    try:
        command = env.read_command(environ)
        if command == "VERSION":
            return 0, jsonio.dumps(version_info())
        raw = netconf.decode_object(stdin)
        conf = ipam_netconf.parse(raw, command, environ)
        version = conf.cni_version
        container_id = ipam_netconf.container_id(environ, command)
        args = env.parse_cni_args(environ.get("CNI_ARGS", ""))
        return 0, _dispatch(command, conf, container_id, args, environ)
    except CniError as exc:
        return 1, jsonio.dumps(exc.to_dict(version))
    except Exception as exc:  # a bug: still answer in the spec's format
        err = CniError(errors.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        return 1, jsonio.dumps(err.to_dict(version))


def _dispatch(
    command: str,
    conf: ipam_netconf.IpamConf,
    container_id: str,
    args: dict[str, str],
    environ: dict[str, str],
) -> str:
    # Imported here so VERSION and input errors never load the gRPC side.
    from cni_client.cni import ipam_commands
    from cni_client.cni.trace import new_traceparent

    traceparent = new_traceparent(environ)
    if command == "ADD":
        return jsonio.dumps(ipam_commands.cmd_add(conf, container_id, args, traceparent))
    if command == "DEL":
        ipam_commands.cmd_del(conf, container_id, traceparent)
    elif command == "CHECK":
        ipam_commands.cmd_check(conf, container_id, traceparent)
    elif command == "STATUS":
        ipam_commands.cmd_status(conf)
    elif command == "GC":
        ipam_commands.cmd_gc(conf, traceparent)
    return ""


def main() -> int:
    return plugin_main(run, LATEST)


if __name__ == "__main__":
    sys.exit(main())
