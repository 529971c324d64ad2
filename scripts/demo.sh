#!/usr/bin/env bash
# The main job as far as it exists: install, then store resources with calicoctl in a fresh
# embedded datastore and read them back.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export DATASTORE_TYPE=embedded CALICO_DATASTORE_PATH="$work/calico.db"

set -x
calicoctl apply -f docs/examples/quickstart.yaml
calicoctl get ippools -o wide
calicoctl get globalnetworkpolicies -o wide
calicoctl get networkpolicy -n shop -o yaml
calicoctl get networkpolicy.networking.k8s.io -A
calicoctl get pods -n shop -o wide
