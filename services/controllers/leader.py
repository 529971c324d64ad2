"""Leader election through a coordination.k8s.io/v1 Lease, with client-go's rules and timings.

One replica holds the Lease `calico-kube-controllers` (holderIdentity, renewTime,
leaseDurationSeconds) and renews it every retry period; the others poll it as often and take
it over, with a compare-and-swap on its resourceVersion, once it has not changed for a lease
duration *as they observed it* (their own monotonic clock, never the renewTime written by
another machine's clock).

Why two replicas never act at once: the leader's right to act (`Leadership`) lasts until
renew deadline after it *sent* its last successful renewal. The write happened after that,
so another replica sees the renewed record no earlier, and can only take over a lease duration
later. With renew deadline < lease duration the leader's right has lapsed by then, whatever
happened to it in between (a pause, SIGSTOP, a slow network): every datastore write checks the
right immediately before it is sent (`GuardedDatastore`), so a replica resumed after losing
the lease refuses its first write, and the election loop stops its controllers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from libcalico.datastore import DatastoreError
from libcalico.datastore.kube_client import KubeClient

log = logging.getLogger(__name__)

LEASE_NAME = "calico-kube-controllers"
DEFAULT_NAMESPACE = "kube-system"
Clock = Callable[[], float]


class NotLeaderError(Exception):
    """A write was attempted after this replica's right to act lapsed (or before it had one).

    Deliberately not a DatastoreError: loops that retry datastore errors must not retry this;
    it ends the controller that hit it.
    """


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    """client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def check(self) -> None:
        if not self.lease_duration >= 1:
            raise ValueError(f"lease duration: {self.lease_duration} s is under 1 s")
        if not 0 < self.renew_deadline < self.lease_duration:
            raise ValueError(
                f"renew deadline: {self.renew_deadline} s must be above 0 and below the lease "
                f"duration ({self.lease_duration} s), or two replicas could act at once"
            )
        if not 0 < self.retry_period < self.renew_deadline:
            raise ValueError(
                f"retry period: {self.retry_period} s must be above 0 and below the renew "
                f"deadline ({self.renew_deadline} s)"
            )

    @property
    def lease_seconds(self) -> int:
        """leaseDurationSeconds as written: whole seconds, rounded up (never shorter)."""
        return math.ceil(self.lease_duration)


