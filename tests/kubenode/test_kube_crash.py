"""`down` after a crashed `up`: `calico-lab kube up` is killed (SIGKILL, no clean-up of its
own) once the API server runs and the kubelet is starting; `down` stops what the record names
and leaves the host as the snapshot taken before `up` recorded it. A second `down` finds
nothing to do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.kubenode import hostsnap, layout, lifecycle, tools
from tests.kubenode.kubenodekit import NO_BUILD_ENV, wait_for_other_node

pytestmark = pytest.mark.timeout(2400)  # a cold build of the tools: 8-18 min on 2 cores


def _recorded(state_dir: Path) -> set[str]:
    try:
        return set(json.loads((state_dir / "state.json").read_text())["processes"])
    except (OSError, ValueError, KeyError):
        return set()


def test_down_after_up_was_killed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        print("SKIP: the node needs root")
        pytest.skip("the node needs root")
    lacking = tools.missing()
    if lacking and os.environ.get(NO_BUILD_ENV):
        print(f"SKIP: {NO_BUILD_ENV} set and tools missing: {lacking}")
        pytest.skip(f"{NO_BUILD_ENV} set and tools missing")
    tools.build()
    wait_for_other_node()
    state_dir = tmp_path / "state"
    before = hostsnap.take(layout.UNREACHABLE_RANGES)
    up = subprocess.Popen(
        [sys.executable, "-m", "lab.main", "kube", "--kube-state-dir", str(state_dir), "up"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while "kubelet" not in _recorded(state_dir) and time.monotonic() < deadline:
            assert up.poll() is None, "up ended before the kubelet started"
            time.sleep(0.05)
        assert "kubelet" in _recorded(state_dir)
        # ... and until the kubelet has changed the host (its sysctls), so there is more to undo
        while hostsnap.take(())["sysctls"] == before["sysctls"] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait()
    print(f"up killed with {sorted(_recorded(state_dir))} running")
    changed = hostsnap.differences(before, hostsnap.take(layout.UNREACHABLE_RANGES))
    print("changed by then:", *(c[:160] for c in changed), sep="\n  ")
    assert changed
    report = lifecycle.down(state_dir, say=print)
    assert not report.problems, report.problems
    assert not report.differences, report.differences
    assert hostsnap.differences(before, hostsnap.take(layout.UNREACHABLE_RANGES)) == []
    assert len(report.stopped) >= 6, report.stopped  # containerd, etcd, apiserver, KCM, ...
    assert lifecycle.down(state_dir).stopped == []  # idempotent: nothing left to stop
    assert not (state_dir / "state.json").exists()
