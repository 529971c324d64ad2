"""Part (c) of the BGP benchmark: a BIRD configuration at scale (1,000 peers, 10,000 blocks).

Reference half (`bird_alone`): a generated BIRD 2 file with N eBGP peers and M static blackholes
(the shape of a node's config that owns M blocks and has N peers), run by a BIRD in a scratch
namespace with nothing but loopback, so no peer is reachable and the sessions stay quiet. Timed:
`bird -p` of the file, and `birdc configure` after a one-route change.

Project half (`calico_bgpd`): calico-bgpd (the CLI contract, no internal API) on an embedded
datastore seeded with N global BGPPeers and M blocks affine to its node, in a scratch
namespace; its own figure for render + check + reload (last_apply.duration_seconds) after one
datastore change, its RSS, and BIRD's `bird -p` + `birdc configure` of the very file it
rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import netns
from lab.processes import ProcessRecord, is_alive, log_tail, start_detached, stop
from tests.tor.bgpkit import BIRD, BIRDC, random_suffix

PEER_BASE = ipaddress.IPv4Address("10.100.0.1")
BLOCK_POOL = ipaddress.IPv4Network("10.64.0.0/10")
BLOCK_PREFIXLEN = 26
NODE_NAME = "bench-node"
NODE_ADDRESS = "10.80.0.2"
EXTRA_ROUTE = "10.255.255.0/24"


def peer_address(i: int) -> str:
    return str(PEER_BASE + i)


def block_cidrs(count: int) -> list[ipaddress.IPv4Network]:
    blocks = BLOCK_POOL.subnets(new_prefix=BLOCK_PREFIXLEN)
    return [next(blocks) for _ in range(count)]


def synthetic_config(peers: int, static_file: Path) -> str:
    lines = [
        f"router id {NODE_ADDRESS};",
        "log stderr { warning, error, fatal, bug };",
        "protocol device { scan time 10; }",
        "protocol kernel {",
        "  ipv4 { import none; export filter { if source = RTS_BGP then accept; reject; }; };",
        "  merge paths on;",
        "}",
        "protocol static blocks {",
        "  ipv4;",
        f'  include "{static_file}";',
        "}",
        "filter from_peer { accept; }",
        "filter to_peer { if source = RTS_STATIC then accept; reject; }",
        "template bgp peer_t {",
        "  local as 64512;",
        "  ipv4 { import filter from_peer; export filter to_peer; };",
        "  graceful restart on;",
        "}",
    ]
    lines += [
        f"protocol bgp peer_{i:05d} from peer_t {{ neighbor {peer_address(i)} as 65001; }}"
        for i in range(peers)
    ]
    return "\n".join(lines) + "\n"


def static_routes(blocks: list[ipaddress.IPv4Network], extra: bool) -> str:
    routes = [*blocks, *([ipaddress.IPv4Network(EXTRA_ROUTE)] if extra else [])]
    return "".join(f"route {b} blackhole;\n" for b in routes)


def _timed(argv: list[str], expect: str = "") -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or (expect and expect not in proc.stdout):
        raise RuntimeError(f"{' '.join(argv)}: {proc.stdout[-1000:]}{proc.stderr[-1000:]}")
    return elapsed


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class BirdFigures:
    check_s: list[float] = field(default_factory=list)
    configure_s: list[float] = field(default_factory=list)
    rss: int = 0
    config_bytes: int = 0

    @property
    def check_plus_configure(self) -> float:
        return statistics.median(self.check_s) + statistics.median(self.configure_s)


def time_bird_on(conf: Path, ctl: Path, runs: int, toggle: Path | None = None,
                 blocks: list[ipaddress.IPv4Network] | None = None,
                 variants: list[str] | None = None) -> BirdFigures:  # fmt: skip
    """`bird -p` of `conf` and `birdc configure` of the BIRD on `ctl`, `runs` times each; with
    `toggle`, that static include gains/loses one route before each configure; with
    `variants`, `conf` is rewritten with the next one before each run (the same change the
    project made, so both sides reconfigure the same difference)."""
    figures = BirdFigures(config_bytes=conf.stat().st_size)
    for run in range(runs):
        if variants:
            conf.write_text(variants[run % len(variants)])
        figures.check_s.append(_timed([BIRD, "-p", "-c", str(conf)]))
        if toggle is not None and blocks is not None:
            toggle.write_text(static_routes(blocks, extra=run % 2 == 0))
        figures.configure_s.append(_timed([BIRDC, "-s", str(ctl), "configure"], "Reconfigur"))
    return figures


def bird_alone(peers: int, blocks: int, runs: int, work: Path) -> BirdFigures:
    """The reference: BIRD's own check and configure of a generated file at this size."""
    ns = f"bgpc-{random_suffix()}"
    directory = work / "bird-alone"
    directory.mkdir(parents=True, exist_ok=True)
    cidrs = block_cidrs(blocks)
    static = directory / "blocks.conf"
    static.write_text(static_routes(cidrs, extra=False))
    conf = directory / "bird.conf"
    conf.write_text(synthetic_config(peers, static))
    ctl = directory / "bird.ctl"
    record: ProcessRecord | None = None
    netns.create(ns)
    try:
        argv = ["nsenter", f"--net={netns.netns_path(ns)}", BIRD, "-f", "-c", str(conf)]
        record = start_detached("bird-alone", [*argv, "-s", str(ctl)], directory / "bird.log")
        _wait_bird(ctl, record)
        figures = time_bird_on(conf, ctl, runs, toggle=static, blocks=cidrs)
        figures.config_bytes += static.stat().st_size
        figures.rss = rss_bytes(record.pid)
        return figures
    finally:
        if record is not None:
            stop(record)
        netns.delete(ns)


