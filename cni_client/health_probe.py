"""`calico-health-probe SOCKET`: exit 0 when the daemon on SOCKET answers grpc.health.v1 SERVING.

The images' HEALTHCHECK (images/README.md) and the compose test run it. It uses the CNI plugin's
light gRPC client (grpc_lite over `_socket`), so a probe costs a plain interpreter start rather
than importing grpc (~100 ms more per probe, every probe interval, in every container).

    calico-health-probe /var/run/calico/ipam.sock [--service NAME] [--timeout 3]

Exit status: 0 SERVING, 1 anything else (the reason goes to stderr), 2 bad arguments.
Unlike the CNI STATUS command, a server without the health service fails the probe: every
Calico daemon serves it, so its absence means the socket belongs to something else.
"""

from __future__ import annotations

import argparse
import sys

from cni_client import grpc_lite, wire


def probe(socket_path: str, service: str = "", timeout_s: float = 3.0) -> str:
    """Why the daemon is not healthy ("" when it answers SERVING)."""
    try:
        reply = grpc_lite.unary_call(
            socket_path, wire.HEALTH_CHECK, wire.health_check_request(service), (), timeout_s
        )
        status = wire.health_check_response(reply)
    except grpc_lite.GrpcError as exc:
        return f"{socket_path}: {exc.message}"
    except wire.WireError as exc:
        return f"{socket_path}: bad health answer: {exc}"
    except OSError as exc:
        return f"{socket_path}: {exc}"
    if status != wire.HEALTH_SERVING:
        return f"{socket_path}: health status {status} (not SERVING)"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-health-probe", description=__doc__.split("\n")[0])
    parser.add_argument("socket", help="the daemon's Unix socket (or host:port)")
    parser.add_argument("--service", default="", help="health service name (default: overall)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout: must be positive")
    problem = probe(args.socket, args.service, args.timeout)
    if problem:
        print(f"calico-health-probe: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
