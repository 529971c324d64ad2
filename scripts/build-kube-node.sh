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

CONTAINERD_VERSION=v2.4.2
NODE_COMMANDS=(kubelet kube-controller-manager kube-scheduler)
CONTAINERD_COMMANDS=(containerd containerd-shim-runc-v2 ctr)
log() { echo "build-kube-node: $*"; }
# shellcheck source=scripts/lib/gobuild.sh
. scripts/lib/gobuild.sh  # KUBE_VERSION, CACHE, GO, complete, new_tmp, publish, gobuild, ...

NODE_DIR=$CACHE/kube-node-$KUBE_VERSION
CONTAINERD_DIR=$CACHE/containerd-$CONTAINERD_VERSION

build_node() {
  build_kube_commands "$NODE_DIR" kube-node "${NODE_COMMANDS[@]}"
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
