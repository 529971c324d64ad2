# Shared by scripts/build-kube.sh and scripts/build-kube-node.sh: build Go commands from the
# module proxy into a version-keyed cache, atomically. Sourced, not run; the caller sets
# `set -euo pipefail`, defines log(), and may set GO and CALICO_TOOLS_CACHE.

KUBE_VERSION=v1.37.2
# The Kubernetes staging modules are published as v0.<minor>.<patch> of the same release.
STAGING_VERSION=v0.${KUBE_VERSION#v1.}

CACHE=${CALICO_TOOLS_CACHE:-$HOME/.cache/calico-py/tools}

GO=${GO:-/usr/local/go/bin/go}
GO_WANTED=$GO
if [ ! -x "$GO" ]; then
  GO=$(command -v go || true)
fi

complete() {  # complete DIR NAME...: every binary of a cache entry is there
  local dir=$1 name
  shift
  for name in "$@"; do
    [ -x "$dir/$name" ] || return 1
  done
}

# Temporary directories on the cache's filesystem (so the final rename is atomic), removed on
# any exit; each one's go.mod makes it a wrapper module.
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

tools_go() {  # tools_go PREFIX CMD...: a tools.go importing each command (keeps go mod tidy honest)
  local prefix=$1 cmd
  shift
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for cmd in "$@"; do
    printf '\t_ "%s/%s"\n' "$prefix" "$cmd"
  done
  printf ')\n'
}

# build_kube_commands DIR NAME CMD...: k8s.io/kubernetes/cmd/CMD... at KUBE_VERSION into DIR.
# k8s.io/kubernetes cannot be `go install`ed: its go.mod requires its staging modules as
# v0.0.0 with `replace => ./staging/...`, which Go ignores outside that module, so the wrapper
# module points each at the published v0.<minor>.<patch> instead.
build_kube_commands() {
  local dir=$1 name=$2 work ldflags pkg date mod cmd
  shift 2
  new_tmp "$name-$KUBE_VERSION"
  work=$WORK
  log "building $* $KUBE_VERSION in $work (nice 19; cold: minutes)"
  (
    cd "$work"
    "$GO" mod init "calico-py-$name-build" >/dev/null 2>&1
    nice -n 19 "$GO" get "k8s.io/kubernetes@$KUBE_VERSION"
    mod=$("$GO" env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod
    for pkg in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$mod"); do
      "$GO" mod edit "-replace=$pkg=$pkg@$STAGING_VERSION"
    done
    tools_go k8s.io/kubernetes/cmd "$@" >tools.go
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
    for cmd in "$@"; do
      # CGO_ENABLED=0 works for every one of them, the kubelet too (upstream builds it with cgo).
      gobuild -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "bin/$cmd" \
        "k8s.io/kubernetes/cmd/$cmd"
    done
    "bin/$1" --version
  )
  publish "$work/bin" "$dir"
}
