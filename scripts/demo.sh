#!/usr/bin/env bash
# The main job: install what is needed, then `calico-lab demo`: a node (a network namespace)
# running calico-ipamd and calico-felix, a few labelled pods plumbed by the real `calico` CNI
# plugin, the reachability matrix, a policy, the matrix again, and the lab taken down.
# `--nodes 3` spreads the pods over three nodes that route to each other over BGP.
# Needs root (network namespaces); changes nothing in the host's own network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/calico-lab demo "$@"
