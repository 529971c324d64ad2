#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine, idempotently:
# Debian packages (etcd, nftables, iptables, ipset, BIRD, GoBGP, CNI reference plugins,
# iperf3 and ethtool for benchmarks/overlay.py), the virtual environment in .venv/ with the
# project and its dev tools, cnitool, and a real kube-apiserver + kubectl + etcd 3.7
# (scripts/build-kube.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev sqlite3 iproute2
  etcd-server etcd-client
  nftables python3-nftables iptables ipset conntrack
  bird2 gobgpd containernetworking-plugins
  podman runc busybox-static openssl gcc libc6-dev
  iperf3 ethtool
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own Python 3.11, so python3-nftables (a Debian-only package) can be linked in.
PY=/usr/bin/python3.11
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project and its dev tools into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The nftables Python binding ships only as a Debian package: expose it to the venv.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -d /usr/lib/python3/dist-packages/nftables ] && [ ! -e "$site/nftables" ]; then
  ln -s /usr/lib/python3/dist-packages/nftables "$site/nftables"
fi
# cnitool (libcni's test client, not packaged by Debian) for tests/cni_runtimes: built from the
# Go module proxy into .venv/bin at a pinned version.
CNITOOL_VERSION=v1.3.0
GO=${GO:-/usr/local/go/bin/go}
if [ ! -x .venv/bin/cnitool ]; then
  if [ -x "$GO" ]; then
    echo "setup: installing cnitool $CNITOOL_VERSION"
    GOBIN="$PWD/.venv/bin" "$GO" install "github.com/containernetworking/cni/cnitool@$CNITOOL_VERSION"
  else
    echo "setup: no Go toolchain at $GO: cnitool not installed (tests/cni_runtimes will skip)"
  fi
fi
# kube-apiserver, kubectl and the etcd 3.7 it needs (tests/kube, the Kubernetes datastore),
# built from the Go module proxy into a versioned cache outside the checkout and linked into
# .venv/bin; minutes the first time, a second later. Without Go it says so and goes on.
GO="$GO" bash scripts/build-kube.sh
echo "setup: ready (.venv/bin has calicoctl and the services)"
