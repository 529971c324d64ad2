"""etcd client TLS against a real etcd serving mutual TLS (the session's `etcd_tls_server`:
--client-cert-auth, --trusted-ca-file, a server certificate for IP 127.0.0.1 only).

The whole Datastore contract also runs over it (test_datastore_conformance.py, `etcdv3-tls`);
here: refusals and their words, the configuration's checks, and calicoctl end to end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libcalico.config import (
    ConfigError,
    DatastoreConfig,
    EtcdTLSFiles,
    add_datastore_arguments,
)
from libcalico.datastore import DatastoreError, DatastoreUnavailableError, EventType, connect
from libcalico.datastore.etcd import EtcdDatastore
from tests.conftest import EtcdTLSServer
from tests.fixtures.watch import aclose, collect

CALICOCTL = str(Path(sys.executable).parent / "calicoctl")


def tls_env(server: EtcdTLSServer) -> dict[str, str]:
    certs = server.certs
    return {
        "DATASTORE_TYPE": "etcdv3",
        "ETCD_ENDPOINTS": server.endpoint,
        "ETCD_CA_CERT_FILE": str(certs.ca),
        "ETCD_CERT_FILE": str(certs.client_cert),
        "ETCD_KEY_FILE": str(certs.client_key),
    }


async def unavailable_message(endpoint: str, tls: EtcdTLSFiles | None) -> str:
    store = EtcdDatastore([endpoint], tls=tls, timeout=3)
    try:
        with pytest.raises(DatastoreUnavailableError) as caught:
            await store.current_revision()
        return str(caught.value)
    finally:
        await store.close()


# ---- over mutual TLS ----


async def test_crud_and_watch_over_mutual_tls(etcd_tls_config: DatastoreConfig) -> None:
    store = await connect(etcd_tls_config)
    try:
        start = await store.current_revision()
        stream = store.watch("/calico/tls/", start + 1)
        created = await store.create("/calico/tls/a", b"1")
        updated = await store.update("/calico/tls/a", b"2", created.mod_revision)
        assert (await store.get("/calico/tls/a")).value == b"2"
        assert [kv.key for kv in (await store.list("/calico/tls/")).items] == ["/calico/tls/a"]
        await store.delete("/calico/tls/a", updated.mod_revision)
        events = await collect(stream, 3)
        await aclose(stream)
        assert [(e.type, e.value) for e in events] == [
            (EventType.PUT, b"1"),
            (EventType.PUT, b"2"),
            (EventType.DELETE, b"2"),
        ]
    finally:
        await store.close()


async def test_config_from_env_connects(etcd_tls_server: EtcdTLSServer) -> None:
    config = DatastoreConfig.from_env(tls_env(etcd_tls_server))
    assert config.etcd_tls == etcd_tls_server.client_tls()
    store = await connect(config)
    try:
        assert await store.current_revision() >= 1
    finally:
        await store.close()


# ---- refused, and saying why ----


async def test_wrong_ca_is_unavailable_naming_the_ca(etcd_tls_server: EtcdTLSServer) -> None:
    certs = etcd_tls_server.certs
    tls = EtcdTLSFiles(str(certs.other_ca), str(certs.client_cert), str(certs.client_key))
    message = await unavailable_message(etcd_tls_server.endpoint, tls)
    assert "CERTIFICATE_VERIFY_FAILED" in message, message
    assert f"not signed by a CA in ETCD_CA_CERT_FILE {certs.other_ca}" in message, message


async def test_system_roots_do_not_trust_a_private_ca(
    etcd_tls_server: EtcdTLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # https:// with no CA given trusts the system's bundle (here, through SSL_CERT_FILE, one
    # that has never heard of etcd's CA).
    monkeypatch.setenv("SSL_CERT_FILE", str(etcd_tls_server.certs.other_ca))
    message = await unavailable_message(etcd_tls_server.endpoint, None)
    assert "not signed by a CA in the system CA bundle" in message, message


async def test_no_client_certificate_is_refused_naming_the_fix(
    etcd_tls_server: EtcdTLSServer,
) -> None:
    message = await unavailable_message(
        etcd_tls_server.endpoint, EtcdTLSFiles(str(etcd_tls_server.certs.ca))
    )
    assert "may require a client certificate; set ETCD_CERT_FILE and ETCD_KEY_FILE" in message


async def test_server_name_checked_is_the_endpoints_host(etcd_tls_server: EtcdTLSServer) -> None:
    # The certificate names IP 127.0.0.1 only: `localhost` reaches the same etcd, and fails.
    endpoint = etcd_tls_server.endpoint.replace("127.0.0.1", "localhost")
    message = await unavailable_message(endpoint, etcd_tls_server.client_tls())
    assert "does not name the endpoint's host localhost" in message, message


async def test_plain_http_to_a_tls_etcd_hints_https(etcd_tls_server: EtcdTLSServer) -> None:
    endpoint = etcd_tls_server.endpoint.replace("https://", "http://")
    message = await unavailable_message(endpoint, None)
    assert "use an https:// endpoint" in message, message


async def test_fails_over_from_a_refusing_endpoint(etcd_tls_server: EtcdTLSServer) -> None:
    # `localhost` fails the name check; the next endpoint is the same etcd by its IP.
    good = etcd_tls_server.endpoint
    bad = good.replace("127.0.0.1", "localhost")
    store = EtcdDatastore([bad, good], tls=etcd_tls_server.client_tls(), timeout=3)
    try:
        with pytest.raises(DatastoreUnavailableError):
            await store.current_revision()
        assert await store.current_revision() >= 1
    finally:
        await store.close()


# ---- configuration: each error names its variable ----


def test_missing_file_is_named(etcd_tls_server: EtcdTLSServer, tmp_path: Path) -> None:
    for variable in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"):
        env = {**tls_env(etcd_tls_server), variable: str(tmp_path / "gone.pem")}
        with pytest.raises(ConfigError, match=f"^{variable}: cannot read .*gone.pem"):
            DatastoreConfig.from_env(env)


def test_unreadable_and_non_pem_files_are_named(
    etcd_tls_server: EtcdTLSServer, tmp_path: Path
) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    env = {**tls_env(etcd_tls_server), "ETCD_CA_CERT_FILE": str(not_pem)}
    with pytest.raises(ConfigError, match=r"^ETCD_CA_CERT_FILE: .*ca.txt is not a PEM file"):
        DatastoreConfig.from_env(env)
    env = {**tls_env(etcd_tls_server), "ETCD_KEY_FILE": str(tmp_path)}  # a directory
    with pytest.raises(ConfigError, match=r"^ETCD_KEY_FILE: cannot read"):
        DatastoreConfig.from_env(env)


def test_certificate_and_key_come_together(etcd_tls_server: EtcdTLSServer) -> None:
    env = tls_env(etcd_tls_server)
    with pytest.raises(ConfigError, match=r"^ETCD_KEY_FILE: not set but ETCD_CERT_FILE is"):
        DatastoreConfig.from_env({**env, "ETCD_KEY_FILE": ""})
    with pytest.raises(ConfigError, match=r"^ETCD_CERT_FILE: not set but ETCD_KEY_FILE is"):
        DatastoreConfig.from_env({k: v for k, v in env.items() if k != "ETCD_CERT_FILE"})


def test_mixed_schemes_are_refused(etcd_tls_server: EtcdTLSServer) -> None:
    env = {**tls_env(etcd_tls_server), "ETCD_ENDPOINTS": "https://10.0.0.1:2379,http://e:2379"}
    with pytest.raises(ConfigError, match=r"^ETCD_ENDPOINTS: .* mixes http:// and https://"):
        DatastoreConfig.from_env(env)
    with pytest.raises(DatastoreError, match="mixes http:// and https://"):
        EtcdDatastore(["https://a:2379", "b:2379"])  # no scheme = http


def test_tls_files_with_http_endpoints_are_refused(etcd_tls_server: EtcdTLSServer) -> None:
    env = {**tls_env(etcd_tls_server), "ETCD_ENDPOINTS": "http://127.0.0.1:2379"}
    with pytest.raises(ConfigError, match=r"^ETCD_CA_CERT_FILE: set, but ETCD_ENDPOINTS are plain"):
        DatastoreConfig.from_env(env)


def test_https_without_ca_needs_a_system_bundle(
    etcd_tls_server: EtcdTLSServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": "https://127.0.0.1:2379"}
    # Python's ssl honours SSL_CERT_FILE as the system bundle's place.
    monkeypatch.setenv("SSL_CERT_FILE", str(etcd_tls_server.certs.other_ca))
    assert DatastoreConfig.from_env(env).etcd_tls == EtcdTLSFiles()
    # Pointed at nothing: there is no system bundle.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    with pytest.raises(ConfigError, match=r"^ETCD_CA_CERT_FILE: not set and the system has no"):
        DatastoreConfig.from_env(env)


def test_tls_settings_ignored_for_other_datastores(tmp_path: Path) -> None:
    env = {"DATASTORE_TYPE": "embedded", "ETCD_CA_CERT_FILE": str(tmp_path / "gone.pem")}
    assert DatastoreConfig.from_env(env).etcd_tls is None


def test_flags_override_the_environment(etcd_tls_server: EtcdTLSServer, tmp_path: Path) -> None:
    certs = etcd_tls_server.certs
    parser = argparse.ArgumentParser()
    add_datastore_arguments(parser)
    args = parser.parse_args(
        [
            "--datastore-type=etcdv3",
            f"--etcd-endpoints={etcd_tls_server.endpoint}",
            f"--etcd-ca-cert-file={certs.ca}",
            f"--etcd-cert-file={certs.client_cert}",
            f"--etcd-key-file={certs.client_key}",
        ]
    )
    gone = str(tmp_path / "gone.pem")
    env = {"ETCD_CA_CERT_FILE": gone, "ETCD_CERT_FILE": gone, "ETCD_KEY_FILE": gone}
    assert DatastoreConfig.from_args(args, env).etcd_tls == etcd_tls_server.client_tls()


# ---- end to end: calicoctl over mutual TLS ----


def calicoctl(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CALICOCTL, *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_calicoctl_over_mutual_tls(
    etcd_tls_server: EtcdTLSServer, etcd_tls_config: DatastoreConfig
) -> None:
    env = tls_env(etcd_tls_server)
    pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: tls-pool}\n"
    pool += "spec: {cidr: 10.99.0.0/16}\n"
    created = calicoctl(env, "create", "-f", "-", stdin=pool)
    assert created.returncode == 0, created.stderr
    got = calicoctl(env, "get", "ippools")
    assert got.returncode == 0, got.stderr
    assert "tls-pool" in got.stdout
    checked = calicoctl(env, "ipam", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    nodes = calicoctl(env, "get", "nodes")
    assert nodes.returncode == 0, nodes.stderr
    # Without the client certificate: exit 1 and the reason on stderr.
    refused = calicoctl({**env, "ETCD_CERT_FILE": "", "ETCD_KEY_FILE": ""}, "get", "ippools")
    assert refused.returncode == 1
    assert "set ETCD_CERT_FILE and ETCD_KEY_FILE" in refused.stderr, refused.stderr
    # A configuration error names the variable.
    bad = calicoctl({**env, "ETCD_KEY_FILE": "/nonexistent/key.pem"}, "get", "ippools")
    assert bad.returncode == 1
    assert "ETCD_KEY_FILE: cannot read /nonexistent/key.pem" in bad.stderr, bad.stderr


async def test_certificate_files_gone_after_start_are_unavailable(
    etcd_tls_server: EtcdTLSServer, tmp_path: Path
) -> None:
    # Files read on every (re)connect: a rotation that removed them is retried, not fatal.
    certs = etcd_tls_server.certs
    key = tmp_path / "client.key"
    key.write_bytes(certs.client_key.read_bytes())
    tls = EtcdTLSFiles(str(certs.ca), str(certs.client_cert), str(key))
    store = EtcdDatastore([etcd_tls_server.endpoint], tls=tls, timeout=3)
    try:
        key.unlink()
        with pytest.raises(DatastoreUnavailableError, match="ETCD_KEY_FILE: cannot read"):
            await store.current_revision()
        key.write_bytes(certs.client_key.read_bytes())
        assert await store.current_revision() >= 1
    finally:
        await store.close()


@pytest.mark.parametrize(
    "daemon",
    ["calico-felix", "calico-ipamd", "calico-bgpd", "calico-typha", "calico-kube-controllers"],
)
def test_daemons_refuse_to_start_naming_the_variable(daemon: str, tmp_path: Path) -> None:
    # The shared datastore flags and variables reach every daemon; a bad one stops it at once.
    env = {
        **os.environ,
        "DATASTORE_TYPE": "etcdv3",
        "ETCD_ENDPOINTS": "https://127.0.0.1:2379",
        "ETCD_CA_CERT_FILE": str(tmp_path / "gone.pem"),
    }
    run = subprocess.run(
        [str(Path(sys.executable).parent / daemon)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"ETCD_CA_CERT_FILE: cannot read {tmp_path / 'gone.pem'}" in run.stderr, run.stderr
