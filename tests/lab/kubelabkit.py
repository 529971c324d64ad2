"""Shared by the lab tests on the Kubernetes API: the two modes, kubectl through the lab, and
probes that time a change (they run in subprocesses: the lab's prober enters pod namespaces,
which the pytest process never does).

    watch = FlipWatch(state_dir, "x/a", "y/b", want=True)  # started, old state confirmed
    _, changed = kubectl_at(state_dir, "label", ...)        # the change, through the API
    took = watch.flipped_at() - changed                      # until the probe flipped
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lab.apiserver import missing_binaries
from tests.lab.labkit import REPO

# The two ways the lab runs with an API server: (test id, `up` options).
MODES = {
    "kubernetes": ("--datastore", "kubernetes"),
    "etcd-kube-apiserver": ("--datastore", "etcdv3", "--kube-apiserver"),
}
FLIP_TIMEOUT = 0.1  # per attempt: a denied TCP connect is given up after this
FLIP_DEADLINE = 15.0
PROBE_LOOP_MAX = 300.0


def require_kube(mode: str = "kubernetes") -> None:
    """Skip, saying why, when the API server or (etcd mode) calico-kube-controllers is absent."""
    missing = missing_binaries()
    if missing:
        print(f"SKIP: {missing}")
        pytest.skip(missing)
    if mode == "etcd-kube-apiserver":
        from lab.daemons import DaemonError, find_program

        try:
            find_program("calico-kube-controllers")
        except DaemonError as exc:
            reason = f"etcd with --kube-apiserver needs calico-kube-controllers: {exc}"
            print(f"SKIP: {reason}")
            pytest.skip(reason)


def _lab_argv(state_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "lab.main", "--state-dir", str(state_dir), *args]


def kubectl(state_dir: Path, *args: str, stdin: str | None = None) -> str:
    """`calico-lab kubectl ARGS` (admin); its stdout; fails the test on a non-zero exit."""
    proc = subprocess.run(
        _lab_argv(state_dir, "kubectl", *args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def kubectl_at(state_dir: Path, *args: str) -> tuple[float, float]:
    """`calico-lab kubectl ARGS`; (when it started, when it returned), as time.time()."""
    started = time.time()
    kubectl(state_dir, *args)
    return started, time.time()


# ---- timing a flip: runs in a subprocess ----


def flip_loop(state_dir: str, source: str, target: str, port: int, want: bool) -> None:
    """Probe source -> target over TCP back to back until the answer is `want`.

    Prints {"ready": ...} once an attempt shows the other answer (the old state holds), then
    {"flipped": t} with the start time (time.time()) of the first attempt answering `want`,
    or {"flipped": null} after FLIP_DEADLINE.
    """
    from lab.lab import Lab
    from lab.matrix import endpoint_of
    from lab.prober import probe_pairs

    lab = Lab.load(Path(state_dir))
    pair = (endpoint_of(lab.pod(source)), endpoint_of(lab.pod(target)))

    async def attempt() -> tuple[float, bool]:
        started = time.time()
        result = await probe_pairs([pair], port, "tcp", FLIP_TIMEOUT)
        return started, result[(source, target)]

    async def run() -> None:
        deadline = time.monotonic() + FLIP_DEADLINE
        while True:
            _, ok = await attempt()
            if ok != want:
                break
            if time.monotonic() > deadline:
                print(json.dumps({"ready": False, "error": f"never saw {not want}"}), flush=True)
                return
            await asyncio.sleep(0.05)
        print(json.dumps({"ready": True}), flush=True)
        deadline = time.monotonic() + FLIP_DEADLINE
        while time.monotonic() < deadline:
            started, ok = await attempt()
            if ok == want:
                print(json.dumps({"flipped": started}), flush=True)
                return
        print(json.dumps({"flipped": None}), flush=True)

    asyncio.run(run())


class FlipWatch:
    """`flip_loop` in a subprocess, started and past its first probe (the old state seen)."""

    def __init__(self, state_dir: Path, source: str, target: str, want: bool, port: int = 80):
        code = (
            "import sys; from tests.lab.kubelabkit import flip_loop; "
            "flip_loop(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), "
            "sys.argv[5] == 'True')"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(state_dir), source, target, str(port), str(want)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, (
            f"the flip watch printed nothing: {self.proc.stderr and self.proc.stderr.read()}"
        )
        ready = json.loads(line)
        assert ready["ready"], f"{source} -> {target}: {ready}"

    def flipped_at(self) -> float:
        """When the probe first gave the wanted answer (fails the test if it never did)."""
        out, err = self.proc.communicate(timeout=FLIP_DEADLINE + 30)
        assert self.proc.returncode == 0, err
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        assert result["flipped"] is not None, f"never flipped within {FLIP_DEADLINE}s"
        return float(result["flipped"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---- continuous probing under a fault: runs in a subprocess ----


def probe_loop(state_dir: str, stop_file: str, interval: float, pairs: Sequence[str]) -> None:
    """Probe every "FROM>TO" pair over TCP/80 each `interval` until `stop_file` exists (at most
    PROBE_LOOP_MAX seconds); one JSON line per round: {"t": time.time(), "connected": [...]}."""
    from lab.lab import Lab
    from lab.matrix import endpoint_of
    from lab.prober import probe_pairs

    lab = Lab.load(Path(state_dir))
    wanted = [tuple(p.split(">")) for p in pairs]
    endpoints = [(endpoint_of(lab.pod(a)), endpoint_of(lab.pod(b))) for a, b in wanted]

    def told_to_stop() -> bool:
        return Path(stop_file).exists()

    async def rounds() -> None:
        end = time.monotonic() + PROBE_LOOP_MAX
        while time.monotonic() < end and not told_to_stop():
            started = time.monotonic()
            result = await probe_pairs(endpoints, 80, "tcp", 0.5)
            connected = [f"{s}>{d}" for (s, d), ok in result.items() if ok]
            print(json.dumps({"t": time.time(), "connected": connected}), flush=True)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    asyncio.run(rounds())


class Prober:
    """`probe_loop` in a subprocess, started (its first round done); `finish()` stops it and
    returns every round."""

    def __init__(self, state_dir: Path, pairs: Sequence[str], interval: float = 0.1):
        code = (
            "import sys; from tests.lab.kubelabkit import probe_loop; "
            "probe_loop(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:])"
        )
        self.stop_file = state_dir / f"prober-{os.getpid()}.stop"
        self.stop_file.unlink(missing_ok=True)
        argv = [sys.executable, "-c", code, str(state_dir), str(self.stop_file), str(interval)]
        self.proc = subprocess.Popen(
            [*argv, *pairs], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        assert first, f"the prober printed nothing: {self.proc.stderr and self.proc.stderr.read()}"
        self.first = json.loads(first)

    def finish(self) -> list[dict[str, Any]]:
        self.stop_file.touch()
        try:
            out, err = self.proc.communicate(timeout=60)
        finally:
            self.stop_file.unlink(missing_ok=True)
        assert self.proc.returncode == 0, err
        return [self.first, *(json.loads(line) for line in out.splitlines())]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop_file.unlink(missing_ok=True)
