"""Every CNI error path the plugin reports on its own input: malformed or missing stdin and
environment give the spec's code and a message naming the problem, and leave no state (the
daemons are up, yet receive no call and hold nothing)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cni.fake_daemons import FAKE_FELIX_MTU, FakeDaemons
from tests.cni.plugin import base_env, run_plugin

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7


def assert_error(
    run: Any, code: int, *words: str, daemons: FakeDaemons | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = run.error
    assert err["code"] == code, err
    assert run.rc == 1
    assert err["cniVersion"]
    for word in words:
        assert word in err["msg"], (word, err)
    if daemons is not None:
        assert daemons.state.calls == [], "an input error must not reach a daemon"
        assert daemons.state.allocations == {} and daemons.state.endpoints == {}
    return err


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize("var", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"])
def test_missing_variable(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], command: str, var: str
) -> None:
    for value in (None, ""):  # unset and empty are both missing
        run = run_plugin(cni_bin, base_env(command, cni_bin, **{var: value}), conf)
        assert_error(run, INVALID_ENVIRONMENT, var, command, daemons=daemons)


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_missing_netns(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], command: str
) -> None:
    run = run_plugin(cni_bin, base_env(command, cni_bin, CNI_NETNS=None), conf)
    assert_error(run, INVALID_ENVIRONMENT, "CNI_NETNS", daemons=daemons)


def test_missing_variables_all_named(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]
) -> None:
    env = base_env("ADD", cni_bin, CNI_CONTAINERID=None, CNI_NETNS=None, CNI_IFNAME=None)
    err = assert_error(run_plugin(cni_bin, env, conf), INVALID_ENVIRONMENT, daemons=daemons)
    for var in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"):
        assert var in err["msg"]


@pytest.mark.parametrize("value", [None, "", "add", "REMOVE"])
def test_bad_command(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], value: str | None
) -> None:
    run = run_plugin(cni_bin, base_env("ADD", cni_bin, CNI_COMMAND=value), conf)
    assert_error(run, INVALID_ENVIRONMENT, "CNI_COMMAND", daemons=daemons)


@pytest.mark.parametrize("cid", ["-leading-dash", "has/slash", "sp ace", "_x", "é"])
def test_invalid_container_id(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], cid: str
) -> None:
    run = run_plugin(cni_bin, base_env("ADD", cni_bin, CNI_CONTAINERID=cid), conf)
    assert_error(run, INVALID_ENVIRONMENT, "CNI_CONTAINERID", daemons=daemons)


@pytest.mark.parametrize("ifname", ["a" * 16, "eth/0", "eth:0", ".", "..", "eth 0"])
def test_invalid_ifname(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], ifname: str
) -> None:
    run = run_plugin(cni_bin, base_env("ADD", cni_bin, CNI_IFNAME=ifname), conf)
    assert_error(run, INVALID_ENVIRONMENT, "CNI_IFNAME", daemons=daemons)


def test_malformed_cni_args(cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]) -> None:
    env = base_env("ADD", cni_bin, CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME")
    assert_error(run_plugin(cni_bin, env, conf), INVALID_ENVIRONMENT, "CNI_ARGS", daemons=daemons)


@pytest.mark.parametrize(
    ("stdin", "words"),
    [
        (b"", ["empty"]),
        (b"   \n", ["empty"]),
        (b'{"cniVersion": "1.1.0", "name": "n"', ["not valid JSON"]),
        (b"{'cniVersion': '1.1.0'}", ["not valid JSON"]),
        (b'{"cniVersion": "1.1.0"} trailing', ["not valid JSON", "Extra data"]),
        (b'{"cniVersion": NaN}', ["not valid JSON"]),
        (b"\xff\xfe{}", ["not UTF-8"]),
        (b"[1, 2]", ["JSON object", "array"]),
        (b'"just a string"', ["JSON object"]),
        (b'{"cniVersion": 1.1, "name": "n"}', ["cniVersion", "string"]),
    ],
)
def test_undecodable_stdin(
    cni_bin: Path, daemons: FakeDaemons, stdin: bytes, words: list[str]
) -> None:
    run = run_plugin(cni_bin, base_env("ADD", cni_bin), stdin)
    assert_error(run, DECODE_FAILURE, *words, daemons=daemons)


def test_unreadable_stdin(cni_bin: Path, daemons: FakeDaemons) -> None:
    # No stdin at all (fd 0 closed): reading the network config is an I/O failure.
    proc = subprocess.run(
        [str(cni_bin / "calico")],
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: os.close(0),
        env=base_env("ADD", cni_bin),
        capture_output=True,
        timeout=30,
    )
    err = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert err["code"] == IO_FAILURE and "stdin" in err["msg"], err
    assert daemons.state.calls == []


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.5.0", "1.2.0", "2.0.0", "latest"])
def test_unsupported_version(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], version: str
) -> None:
    conf["cniVersion"] = version
    run = run_plugin(cni_bin, base_env("ADD", cni_bin), conf)
    err = assert_error(run, INCOMPATIBLE_VERSION, version, "1.1.0", daemons=daemons)
    assert err["cniVersion"] == "1.1.0"  # an unknown version cannot format the error


def test_missing_version(cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]) -> None:
    del conf["cniVersion"]
    run = run_plugin(cni_bin, base_env("ADD", cni_bin), conf)
    assert_error(run, INCOMPATIBLE_VERSION, "0.1.0", daemons=daemons)


@pytest.mark.parametrize(
    ("command", "version"),
    [("CHECK", "0.3.1"), ("CHECK", "0.3.0"), ("STATUS", "1.0.0"), ("GC", "0.4.0")],
)
def test_command_newer_than_version(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], command: str, version: str
) -> None:
    conf["cniVersion"] = version
    conf["prevResult"] = {"cniVersion": version, "ips": [], "interfaces": []}
    run = run_plugin(cni_bin, base_env(command, cni_bin), conf)
    err = assert_error(run, INCOMPATIBLE_VERSION, command, daemons=daemons)
    assert err["cniVersion"] == version


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"name": None}, ["name"]),
        ({"name": ""}, ["name"]),
        ({"name": "bad name!"}, ["name"]),
        ({"name": 7}, ["name"]),
        ({"type": 5}, ["type"]),
        ({"mtu": "1500"}, ["mtu"]),
        ({"mtu": 20}, ["mtu"]),
        ({"mtu": 70000}, ["mtu"]),
        ({"mtu": True}, ["mtu"]),
        ({"felix_socket": ""}, ["felix_socket"]),
        ({"felix_socket": 1}, ["felix_socket"]),
        ({"nodename": ["n"]}, ["nodename"]),
        ({"timeout_ms": 0}, ["timeout_ms"]),
        ({"policy_timeout_ms": -1}, ["policy_timeout_ms"]),
        ({"dns": "8.8.8.8"}, ["dns"]),
        ({"prevResult": []}, ["prevResult"]),
        ({"ipam": "calico-ipam"}, ["ipam"]),
        ({"ipam": {"socket": ""}}, ["ipam.socket"]),
        ({"ipam": {"assign_ipv4": "yes"}}, ["ipam.assign_ipv4", "yes"]),
        ({"ipam": {"assign_ipv4": "false"}}, ["assign_ipv4", "assign_ipv6"]),
        ({"ipam": {"ipv4_pools": "10.0.0.0/16"}}, ["ipam.ipv4_pools"]),
        ({"ipam": {"ipv6_pools": [""]}}, ["ipam.ipv6_pools"]),
    ],
)
def test_invalid_network_config(
    cni_bin: Path,
    daemons: FakeDaemons,
    conf: dict[str, Any],
    change: dict[str, Any],
    words: list[str],
) -> None:
    for key, value in change.items():
        if value is None:
            conf.pop(key)
        else:
            conf[key] = value
    run = run_plugin(cni_bin, base_env("ADD", cni_bin), conf)
    assert_error(run, INVALID_NETWORK_CONFIG, *words, daemons=daemons)


@pytest.mark.parametrize(
    ("mtu", "ipv6", "words"),
    [
        (-1, False, ["68..65535"]),
        (67, False, ["mtu=67", "68..65535"]),
        (65536, False, ["68..65535"]),
        (1500.5, False, ["mtu=1500.5"]),
        (1500.0, False, ["mtu=1500.0"]),
        ("1500", False, ['mtu="1500"']),
        (None, False, ["mtu=null"]),
        # An IPv6 pod needs 1280: the kernel turns IPv6 off on a smaller link.
        (1279, True, ["mtu=1279", "1280..65535", "ipam.assign_ipv6"]),
    ],
)
@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_invalid_mtu_reaches_no_daemon(
    cni_bin: Path,
    daemons: FakeDaemons,
    conf: dict[str, Any],
    mtu: object,
    ipv6: bool,
    words: list[str],
    command: str,
) -> None:
    conf["mtu"] = mtu
    conf["ipam"]["assign_ipv6"] = "true" if ipv6 else "false"
    conf["prevResult"] = {"cniVersion": "1.1.0", "interfaces": [], "ips": []}
    run = run_plugin(cni_bin, base_env(command, cni_bin), conf)
    assert_error(run, INVALID_NETWORK_CONFIG, "mtu", *words, daemons=daemons)


@pytest.mark.parametrize(("mtu", "ipv6"), [(0, True), (68, False), (1279, False), (1280, True)])
def test_valid_mtu_is_passed_to_felix(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], mtu: int, ipv6: bool
) -> None:
    conf["mtu"] = mtu
    conf["ipam"]["assign_ipv6"] = "true" if ipv6 else "false"
    run = run_plugin(cni_bin, base_env("ADD", cni_bin), conf)
    assert run.rc == 0, run.stdout
    assert daemons.state.calls[1].request.mtu == mtu  # type: ignore[attr-defined]
    want = mtu or FAKE_FELIX_MTU  # 0: Felix's own
    assert [i["mtu"] for i in run.json()["interfaces"]] == [want, want]


def test_unsupported_ipam_type(cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any]) -> None:
    conf["ipam"] = {"type": "host-local", "subnet": "10.1.0.0/24"}
    run = run_plugin(cni_bin, base_env("ADD", cni_bin), conf)
    # Spec: the message names the unsupported key and its value.
    assert_error(run, UNSUPPORTED_FIELD, "ipam.type", "host-local", daemons=daemons)


@pytest.mark.parametrize(
    "attachments",
    [None, "c1", [{"ifname": "eth0"}], [{"containerID": 5, "ifname": "eth0"}], ["c1"]],
)
def test_gc_bad_attachments(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], attachments: Any
) -> None:
    if attachments is not None:
        conf["cni.dev/valid-attachments"] = attachments
    run = run_plugin(cni_bin, base_env("GC", cni_bin), conf)
    assert_error(run, INVALID_NETWORK_CONFIG, "valid-attachments", daemons=daemons)


@pytest.mark.parametrize(
    "prev",
    [None, {"ips": "10.0.0.1/32"}, {"ips": [{"address": "10.0.0.1"}]}, {"interfaces": [{}]}],
)
def test_check_bad_prev_result(
    cni_bin: Path, daemons: FakeDaemons, conf: dict[str, Any], prev: Any
) -> None:
    if prev is not None:
        conf["prevResult"] = prev
    run = run_plugin(cni_bin, base_env("CHECK", cni_bin), conf)
    assert_error(run, INVALID_NETWORK_CONFIG, "prevResult", daemons=daemons)


def test_daemons_down_is_try_again_later(cni_bin: Path, tmp_path: Path) -> None:
    conf = {
        "cniVersion": "1.0.0",
        "name": "net",
        "type": "calico",
        "felix_socket": str(tmp_path / "felix.sock"),
        "ipam": {"type": "calico-ipam", "socket": str(tmp_path / "ipam.sock")},
    }
    for command in ("ADD", "DEL"):
        run = run_plugin(cni_bin, base_env(command, cni_bin), conf)
        err = assert_error(run, 11, "try again later", "ipam.sock" if command == "ADD" else "felix")
        assert err["cniVersion"] == "1.0.0"
        assert "rollback" not in err.get("details", "")  # nothing reached a daemon
    assert list(tmp_path.iterdir()) == []
