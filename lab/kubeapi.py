"""The lab's own Kubernetes API server: started in the lab network's namespace, recorded,
restarted, reconstructed from the record.

`--datastore kubernetes` and `--kube-apiserver` run a kube-apiserver over its own etcd 3.7
(lab/apiserver.py) inside the lab network's namespace, listening on the bridge's address
10.66.0.1:6443 (reachable from every node; nothing listens in the host's namespace), with its
etcd on that namespace's loopback. On start the lab installs Calico's CRDs and the RBAC of
lab/rbac.py, and writes kubeconfigs: `<state>/kubeconfig` for `admin` (the lab CLI, kubectl,
calicoctl) and `<state>/kube/kubeconfig-<user>` for each daemon user.

Both processes are recorded in the lab's `infra` (`kube-etcd`, `kube-apiserver`) the moment
they exist, so `down` stops them like any other; the rest of what is needed to talk to the
server is `state.kube`.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lab import apiserver, netns, network, rbac
from lab.apiserver import ApiServer, ApiServerError
from lab.processes import ProcessRecord, start_detached, stop
from lab.state import LabState

KUBE_DIR = "kube"  # the API server's work dir inside the state dir
ADMIN_KUBECONFIG = "kubeconfig"
PORT = 6443
ETCD = "kube-etcd"  # their keys in state.infra (the names apiserver.start gives them)
APISERVER = "kube-apiserver"
STOP_TIMEOUTS = {APISERVER: apiserver.APISERVER_STOP_TIMEOUT, ETCD: 10.0}
COMPACTION_MARKER = "/calico-lab/compaction-marker"  # outside the API server's /registry/


class KubeApiError(RuntimeError):
    pass


def start(
    state: LabState,
    save: Callable[[], None],
    extra_args: Sequence[str] = (),
) -> ApiServer:
    """Start the lab's API server, install CRDs and RBAC, write the kubeconfigs; record it all.

    The caller may be in any namespace: both processes are started inside the lab network's.
    """

    def record(process: ProcessRecord) -> None:
        state.infra[process.name] = process
        save()

    work = state.state_dir / KUBE_DIR
    try:
        server = apiserver.start(
            work,
            address=str(network.GATEWAY),
            netns_path=netns.netns_path(state.network_netns),
            users={user: [] for user in rbac.USERS},
            on_started=record,
            port=PORT,
            extra_args=extra_args,
        )
    except ApiServerError as exc:
        raise KubeApiError(str(exc)) from None
    admin = server.write_kubeconfig(state.state_dir / ADMIN_KUBECONFIG)
    users = {
        user: str(server.write_kubeconfig(work / f"kubeconfig-{user}", user)) for user in rbac.USERS
    }
    state.kube = {
        "address": server.address,
        "port": server.port,
        "work_dir": server.work_dir,
        "etcd_url": server.etcd_url,
        "netns": server.netns,
        "extra_args": list(server.extra_args),
        "kubeconfig": str(admin),
        "kubeconfigs": users,
    }
    save()
    try:
        apiserver.install_calico_crds(server)
    except ApiServerError as exc:
        raise KubeApiError(str(exc)) from None
    apply_manifests(server, rbac.manifests())
    return server


def server_of(state: LabState) -> ApiServer:
    """The recorded API server (KubeApiError when the lab runs none)."""
    if not state.kube:
        raise KubeApiError(
            f"lab {state.name!r} runs no Kubernetes API server "
            "(up with --datastore kubernetes or --kube-apiserver)"
        )
    if ETCD not in state.infra:
        raise KubeApiError(f"lab {state.name!r}: no {ETCD} is recorded")
    kube = state.kube
    tokens = _tokens(Path(str(kube["work_dir"])))
    return ApiServer(
        address=str(kube["address"]),
        port=int(kube["port"]),
        work_dir=str(kube["work_dir"]),
        admin_token=tokens.get(apiserver.ADMIN_USER, ""),
        tokens=tokens,
        netns=kube.get("netns"),
        etcd=state.infra[ETCD],
        apiserver=state.infra.get(APISERVER),
        etcd_url=str(kube["etcd_url"]),
        extra_args=list(kube.get("extra_args") or []),
    )


def admin_kubeconfig(state: LabState) -> str:
    server_of(state)  # a clear error when the lab has none
    return str(state.kube["kubeconfig"])


def user_kubeconfig(state: LabState, user: str) -> str:
    server_of(state)
    try:
        return str(state.kube["kubeconfigs"][user])
    except KeyError:
        raise KubeApiError(f"user {user!r}: the lab made no kubeconfig for it") from None


def kubectl(state: LabState, args: Sequence[str], **run: Any) -> subprocess.CompletedProcess[str]:
    """kubectl as admin against the lab's API server (run inside the lab network's namespace)."""
    program = apiserver.binary("kubectl")
    if program is None:
        raise KubeApiError(apiserver.missing_binaries() or "kubectl not found")
    run.setdefault("capture_output", True)
    run.setdefault("text", True)
    run.setdefault("timeout", 60)
    argv = [str(program), f"--kubeconfig={admin_kubeconfig(state)}", *args]
    with netns.inside(netns.netns_path(state.network_netns)):
        return subprocess.run(argv, **run)


def apply_manifests(server: ApiServer, docs: Sequence[dict[str, Any]]) -> None:
    proc = server.kubectl(["apply", "-f", "-"], input=yaml.safe_dump_all(docs))
    if proc.returncode != 0:
        raise KubeApiError(f"kubectl apply: {proc.stderr.strip()}")


def etcd_revision(state: LabState, endpoint: str | None = None) -> int:
    """The API server's etcd's current revision (kube-etcdctl endpoint status)."""
    out = _etcdctl(state, ["endpoint", "status", "-w", "json"], endpoint)
    try:
        return int(json.loads(out)[0]["Status"]["header"]["revision"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise KubeApiError(f"kube-etcdctl endpoint status: no revision in {out[:200]!r}") from exc


def compact(state: LabState, endpoint: str | None = None) -> int:
    """Move the API server's etcd's revision on (a marker key outside the API server's
    /registry/), then compact up to it; returns the compacted revision.

    Every watch resuming from an older resourceVersion then gets 410 Gone and must list again.
    """
    # Twice: a reader that has seen the latest revision R resumes at R + 1, which compacting
    # at R + 1 leaves; at R + 2 it is gone.
    for _ in range(2):
        _etcdctl(state, ["put", COMPACTION_MARKER, str(time.time())], endpoint)
    revision = etcd_revision(state, endpoint)
    _etcdctl(state, ["compact", str(revision), "--physical"], endpoint)
    return revision


def _etcdctl(state: LabState, args: Sequence[str], endpoint: str | None = None) -> str:
    program = apiserver.binary("kube-etcd")
    ctl = program.parent / "kube-etcdctl" if program is not None else None
    if ctl is None or not ctl.exists():
        raise KubeApiError("kube-etcdctl not found (scripts/build-kube.sh builds it)")
    url = endpoint or server_of(state).etcd_url
    with netns.inside(netns.netns_path(state.network_netns)):
        proc = subprocess.run(
            [str(ctl), f"--endpoints={url}", *args], capture_output=True, text=True, timeout=30
        )
    if proc.returncode != 0:
        raise KubeApiError(f"kube-etcdctl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _compact_unseen(state: LabState, save: Callable[[], None]) -> int:
    """With etcd stopped: start it on a port the API server does not know, compact, stop it.

    The API server's own etcd watches then resume into a compacted revision once etcd is
    back: its watch cache lists again and ends every client's watch, and clients resuming
    from their older resourceVersions get 410 Gone. (Compacting after etcd is back races
    with the API server resuming its watches first.)"""
    real = state.infra[ETCD]
    url = f"http://127.0.0.1:{_free_port_in(state)}"
    argv = [
        f"{arg.split('=', 1)[0]}={url}" if arg.startswith(_CLIENT_URL_FLAGS) else arg
        for arg in real.argv
    ]
    with netns.inside(netns.netns_path(state.network_netns)):
        record = start_detached(real.name, argv, Path(real.log))
    state.infra[ETCD] = record  # recorded while it runs: `down` stops it if we crash
    save()
    try:
        with netns.inside(netns.netns_path(state.network_netns)):
            apiserver.wait_etcd(dataclasses.replace(server_of(state), etcd_url=url))
        return compact(state, url)
    finally:
        stopped = stop(record, timeout=STOP_TIMEOUTS[ETCD])
        state.infra[ETCD] = real
        save()
        if not stopped:
            raise KubeApiError(f"{ETCD} (pid {record.pid}, compacting) did not stop")


_CLIENT_URL_FLAGS = ("--listen-client-urls=", "--advertise-client-urls=")


def _free_port_in(state: LabState) -> int:
    with netns.inside(netns.netns_path(state.network_netns)):
        return apiserver.free_port("127.0.0.1")


def restart(
    state: LabState,
    save: Callable[[], None],
    apiserver_too: bool = True,
    etcd_too: bool = False,
    compact_etcd: bool = False,
    down_for: float = 0.0,
) -> dict[str, Any]:
    """Stop the API server and/or its etcd by recorded PID and start them again with the same
    arguments and data. `compact_etcd`: compact etcd to its latest revision while the API
    server's view is behind: with the API server down, or (etcd restarted) before the API
    server can see etcd again (`_compact_unseen`); clients resuming from an older
    resourceVersion get 410 Gone. `down_for`: seconds to stay down. Returns what was done
    (old and new PIDs, the compacted revision)."""
    server_of(state)
    order = [name for name, on in ((APISERVER, apiserver_too), (ETCD, etcd_too)) if on]
    if not order:
        raise KubeApiError("restart: neither the API server nor its etcd")
    for name in order:
        if name not in state.infra:
            raise KubeApiError(f"lab {state.name!r}: no {name} is recorded")
    done: dict[str, Any] = {"stopped": {}, "started": {}}
    for name in order:
        record = state.infra[name]
        if not stop(record, timeout=STOP_TIMEOUTS[name]):
            raise KubeApiError(f"{name} (pid {record.pid}) did not stop")
        done["stopped"][name] = record.pid
    if compact_etcd:
        done["compacted"] = _compact_unseen(state, save) if etcd_too else compact(state)
    if down_for > 0:
        time.sleep(down_for)
    for name in reversed(order):  # etcd first
        old = state.infra[name]
        with netns.inside(netns.netns_path(state.network_netns)):
            state.infra[name] = start_detached(old.name, old.argv, Path(old.log))
        save()
        done["started"][name] = state.infra[name].pid
        fresh = server_of(state)
        try:
            if name == ETCD:
                with netns.inside(netns.netns_path(state.network_netns)):
                    apiserver.wait_etcd(fresh)  # on that namespace's loopback
            if name == APISERVER or not apiserver_too:
                apiserver.wait_ready(fresh)  # /readyz checks its etcd too
        except ApiServerError as exc:
            raise KubeApiError(str(exc)) from None
    return done


def _tokens(work_dir: Path) -> dict[str, str]:
    """user -> token, from the API server's token file (`token,user,uid,"groups"` lines)."""
    tokens = {}
    try:
        lines = (work_dir / "tokens.csv").read_text().splitlines()
    except OSError as exc:
        raise KubeApiError(f"the API server's token file: {exc}") from None
    for line in lines:
        fields = line.split(",")
        if len(fields) > 1:
            tokens[fields[1]] = fields[0]
    return tokens
