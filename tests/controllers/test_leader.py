"""Leader election with two real replicas against the real API server: one acts at a time.

Lease timings are shortened (3 s lease, 2 s renew deadline, 0.5 s retry) so failover takes
seconds. Each test uses its own Lease namespace. Both replicas copy Pods into etcd, so who
acts shows in their status (`writes`, `refused_writes`) and in etcd.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from libcalico.config import DatastoreConfig
from libcalico.datastore import Datastore, connect
from libcalico.datastore.keys import GROUP_CORE, resource_key
from services.controllers.leader import LeaseTimings
from tests.controllers.conftest import Replicas
from tests.controllers.kit import FAST_LEASE, PROGRAM, ControllersProcess, KubeApi
from tests.controllers.kit import wait_stored as wait_stored_async

pytestmark = pytest.mark.etcd

LEASE = 3.0
RENEW_DEADLINE = 2.0


@pytest_asyncio.fixture
async def etcd(etcd_config: DatastoreConfig) -> AsyncIterator[Datastore]:
    store = await connect(etcd_config)
    try:
        yield store
    finally:
        await store.close()


def two_replicas(kube: KubeApi, replicas: Replicas, namespace: str) -> list[ControllersProcess]:
    kube.namespace(namespace)
    args = [
        *FAST_LEASE,
        "--lease-namespace",
        namespace,
        "--enabled-controllers",
        "workloadendpoint",
    ]
    first = replicas("kc-a", args)
    first.wait_leading()
    second = replicas("kc-b", args)
    return [first, second]


def leaders(processes: list[ControllersProcess]) -> list[str]:
    return [p.name for p in processes if p.status().leading]


def label_key(namespace: str, pod: str) -> str:
    return resource_key(GROUP_CORE, "pods", pod, namespace)


async def labelled(etcd: Datastore, namespace: str, pod: str, value: str) -> None:
    await wait_stored_async(
        etcd,
        label_key(namespace, pod),
        lambda o: o is not None and o["metadata"]["labels"].get("v") == value,
    )


async def test_one_leader_and_failover_after_kill_9(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    a, b = two_replicas(kube, replicas, "lease-kill")
    kube.pod("lease-kill", "p", labels={"v": "1"})
    await labelled(etcd, "lease-kill", "p", "1")
    for _ in range(20):
        assert leaders([a, b]) == ["kc-a"]
        await asyncio.sleep(0.05)
    assert b.status().lease_holder == "kc-a"
    assert b.status().writes == 0

    a.kill()
    killed = time.monotonic()
    b.wait_leading(timeout=15)
    took = time.monotonic() - killed
    print(f"kill -9 of the leader -> the other leads after {took:.2f} s (lease {LEASE} s)")
    # It waited for the lease to expire (after at least the renew deadline of the last
    # renewal, which came before the kill), and not much longer.
    assert RENEW_DEADLINE < took < LEASE + 2.0
    kube.patch("pods", "p", {"metadata": {"labels": {"v": "2"}}}, "lease-kill")
    await labelled(etcd, "lease-kill", "p", "2")
    assert b.status().writes >= 1


async def test_stopped_leader_does_not_act_after_it_resumes(
    kube: KubeApi, replicas: Replicas, etcd: Datastore
) -> None:
    a, b = two_replicas(kube, replicas, "lease-stop")
    kube.pod("lease-stop", "p", labels={"v": "1"})
    await labelled(etcd, "lease-stop", "p", "1")
    writes_before = a.status().writes

    a.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        b.wait_leading(timeout=15)
        took = time.monotonic() - stopped
        # a's right to act ended at most the renew deadline after the stop: b began later.
        assert took > RENEW_DEADLINE, took
        kube.patch("pods", "p", {"metadata": {"labels": {"v": "2"}}}, "lease-stop")
        await labelled(etcd, "lease-stop", "p", "2")
        # Changes a's watches will deliver the moment it runs again: it will want to write.
        kube.patch("pods", "p", {"metadata": {"labels": {"v": "3"}}}, "lease-stop")
        kube.pod("lease-stop", "q", labels={"v": "1"})
    finally:
        a.signal(signal.SIGCONT)
    resumed = time.monotonic()
    await labelled(etcd, "lease-stop", "p", "3")
    await labelled(etcd, "lease-stop", "q", "1")
    await asyncio.sleep(1.0)
    status = a.status()
    print(
        f"stopped {resumed - stopped:.1f} s; b led after {took:.2f} s; after resuming a "
        f"refused {status.refused_writes} write(s), made {status.writes - writes_before}"
    )
    assert not status.leading
    assert status.writes == writes_before, "the resumed replica wrote without the lease"
    assert status.lease_holder == "kc-b"
    assert status.losses == 1
    assert leaders([a, b]) == ["kc-b"]
    lost = [e for e in a.log_entries() if e.get("message", "").startswith("lost lease")]
    assert len(lost) == 1


async def test_graceful_stop_hands_the_lease_over_at_once(
    kube: KubeApi, replicas: Replicas
) -> None:
    a, b = two_replicas(kube, replicas, "lease-term")
    assert a.stop() == 0
    stopped = time.monotonic()
    b.wait_leading(timeout=15)
    took = time.monotonic() - stopped
    print(f"SIGTERM of the leader -> the other leads after {took:.2f} s")
    assert took < 1.5, "the lease was released, no need to wait for it to expire"


def test_bad_configuration_is_refused_naming_it(tmp_path: object) -> None:
    for argv, expected in [
        (["--enabled-controllers", "node,pods"], "ENABLED_CONTROLLERS: unknown controller 'pods'"),
        (["--lease-duration", "5", "--renew-deadline", "5"], "renew deadline"),
        (["--datastore-type", "embedded"], "DATASTORE_TYPE"),
    ]:
        proc = subprocess.run(
            [PROGRAM, "--socket", "/nonexistent/kc.sock", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            env={"DATASTORE_TYPE": "etcdv3", "PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr, proc.stderr


def test_lease_timings_must_keep_replicas_apart() -> None:
    LeaseTimings().check()
    with pytest.raises(ValueError, match="renew deadline"):
        LeaseTimings(lease_duration=10, renew_deadline=10).check()
    with pytest.raises(ValueError, match="retry period"):
        LeaseTimings(lease_duration=10, renew_deadline=5, retry_period=5).check()
    assert LeaseTimings(lease_duration=2.5, renew_deadline=2).lease_seconds == 3
