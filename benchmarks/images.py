"""Size and start-to-healthy time of each service image, beside the bare base image starting
`python3 -c pass` in the same run (what any Python container pays before the service's own work).

    sudo .venv/bin/python -m benchmarks.images [--repeats 5] [--build]

Start-to-healthy is wall time from invoking `podman run --detach` (runc, no network, only the
service's capabilities; tests/images/imagekit.py) until the service answers grpc.health.v1
SERVING on its Unix socket, polled from the host every 20 ms through a mounted directory. The
reference is `podman run --rm` of the python base running `python3 -c pass`, start to exit.
"Own layers" is the image's size minus the shared python base's. Medians of --repeats runs;
runs alternate between images so machine noise hits all alike. calico-kube-controllers gets a
throw-away etcd on loopback (host network) and a kubeconfig naming no API server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.fixtures.etcd import running_etcd
from tests.images import imagekit
from tests.images.imagekit import PodmanSession

UNREACHABLE_KUBECONFIG = (
    "apiVersion: v1\nkind: Config\n"
    'clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]\n'
    "users: [{name: u, user: {token: t}}]\n"
    "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
)


def image_size(podman: PodmanSession, image: str) -> int:
    out = podman.run("image", "inspect", "--format", "{{.Size}}", image)
    if out.returncode != 0:
        raise SystemExit(f"{image} missing: run scripts/build-images.sh (or pass --build)")
    return int(out.stdout.strip())


def reference_start(podman: PodmanSession) -> float:
    name = podman.new_name("reference")
    start = time.monotonic()
    out = podman.run(
        "run", "--rm", "--name", name, "--network=none", "--cap-drop=all",
        imagekit.PYBASE, "python3", "-c", "pass",
    )  # fmt: skip
    seconds = time.monotonic() - start
    podman.started.remove(name)
    if out.returncode != 0:
        raise SystemExit(f"reference run failed: {out.stderr}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--build", action="store_true", help="run scripts/build-images.sh first")
    args = parser.parse_args()
    if problem := imagekit.missing_podman():
        print(f"benchmarks/images.py: {problem}", file=sys.stderr)
        return 1
    if args.repeats < 1:
        parser.error("--repeats: at least 1")

    with tempfile.TemporaryDirectory(prefix="calico-images-bench-") as tmp:
        work = Path(tmp)
        if args.build:
            print(f"scripts/build-images.sh: {imagekit.build_images():.1f} s")
        with running_etcd() as etcd, PodmanSession(work) as podman:
            base_size = image_size(podman, imagekit.PYBASE)
            sizes = {s: image_size(podman, imagekit.SERVICES[s].image) for s in imagekit.SERVICES}
            reference_start(podman)  # warm-up: page cache, runc
            starts: dict[str, list[float]] = {s: [] for s in ["reference", *imagekit.SERVICES]}
            for _ in range(args.repeats):
                starts["reference"].append(reference_start(podman))
                for service in imagekit.SERVICES:
                    env: dict[str, str] = {}
                    files: dict[str, str] = {}
                    network = "none"
                    if service == "calico-kube-controllers":
                        env = {
                            "DATASTORE_TYPE": "etcdv3",
                            "ETCD_ENDPOINTS": etcd.endpoint,
                            "KUBECONFIG": "/var/run/calico-host/kubeconfig",
                        }
                        files = {"kubeconfig": UNREACHABLE_KUBECONFIG}
                        network = "host"
                    with podman.service(service, env, network, files) as ctr:
                        starts[service].append(ctr.wait_healthy())

    ref = statistics.median(starts["reference"])
    print(f"\nrepeats: {args.repeats}; python base image {base_size / 1e6:.0f} MB\n")
    print("| image | size MB | own layers MB | start-to-healthy s (median) | max s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| reference: python base, `python3 -c pass` | {base_size / 1e6:.0f} | 0 | {ref:.2f} "
        f"| {max(starts['reference']):.2f} | 1.00 |"
    )
    for service in imagekit.SERVICES:
        med = statistics.median(starts[service])
        print(
            f"| {service} | {sizes[service] / 1e6:.0f} | {(sizes[service] - base_size) / 1e6:.1f} "
            f"| {med:.2f} | {max(starts[service]):.2f} | {med / ref:.2f} |"
        )
    print("\n" + json.dumps({k: [round(v, 3) for v in vs] for k, vs in starts.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