def _wait_bird(ctl: Path, record: ProcessRecord, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = subprocess.run([BIRDC, "-s", str(ctl), "show", "status"], capture_output=True)
        if b"Daemon is up" in proc.stdout:
            return
        if not is_alive(record):
            break
        time.sleep(0.1)
    raise RuntimeError(f"BIRD did not come up:\n{log_tail(record.log)}")


# --- the project half ---------------------------------------------------------------------------


@dataclass
class BgpdFigures:
    apply_s: list[float] = field(default_factory=list)  # calico-bgpd's own duration_seconds
    change_to_applied_s: list[float] = field(default_factory=list)  # datastore write → applied
    first_apply_s: float = 0.0
    rss: int = 0
    bird: BirdFigures | None = None


async def _seed(db: Path, peers: int, blocks: int) -> None:
    """The datastore calico-bgpd reads: its Node, N global peers, M blocks affine to it."""
    from lab import objects
    from libcalico.datastore import connect
    from libcalico.ipam import keys as ipam_keys
    from libcalico.ipam.model import Block, BlockAffinity

    store = {"type": "embedded", "path": str(db)}
    async with objects.resource_client(store) as client:
        resources = [
            objects.ippool("bench-pool", str(BLOCK_POOL), BLOCK_PREFIXLEN),
            objects.node(NODE_NAME, f"{NODE_ADDRESS}/24"),
            *[
                objects.bgp_peer(f"peer-{i:05d}", {"peerIP": peer_address(i), "asNumber": 65001})
                for i in range(peers)
            ],
        ]
        await client.apply_all(resources, "apply")
    async with await connect(objects.datastore_config(store)) as datastore:
        for cidr in block_cidrs(blocks):
            block = Block(cidr, affinity=f"host:{NODE_NAME}")
            await datastore.create(ipam_keys.block_key(cidr), block.to_bytes())
            affinity = BlockAffinity(NODE_NAME, cidr)
            await datastore.create(ipam_keys.affinity_key(NODE_NAME, cidr), affinity.to_bytes())


async def _touch_peer(db: Path, present: bool) -> None:
    """One datastore change calico-bgpd must act on: an extra peer comes or goes."""
    from lab import objects

    store = {"type": "embedded", "path": str(db)}
    extra = objects.bgp_peer("bench-extra", {"peerIP": "10.101.0.1", "asNumber": 65002})
    async with objects.resource_client(store) as client:
        if present:
            await client.apply_all([extra], "apply")
        else:
            await objects.delete_if_present(client, [objects.ref(extra)])


def _status(sock: Path) -> object:
    import grpc

    from calico.bgp.v1 import bgp_pb2, bgp_pb2_grpc  # type: ignore[import-not-found,unused-ignore]

    with grpc.insecure_channel(f"unix:{sock}") as channel:
        return bgp_pb2_grpc.BGPStatusStub(channel).GetStatus(bgp_pb2.GetStatusRequest(), timeout=10)


def _wait_apply(sock: Path, bird_dir: Path, after: float, timeout: float = 120.0) -> object:
    """The status once a config apply finished after `after` (unix time) succeeded.

    Waits on the file calico-bgpd rewrites after each successful reload (`bird.conf.loaded`)
    and asks for the status only then: polling GetStatus meanwhile would make calico-bgpd
    parse `show protocols all` for 1,000 peers while it applies, and time that too.
    """
    marker = bird_dir / "bird.conf.loaded"
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if marker.stat().st_mtime > after:
                with contextlib.suppress(Exception):
                    last = _status(sock)
                    apply = last.last_apply  # type: ignore[attr-defined]
                    if apply.finished_unix > after:
                        if not apply.ok:
                            raise RuntimeError(f"calico-bgpd apply failed: {apply.error}")
                        return last
        time.sleep(0.01)
    raise RuntimeError(f"no config apply after {timeout:.0f} s (last status: {last})")


def calico_bgpd(program: str, peers: int, blocks: int, runs: int, work: Path) -> BgpdFigures:
    """The project half (needs calico-bgpd and its calico.bgp.v1 protos)."""
    ns = f"bgpc-{random_suffix()}"
    directory = work / "bgpd"
    shutil.rmtree(directory, ignore_errors=True)
    bird_dir = directory / "bird"
    bird_dir.mkdir(parents=True)
    db = directory / "calico.db"
    sock = directory / "bgpd.sock"
    asyncio.run(_seed(db, peers, blocks))
    env = {
        **os.environ,
        "DATASTORE_TYPE": "embedded",
        "CALICO_DATASTORE_PATH": str(db),
        "NODENAME": NODE_NAME,
    }
    argv = [
        "nsenter",
        f"--net={netns.netns_path(ns)}",
        program,
        "--socket",
        str(sock),
        "--nodename",
        NODE_NAME,
        "--bird-dir",
        str(bird_dir),
    ]
    figures = BgpdFigures()
    record: ProcessRecord | None = None
    netns.create(ns)
    # The node's BGP address must exist for BIRD to use it as its source.
    netns.run_ip(["link", "add", "br0", "type", "bridge"], ns)
    netns.run_ip(["addr", "add", f"{NODE_ADDRESS}/24", "dev", "br0"], ns)
    netns.run_ip(["link", "set", "br0", "up"], ns)
    try:
        started = time.time()
        record = start_detached("calico-bgpd-bench", argv, directory / "bgpd.log", env=env)
        status = _wait_apply(sock, bird_dir, started)
        figures.first_apply_s = status.last_apply.duration_seconds  # type: ignore[attr-defined]
        # The two files calico-bgpd alternates between (extra peer present / absent).
        texts: dict[bool, str] = {}
        for run in range(runs):
            before = time.time()
            asyncio.run(_touch_peer(db, present=run % 2 == 0))
            status = _wait_apply(sock, bird_dir, before)
            figures.apply_s.append(status.last_apply.duration_seconds)  # type: ignore[attr-defined]
            applied = status.last_apply.finished_unix  # type: ignore[attr-defined]
            figures.change_to_applied_s.append(applied - before)
            texts[run % 2 == 0] = (bird_dir / "bird.conf").read_text()
        figures.rss = rss_bytes(record.pid)
        # BIRD now runs the last run's file: the reference starts with the other one.
        last = (runs - 1) % 2 == 0
        variants = [texts[not last], texts[last]] if len(texts) == 2 else None
        figures.bird = time_bird_on(
            bird_dir / "bird.conf", bird_dir / "bird.ctl", runs, variants=variants
        )
        return figures
    finally:
        if record is not None:
            stop(record)
        _stop_bird(bird_dir)
        netns.delete(ns)


def _stop_bird(bird_dir: Path) -> None:
    """calico-bgpd leaves its BIRD running by design: stop it by the PID in bird.pid, after
    checking that PID is that BIRD."""
    pid_file = bird_dir / "bird.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "bird" in cmdline and str(bird_dir) in cmdline:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
