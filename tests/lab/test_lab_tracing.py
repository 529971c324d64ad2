"""Issue 4: with an OTLP receiver running, one `calico-lab pod run` exports one trace holding
the plugin's CNI ADD, calico-ipamd's AutoAssign and calico-felix's SetupEndpoint.

The receiver (opentelemetry-proto's TraceService on grpcio, tests/cni/otlp_receiver.py) runs
as a subprocess inside the lab network's namespace on the bridge address, which the node
namespace (daemons and plugin) reaches over its uplink; the host namespace is not touched.
The lab CLI hands its environment, OTEL_* included, to the daemons and the plugin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.lab.labkit import CALICO_LAB, REPO, host_snapshot, lab_namespaces

LISTEN = "10.66.0.1:4317"  # the lab bridge, in the lab's own network namespace
SPAN_WAIT = 30.0


def _cli(state_dir: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [*CALICO_LAB, "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, f"calico-lab {args}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _start_receiver(netns: str, out: Path, ready: Path) -> subprocess.Popen[bytes]:
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.cni.otlp_receiver"]
    argv += ["--listen", LISTEN, "--out", str(out), "--ready", str(ready)]
    # `ip netns exec` execs the command: the PID we get is the receiver's own.
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert proc.poll() is None, (
            f"receiver exited: {proc.stderr.read() if proc.stderr else ''!r}"
        )
        assert time.monotonic() < deadline, "receiver not ready"
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _spans(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def _the_add_trace(out: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The plugin's `cni ADD` span and, by service, the daemons' spans of its trace, waiting
    until both daemons' batch processors have exported theirs."""
    deadline = time.monotonic() + SPAN_WAIT
    while True:
        spans = _spans(out)
        adds = [
            s
            for s in spans
            if s["service"] == "calico-cni-plugin"
            and s["name"] == "cni ADD"
            and s["status"] != "STATUS_CODE_ERROR"  # not a try-again-later the lab retried
        ]
        if adds:
            (add,) = adds
            same_trace = [s for s in spans if s["trace_id"] == add["trace_id"]]
            wanted = {
                "calico-ipamd": "calico.ipam.v1.Ipam/AutoAssign",
                "calico-felix": "calico.felix.v1.Endpoints/SetupEndpoint",
            }
            found = {
                svc: s
                for s in same_trace
                for svc, name in wanted.items()
                if s["service"] == svc and s["name"] == name
            }
            if len(found) == len(wanted):
                return add, found
        assert time.monotonic() < deadline, f"trace incomplete after {SPAN_WAIT}s: {spans}"
        time.sleep(0.2)


def test_pod_run_exports_one_trace_with_plugin_ipam_and_felix_spans(
    needs_services: None, lab_dir: Path, tmp_path: Path
) -> None:
    before = host_snapshot()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LISTEN}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the daemons' batches leave within 0.1 s
    }
    out, ready = tmp_path / "spans.jsonl", tmp_path / "receiver.ready"
    receiver: subprocess.Popen[bytes] | None = None
    try:
        _cli(lab_dir, env, "up")
        state = json.loads((lab_dir / "state.json").read_text())
        receiver = _start_receiver(state["network_netns"], out, ready)
        _cli(lab_dir, env, "pod", "run", "x/a")

        add, daemon_spans = _the_add_trace(out)
        assert add["kind"] == "SPAN_KIND_CLIENT"
        assert add["attributes"]["cni.command"] == "ADD"
        assert add["attributes"]["k8s.pod.namespace"] == "x"
        assert add["attributes"]["k8s.pod.name"] == "a"
        assert add["attributes"]["cni.container_id"]
        for service, span in daemon_spans.items():
            assert span["kind"] == "SPAN_KIND_SERVER", service
            # A direct child of the plugin's span: the traceparent carried its id.
            assert span["parent_span_id"] == add["span_id"], service
            assert span["status"] != "STATUS_CODE_ERROR", service
        # The pod's successful ADD is one trace of its own.
        assert {s["trace_id"] for s in _spans(out) if s["span_id"] == add["span_id"]} == {
            add["trace_id"]
        }

        _cli(lab_dir, env, "down")
    finally:
        if receiver is not None:
            _stop(receiver)
    assert not lab_namespaces(lab_dir)
    assert host_snapshot() == before
