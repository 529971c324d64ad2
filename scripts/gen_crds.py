"""Write k8s/crds/calico-crds.yaml: every Calico CRD, from libcalico/resources/crds.py.

One multi-document file is what the lab and the tests apply (`kubectl apply -f`) and what a
user installs. It is generated, not hand-written, because the twenty CRDs differ only in kind,
plural, scope and whether they have a status: a table cannot drift where twenty copies can.
`--check` fails when the committed file differs from what the table makes (a test runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libcalico.resources.crds import crd_manifests  # noqa: E402

OUT = ROOT / "k8s" / "crds" / "calico-crds.yaml"
HEADER = (
    "# Calico's custom resource definitions (crd.projectcalico.org/v1).\n"
    "# Generated from libcalico/resources/crds.py by scripts/gen_crds.py. Do not edit.\n"
)


def render() -> str:
    documents = [yaml.safe_dump(m, sort_keys=False) for m in crd_manifests()]
    return HEADER + "".join(f"---\n{doc}" for doc in documents)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python scripts/gen_crds.py")
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(crd_manifests())} CRDs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
