#!/usr/bin/env bash
# Builds the real Kubernetes API server the tests and the lab run (kube-apiserver, kubectl) and
# the etcd it stores into (etcd, etcdctl), from the Go module proxy at pinned versions, into a
# cache outside the checkout keyed by version; then links them into .venv/bin as
# kube-apiserver, kubectl, kube-etcd and kube-etcdctl (kube-etcd, not etcd: Debian's etcd 3.4
# in /usr/bin stays the one the rest of the project runs).
#
# Why build: k8s.io/kubernetes cannot be `go install`ed. Its go.mod requires its 31 staging
# modules (k8s.io/api, k8s.io/apiserver, ...) as v0.0.0 with `replace => ./staging/...`, which
# Go ignores outside that module, so a small wrapper module points each at the published
# v0.<minor>.<patch> instead. Why etcd 3.7: with Debian's 3.4 the API server logs
# RequestWatchProgress as unsupported and hangs on SIGTERM.
#
# Cold: several minutes of CPU at nice 19 (README.md, "Quick start", has the measured time) and
# ~4 GB of Go build cache; warm (cache present): about a second. Atomic: each set of binaries is
# built in a temporary directory beside its cache entry and renamed into place at the end, so an
# interrupted build leaves no half entry. No Go toolchain: says so and exits 0 (tests needing
# the binaries then skip, saying why).
#
# Environment: GO (default /usr/local/go/bin/go, else `go` on PATH), CALICO_TOOLS_CACHE
# (default ~/.cache/calico-py/tools), VENV_BIN (default .venv/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

ETCD_VERSION=v3.7.0
KUBE_COMMANDS=(kube-apiserver kubectl)
log() { echo "build-kube: $*"; }
# shellcheck source=scripts/lib/gobuild.sh
. scripts/lib/gobuild.sh  # KUBE_VERSION, CACHE, GO, complete, new_tmp, publish, gobuild, ...

KUBE_DIR=$CACHE/kube-$KUBE_VERSION
ETCD_DIR=$CACHE/etcd-$ETCD_VERSION
VENV_BIN=${VENV_BIN:-.venv/bin}

# link SRC DEST: a symlink in the venv to the cached binary (replaced only when it differs).
link() {
  if [ "$(readlink "$2" 2>/dev/null)" != "$1" ]; then
    ln -sfn "$1" "$2"
  fi
}

build_kube() {
  build_kube_commands "$KUBE_DIR" kube "${KUBE_COMMANDS[@]}"
}

build_etcd() {
  local work
  new_tmp "etcd-$ETCD_VERSION"
  work=$WORK
  log "building etcd, etcdctl $ETCD_VERSION in $work (nice 19)"
  (
    cd "$work"
    "$GO" mod init calico-py-etcd-build >/dev/null 2>&1
    nice -n 19 "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
      "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
    mkdir bin
    gobuild -ldflags "-s -w" -o bin/etcd go.etcd.io/etcd/server/v3
    gobuild -ldflags "-s -w" -o bin/etcdctl go.etcd.io/etcd/etcdctl/v3
    bin/etcd --version | sed -n 1p  # not head: etcd would die of SIGPIPE (pipefail)
  )
  publish "$work/bin" "$ETCD_DIR"
}

need_build=0
complete "$KUBE_DIR" "${KUBE_COMMANDS[@]}" || need_build=1
complete "$ETCD_DIR" etcd etcdctl || need_build=1
if ((need_build)) && [ -z "$GO" ]; then
  log "no Go toolchain (looked for $GO_WANTED and go on PATH): kube-apiserver," \
    "kubectl and etcd $ETCD_VERSION not built; tests/kube and --datastore kubernetes will skip"
  exit 0
fi
start=$(date +%s)
complete "$KUBE_DIR" "${KUBE_COMMANDS[@]}" || build_kube
complete "$ETCD_DIR" etcd etcdctl || build_etcd
if ((need_build)); then
  log "built in $(($(date +%s) - start)) s into $CACHE"
fi

mkdir -p "$VENV_BIN"
for cmd in "${KUBE_COMMANDS[@]}"; do
  link "$KUBE_DIR/$cmd" "$VENV_BIN/$cmd"
done
link "$ETCD_DIR/etcd" "$VENV_BIN/kube-etcd"
link "$ETCD_DIR/etcdctl" "$VENV_BIN/kube-etcdctl"
