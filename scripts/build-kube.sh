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

KUBE_VERSION=v1.37.2
# The staging modules are published as v0.<minor>.<patch> of the same release.
STAGING_VERSION=v0.${KUBE_VERSION#v1.}
ETCD_VERSION=v3.7.0
KUBE_COMMANDS=(kube-apiserver kubectl)

CACHE=${CALICO_TOOLS_CACHE:-$HOME/.cache/calico-py/tools}
KUBE_DIR=$CACHE/kube-$KUBE_VERSION
ETCD_DIR=$CACHE/etcd-$ETCD_VERSION
VENV_BIN=${VENV_BIN:-.venv/bin}

GO=${GO:-/usr/local/go/bin/go}
GO_WANTED=$GO
if [ ! -x "$GO" ]; then
  GO=$(command -v go || true)
fi

log() { echo "build-kube: $*"; }

# link SRC DEST: a symlink in the venv to the cached binary (replaced only when it differs).
link() {
  if [ "$(readlink "$2" 2>/dev/null)" != "$1" ]; then
    ln -sfn "$1" "$2"
  fi
}

complete() {  # complete DIR NAME...: every binary of a cache entry is there
  local dir=$1 name
  shift
  for name in "$@"; do
    [ -x "$dir/$name" ] || return 1
  done
}

# A temporary directory on the cache's filesystem (so the final rename is atomic), removed on
# any exit; its go.mod makes it the wrapper module.
TMP_DIRS=()
cleanup() {
  local d
  for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do
    # Go makes its module cache files read-only; GOMODCACHE is not in here, but be safe.
    chmod -R u+w "$d" 2>/dev/null || true
    rm -rf "$d"
  done
}
trap cleanup EXIT
# new_tmp NAME: sets WORK (not echoed: a $(...) subshell would not record it for cleanup).
new_tmp() {
  mkdir -p "$CACHE"
  WORK=$(mktemp -d "$CACHE/.build-$1.XXXXXX")
  TMP_DIRS+=("$WORK")
}

# publish TMP_BIN DIR: rename the finished binaries into place (another build that finished
# first wins; ours is dropped).
publish() {
  if [ -e "$2" ] && ! complete "$2" $(ls "$1"); then
    rm -rf "$2"  # an entry someone emptied by hand: replace it
  fi
  if ! mv -T "$1" "$2" 2>/dev/null; then
    log "$2 appeared meanwhile; keeping it"
  fi
}

gobuild() {  # the flags upstream's hack/lib/golang.sh uses for release binaries
  CGO_ENABLED=0 nice -n 19 "$GO" build -trimpath "$@"
}

build_kube() {
  local work ldflags pkg date mod cmd
  new_tmp "kube-$KUBE_VERSION"
  work=$WORK
  log "building ${KUBE_COMMANDS[*]} $KUBE_VERSION in $work (nice 19; cold: minutes)"
  (
    cd "$work"
    "$GO" mod init calico-py-kube-build >/dev/null 2>&1
    nice -n 19 "$GO" get "k8s.io/kubernetes@$KUBE_VERSION"
    mod=$("$GO" env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod
    for pkg in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$mod"); do
      "$GO" mod edit "-replace=$pkg=$pkg@$STAGING_VERSION"
    done
    {
      printf '//go:build tools\n\npackage tools\n\nimport (\n'
      for cmd in "${KUBE_COMMANDS[@]}"; do
        printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"
      done
      printf ')\n'
    } >tools.go
    nice -n 19 "$GO" mod tidy
    # Version stamps, so --version and /version report the real release (kubectl checks the
    # server's version skew).
    date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1"
      ldflags="$ldflags -X $pkg.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
      ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    mkdir bin
    for cmd in "${KUBE_COMMANDS[@]}"; do
      gobuild -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "bin/$cmd" \
        "k8s.io/kubernetes/cmd/$cmd"
    done
    "bin/kube-apiserver" --version
  )
  publish "$work/bin" "$KUBE_DIR"
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
