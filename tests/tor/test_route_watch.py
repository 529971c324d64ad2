"""benchmarks/route_watch.py: the netlink route watcher the BGP benchmark times with, against
routes `ip` adds and deletes in a namespace of the test's own."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from benchmarks.route_watch import RouteWatcher, RouteWatchError
from lab import netns
from tests.tor.bgpkit import random_suffix

pytestmark = pytest.mark.netns


@pytest.fixture
def namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        print("SKIP: network namespaces need root")
        pytest.skip("network namespaces need root")
    name = f"h3rw-{random_suffix()}"
    netns.create(name)
    try:
        netns.run_ip(["link", "add", "br0", "type", "bridge"], name)
        netns.run_ip(["addr", "add", "10.81.0.1/24", "dev", "br0"], name)
        netns.run_ip(["link", "set", "br0", "up"], name)
        yield name
    finally:
        netns.delete(name)


def test_sees_routes_come_and_go(namespace: str) -> None:
    prefixes = [f"10.90.{i}.0/24" for i in range(200)]
    with RouteWatcher(namespace) as watcher:
        start = time.perf_counter()
        batch = "".join(f"route add {p} via 10.81.0.2\n" for p in prefixes)
        batch += "route add blackhole 10.91.0.0/26 table 100\n"  # not the main table: ignored
        _ip_batch(namespace, batch)
        arrived = watcher.wait(prefixes, present=True, timeout=10)
        assert start < arrived <= time.perf_counter()
        assert not watcher.present("10.91.0.0/26")

        # The same prefix with two metrics: present until both are gone.
        _ip_batch(namespace, "route add 10.90.0.0/24 via 10.81.0.3 metric 5\n")
        _ip_batch(namespace, "route del 10.90.0.0/24 via 10.81.0.2\n")
        time.sleep(0.2)
        assert watcher.present("10.90.0.0/24")

        _ip_batch(namespace, "".join(f"route del {p}\n" for p in prefixes))
        watcher.wait(prefixes, present=False, timeout=10)
        with pytest.raises(RouteWatchError, match="1 of 1 prefixes not present"):
            watcher.wait(["10.92.0.0/24"], present=True, timeout=0.3)


def _ip_batch(namespace: str, commands: str) -> None:
    proc = subprocess.run(
        ["ip", "-n", namespace, "-batch", "-"], input=commands, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
