#!/usr/bin/env bash
# Builds the project's container images with podman, without any registry (images/README.md):
#   1. localhost/calico-py/debian-minbase:bookworm  debootstrap --variant=minbase, podman import
#      (skipped when the image exists)
#   2. localhost/calico-py/python-base:bookworm     Debian's python3 + a venv holding the
#      project's dependencies, installed from wheels downloaded on the host (no HTTPS inside)
#   3. one image per service, localhost/calico-py/<name>:<version> and :latest, each installing
#      the project's wheel (built here from the working tree)
# Podman's layer cache makes a rebuild with unchanged sources take seconds; a cold build is
# about a minute and a half (images/README.md has the measured figures).
#
#   bash scripts/build-images.sh [NAME...]      # default: every image
# Environment: CALICO_IMAGES_CACHE (default ~/.cache/calico-py/images) holds the wheels and the
# containers.conf used when CONTAINERS_CONF is not set; DEBIAN_MIRROR (default: the host's).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
START=$(date +%s.%N)

ALL_IMAGES=(calico-ipamd calico-felix calico-bgpd calico-typha calico-kube-controllers calico-cni)
# For docker-compose.yml only: etcd (Debian's) and a tiny OTLP trace receiver.
ALL_IMAGES+=(etcd otlp-receiver)
IMAGES=("$@")
((${#IMAGES[@]})) || IMAGES=("${ALL_IMAGES[@]}")
for name in "${IMAGES[@]}"; do
  [ -f "images/$name/Containerfile" ] || { echo "build-images: no images/$name/Containerfile" >&2; exit 2; }
done

PREFIX=localhost/calico-py
MINBASE=$PREFIX/debian-minbase:bookworm
PYBASE=$PREFIX/python-base:bookworm
CACHE=${CALICO_IMAGES_CACHE:-$HOME/.cache/calico-py/images}
mkdir -p "$CACHE"

log() { printf 'build-images: %s\n' "$*"; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }

# pip on the host downloads the dependency wheels and builds the project's (the project's venv
# when scripts/setup.sh made one, else Debian's python3-pip).
PIP=${PIP:-}
if [ -z "$PIP" ]; then
  if [ -x .venv/bin/pip ]; then PIP=$REPO/.venv/bin/pip; else PIP="python3 -m pip"; fi
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
need_apt=()
[ "$PIP" != "python3 -m pip" ] || python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v git >/dev/null || need_apt+=(git)
command -v podman >/dev/null || need_apt+=(podman runc)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The host's quirks (../shared/ENVIRONMENT.md): root lacks CAP_SYS_RESOURCE, so explicit ulimits;
# crun refuses hybrid cgroups, so runc. Nothing under /etc is written.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF=$CACHE/containers.conf
  cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
EOF
fi

VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || REVISION="$REVISION-dirty"
SOURCE=$(git config --get remote.origin.url 2>/dev/null || echo "file://$REPO")

# --- 1. the Debian base, from the mirror the host's apt uses ----------------------------------
if podman image exists "$MINBASE"; then
  log "$MINBASE present (cached)"
else
  t=$(date +%s.%N)
  mirror=${DEBIAN_MIRROR:-$(grep -rhoE '^(URIs:|deb) +http[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | head -1 | awk '{print $2}' || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /var/tmp/calico-minbase.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs/root" "$mirror" >"$rootfs/debootstrap.log" 2>&1 \
    || { tail -20 "$rootfs/debootstrap.log" >&2; exit 1; }
  # Slim as Debian's own -slim images: no docs (copyright kept), man pages, locales, apt caches;
  # the dpkg excludes keep later apt-get installs slim too.
  cat >"$rootfs/root/etc/dpkg/dpkg.cfg.d/calico-py-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  cat >"$rootfs/root/etc/apt/apt.conf.d/calico-py-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
  find "$rootfs/root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$rootfs/root/usr/share/man/"* "$rootfs/root/usr/share/info/"* \
    "$rootfs/root/var/cache/apt/"*.bin "$rootfs/root/var/cache/apt/archives/"*.deb \
    "$rootfs/root/var/lib/apt/lists/"*
  find "$rootfs/root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  tar -C "$rootfs/root" --numeric-owner -cf - . | podman import \
    --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$MINBASE" >/dev/null
  rm -rf "$rootfs"; trap - EXIT
  log "$MINBASE built in $(elapsed "$t") s"
fi

# --- 2. wheels, downloaded on the host --------------------------------------------------------
CTX=$REPO/build/images/context
mkdir -p "$CTX/wheels/deps" "$CTX/wheels/project"
requirements=$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
deps_dir=$CACHE/wheels-$(printf '%s' "$requirements" | sha256sum | cut -c1-16)
if [ ! -f "$deps_dir/.complete" ]; then
  t=$(date +%s.%N)
  rm -rf "$deps_dir"; mkdir -p "$deps_dir"
  printf '%s\n' "$requirements" >"$deps_dir/requirements.in"
  # Binary wheels for the image's interpreter (Debian bookworm: CPython 3.11, glibc 2.36).
  $PIP download -q --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux_2_36_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any \
    -d "$deps_dir" -r "$deps_dir/requirements.in" pip
  touch "$deps_dir/.complete"
  log "dependency wheels downloaded in $(elapsed "$t") s"
fi
rm -rf "$CTX/wheels/deps"; mkdir -p "$CTX/wheels/deps"
cp "$deps_dir"/*.whl "$deps_dir/requirements.in" "$CTX/wheels/deps/"
(cd "$CTX/wheels/deps" && sha256sum ./*.whl requirements.in) >"$CTX/deps.lock"

# The project's wheel from the working tree (tracked and new files, not ignored ones), with
# file times from the last commit: unchanged sources give a byte-identical wheel, so podman's
# layer cache holds.
t=$(date +%s.%N)
src=$(mktemp -d /var/tmp/calico-wheel.XXXXXX)
git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$src" -xf -
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 315532800)
rm -f "$CTX/wheels/project/"*.whl
# Without build isolation when this pip's environment has setuptools (no index needed).
isolation=""
pip_python=$(dirname "${PIP%% *}")/python
[ "$PIP" = "python3 -m pip" ] && pip_python=python3
"$pip_python" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 68)' 2>/dev/null \
  && isolation=--no-build-isolation
(cd "$src" && SOURCE_DATE_EPOCH=$epoch $PIP wheel -q --no-deps $isolation -w "$CTX/wheels/project" . >"$src/.wheel.log" 2>&1) \
  || { cat "$src/.wheel.log" >&2; rm -rf "$src"; exit 1; }
rm -rf "$src"
(cd "$CTX/wheels/project" && sha256sum ./*.whl) >"$CTX/project.lock"
# Files an image copies from its own images/<name>/ directory (the OTLP receiver's script).
mkdir -p "$CTX/otlp-receiver"
cp images/otlp-receiver/otlp_receiver.py "$CTX/otlp-receiver/"
log "project wheel built in $(elapsed "$t") s ($(cut -c1-12 "$CTX/project.lock"))"

BUILD=(podman build --pull=never --format docker --network host --layers)

# --- 3. the Python base ------------------------------------------------------------------------
t=$(date +%s.%N)
"${BUILD[@]}" -q -f images/python-base/Containerfile --build-arg "MINBASE=$MINBASE" -t "$PYBASE" "$CTX" >/dev/null
log "$PYBASE ready in $(elapsed "$t") s"

# --- 4. the services ---------------------------------------------------------------------------
for name in "${IMAGES[@]}"; do
  t=$(date +%s.%N)
  "${BUILD[@]}" -q -f "images/$name/Containerfile" \
    --build-arg "MINBASE=$MINBASE" --build-arg "PYBASE=$PYBASE" --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE" \
    -t "$PREFIX/$name:$VERSION" -t "$PREFIX/$name:latest" "$CTX" >/dev/null
  size=$(podman image inspect --format '{{.Size}}' "$PREFIX/$name:$VERSION")
  log "$PREFIX/$name:$VERSION ready in $(elapsed "$t") s ($((size / 1000000)) MB)"
done
# Earlier builds' untagged images stay (a global `podman image prune` could hit other users'
# builds in progress); `podman image prune` by hand reclaims them.
log "all done in $(elapsed "$START") s"
