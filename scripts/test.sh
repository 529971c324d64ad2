#!/usr/bin/env bash
# The whole test suite: setup, generated-code freshness, lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== protobuf freshness"
python scripts/gen_protos.py --check

echo "== ruff"
ruff check .
ruff format --check .

echo "== mypy"
mypy

echo "== pytest"
python -m pytest -q -p no:cacheprovider --durations=30 "$@"
