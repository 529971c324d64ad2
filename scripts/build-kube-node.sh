#!/usr/bin/env bash
# Builds what a real Kubernetes node needs beyond scripts/build-kube.sh's API server and etcd:
# kubelet, kube-controller-manager and kube-scheduler (same release, same wrapper-module trick:
# see build-kube.sh) and containerd v2 with its runc shim and ctr, from the Go module proxy,
# into the same cache keyed by version. runc comes from Debian (`apt-get install runc`).
# `calico-lab kube up` (lab/kubenode/) runs them; nothing is linked into .venv/bin, because
# the lab finds them in the cache (lab/kubenode/tools.py).
#
# Why containerd v2 from source: Debian 12's containerd is 1.6, which kubelet 1.37 only accepts
# with a fallback warning and upstream has dropped. Cold: ~6 min of CPU at nice 19 on 2 cores
# (the kubelet alone ~5 min, 1.9 GB peak); warm Go caches: under a minute; cached: instant.
# Atomic like build-kube.sh: built in a temporary directory, renamed into place.
#
# Environment: GO, CALICO_TOOLS_CACHE (as build-kube.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSION=v1.37.2
STAGING_VERSION=v0.${KUBE_VERSION#v1.}
CONTAINERD_VERSION=v2.4.2
NODE_COMMANDS=(kubelet kube-controller-manager kube-scheduler)
CONTAINERD_COMMANDS=(containerd containerd-shim-runc-v2 ctr)

CACHE=${CALICO_TOOLS_CACHE:-$HOME/.cache/calico-py/tools}
NODE_DIR=$CACHE/kube-node-$KUBE_VERSION
CONTAINERD_DIR=$CACHE/containerd-$CONTAINERD_VERSION

GO=${GO:-/usr/local/go/bin/go}
GO_WANTED=$GO
if [ ! -x "$GO" ]; then
  GO=$(command -v go || true)
fi

log() { echo "build-kube-node: $*"; }

complete() {  # complete DIR NAME...: every binary of a cache entry is there
  local dir=$1 name
  shift
  for name in "$@"; do
    [ -x "$dir/$name" ] || return 1
  done
}

TMP_DIRS=()
cleanup() {
  local d
  for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do
    chmod -R u+w "$d" 2>/dev/null || true
    rm -rf "$d"
  done
}
trap cleanup EXIT
new_tmp() {  # sets WORK (not echoed: a $(...) subshell would not record it for cleanup)
  mkdir -p "$CACHE"
  WORK=$(mktemp -d "$CACHE/.build-$1.XXXXXX")
  TMP_DIRS+=("$WORK")
}

publish() {  # publish TMP_BIN DIR (another build that finished first wins)
  if [ -e "$2" ] && ! complete "$2" $(ls "$1"); then
    rm -rf "$2"
  fi
  if ! mv -T "$1" "$2" 2>/dev/null; then
    log "$2 appeared meanwhile; keeping it"
  fi
}

gobuild() {
  CGO_ENABLED=0 nice -n 19 "$GO" build -trimpath "$@"
}

tools_go() {  # tools_go PREFIX CMD...: a tools.go importing each command (keeps go mod tidy honest)
  local prefix=$1 cmd
  shift
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for cmd in "$@"; do
    printf '\t_ "%s/%s"\n' "$prefix" "$cmd"
  done
  printf ')\n'
}

build_node() {
  local work ldflags pkg date mod cmd
  new_tmp "kube-node-$KUBE_VERSION"
  work=$WORK
  log "building ${NODE_COMMANDS[*]} $KUBE_VERSION in $work (nice 19; cold: minutes)"
  (
    cd "$work"
    "$GO" mod init calico-py-kube-node-build >/dev/null 2>&1
    nice -n 19 "$GO" get "k8s.io/kubernetes@$KUBE_VERSION"
    mod=$("$GO" env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod
    for pkg in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$mod"); do
      "$GO" mod edit "-replace=$pkg=$pkg@$STAGING_VERSION"
    done
    tools_go k8s.io/kubernetes/cmd "${NODE_COMMANDS[@]}" >tools.go
    nice -n 19 "$GO" mod tidy
    date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1"
      ldflags="$ldflags -X $pkg.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
      ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    mkdir bin
    for cmd in "${NODE_COMMANDS[@]}"; do
      # CGO_ENABLED=0 works for the kubelet too (upstream builds it with cgo).
      gobuild -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "bin/$cmd" \
        "k8s.io/kubernetes/cmd/$cmd"
    done
    bin/kubelet --version
  )
  publish "$work/bin" "$NODE_DIR"
}

build_containerd() {
  local work cmd
  new_tmp "containerd-$CONTAINERD_VERSION"
  work=$WORK
  log "building ${CONTAINERD_COMMANDS[*]} $CONTAINERD_VERSION in $work (nice 19)"
  (
    cd "$work"
    "$GO" mod init calico-py-containerd-build >/dev/null 2>&1
    tools_go github.com/containerd/containerd/v2/cmd "${CONTAINERD_COMMANDS[@]}" >tools.go
    nice -n 19 "$GO" get "github.com/containerd/containerd/v2@$CONTAINERD_VERSION"
    nice -n 19 "$GO" mod tidy
    mkdir bin
    for cmd in "${CONTAINERD_COMMANDS[@]}"; do
      # Without cgo only the btrfs snapshotter is missing; overlayfs is what the node uses.
      gobuild -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
        -o "bin/$cmd" "github.com/containerd/containerd/v2/cmd/$cmd"
    done
    bin/containerd --version
  )
  publish "$work/bin" "$CONTAINERD_DIR"
}

need_build=0
complete "$NODE_DIR" "${NODE_COMMANDS[@]}" || need_build=1
complete "$CONTAINERD_DIR" "${CONTAINERD_COMMANDS[@]}" || need_build=1
if ((need_build)) && [ -z "$GO" ]; then
  log "no Go toolchain (looked for $GO_WANTED and go on PATH): ${NODE_COMMANDS[*]} and" \
    "containerd $CONTAINERD_VERSION not built; calico-lab kube and tests/kubenode cannot run"
  exit 0
fi
start=$(date +%s)
complete "$NODE_DIR" "${NODE_COMMANDS[@]}" || build_node
complete "$CONTAINERD_DIR" "${CONTAINERD_COMMANDS[@]}" || build_containerd
if ((need_build)); then
  log "built in $(($(date +%s) - start)) s into $CACHE"
fi