class Leadership:
    """This replica's right to act: held until `valid_until` on the monotonic clock."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.valid_until = 0.0
        self.since = 0.0

    @property
    def leading(self) -> bool:
        return self._clock() < self.valid_until

    def check(self, what: str = "write") -> float:
        """Raise NotLeaderError unless this replica may act right now; else the seconds left."""
        left = self.valid_until - self._clock()
        if left <= 0:
            raise NotLeaderError(f"{what} refused: this replica does not hold the lease")
        return left

    def extend(self, until: float) -> None:
        if not self.leading:
            self.since = self._clock()
        self.valid_until = max(self.valid_until, until)

    def revoke(self) -> None:
        self.valid_until = 0.0


def _micro_time(moment: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        identity: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        timings: LeaseTimings | None = None,
        leadership: Leadership | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.client = client
        self.identity = identity
        self.namespace = namespace
        self.timings = timings or LeaseTimings()
        self.timings.check()
        self._clock = clock
        self.leadership = leadership or Leadership(clock)
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{LEASE_NAME}"
        # The record as last seen and when (our clock) it last changed: expiry is judged on
        # that, never on the renewTime another machine wrote.
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        self.holder = ""
        self.acquisitions = 0
        self.losses = 0

    # -- one attempt ------------------------------------------------------------------------

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed = spec
            self._observed_at = self._clock()
        self.holder = str(spec.get("holderIdentity") or "")

    def _expired(self, spec: dict[str, Any]) -> bool:
        seconds = spec.get("leaseDurationSeconds")
        duration = (
            float(seconds) if isinstance(seconds, int | float) else self.timings.lease_duration
        )
        return self._observed_at + duration < self._clock()

    async def try_acquire_or_renew(self) -> bool:
        """One compare-and-swap on the Lease; True when this replica holds it afterwards (its
        right to act then extended)."""
        lease = await self.client.get(self.path)
        now = datetime.now(UTC)
        mine = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.timings.lease_seconds,
            "acquireTime": _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": 0,
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": self.namespace},
                "spec": mine,
            }
            sent = self._clock()
            collection = self.path.rsplit("/", 1)[0]
            response = await self.client.request("POST", collection, body)
            if response.status == 409:
                return False
            if response.status != 201:
                raise response.error(f"create lease {self.namespace}/{LEASE_NAME}")
            return self._won(response.body, sent)
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = self.holder
        if holder and holder != self.identity and not self._expired(spec):
            return False
        if holder == self.identity:
            mine["acquireTime"] = spec.get("acquireTime") or mine["acquireTime"]
            mine["leaseTransitions"] = int(spec.get("leaseTransitions") or 0)
        else:
            mine["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = mine
        sent = self._clock()
        response = await self.client.request("PUT", self.path, lease)
        if response.status in (409, 404):
            return False
        if response.status != 200:
            raise response.error(f"update lease {self.namespace}/{LEASE_NAME}")
        return self._won(response.body, sent)

    def _won(self, lease: dict[str, Any], sent: float) -> bool:
        self._observe(dict(lease.get("spec") or {}))
        self.leadership.extend(sent + self.timings.renew_deadline)
        return True

    # -- the loop ---------------------------------------------------------------------------

    async def _attempt(self, limit: float | None) -> bool:
        """One try; False (logged) on an error or when it takes over `limit` seconds."""
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), limit)
        except (DatastoreError, TimeoutError) as exc:
            log.warning("lease %s/%s: %s", self.namespace, LEASE_NAME, exc)
            return False

    async def acquire(self) -> None:
        """Until this replica holds the lease."""
        while True:
            if await self._attempt(None):
                break
            await asyncio.sleep(self.timings.retry_period)
        self.acquisitions += 1
        log.info(
            "acquired lease %s/%s",
            self.namespace,
            LEASE_NAME,
            extra={"identity": self.identity, "monotonic": self.leadership.since},
        )

    async def keep(self) -> None:
        """Renew every retry period; return once the right to act has lapsed (renewals kept
        failing until the renew deadline, or another replica holds the lease)."""
        while True:
            remaining = self.leadership.valid_until - self._clock()
            if remaining <= 0:
                break
            await asyncio.sleep(min(self.timings.retry_period, remaining))
            remaining = self.leadership.valid_until - self._clock()
            if remaining <= 0:
                break
            if not await self._attempt(remaining) and self.holder not in ("", self.identity):
                break  # someone else holds it: stop now, do not wait for the deadline
        lapsed_at = self.leadership.valid_until
        self.leadership.revoke()
        self.losses += 1
        log.warning(
            "lost lease %s/%s",
            self.namespace,
            LEASE_NAME,
            extra={"identity": self.identity, "holder": self.holder, "monotonic": lapsed_at},
        )

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Forever: acquire, run `lead()` while holding the lease, cancel it on loss."""
        while True:
            await self.acquire()
            acting = asyncio.create_task(self._lead_until_cancelled(lead), name="leading")
            try:
                await self.keep()
            finally:
                self.leadership.revoke()
                acting.cancel()
                await asyncio.gather(acting, return_exceptions=True)

    async def _lead_until_cancelled(self, lead: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await lead()
            except NotLeaderError:
                return  # the lease lapsed under it: keep() notices and stops us
            except Exception:
                log.exception("controllers failed; restarting them")
            await asyncio.sleep(self.timings.retry_period)

    async def release(self) -> None:
        """Give the lease up at a graceful stop, after the controllers stopped: stop acting,
        then clear the holder (compare-and-swap, only if it still names this replica) so
        another replica takes over at once instead of after a lease duration."""
        self.leadership.revoke()
        with contextlib.suppress(DatastoreError, TimeoutError):
            lease = await asyncio.wait_for(self.client.get(self.path), 2.0)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = dict(lease.get("spec") or {})
            spec.update(holderIdentity=None, leaseDurationSeconds=1)
            lease["spec"] = spec
            response = await asyncio.wait_for(self.client.request("PUT", self.path, lease), 2.0)
            if response.status == 200:
                log.info("released lease %s/%s", self.namespace, LEASE_NAME)
