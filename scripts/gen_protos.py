"""Generate the Python code for every .proto under protos/ into calico/ (one command).

`--check` regenerates into a temporary folder and fails when calico/ differs: CI runs it so
the committed generated code never goes stale.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "calico"
HEADER = '"""Generated from protos/ by scripts/gen_protos.py. Do not edit."""\n'
# The mypy-protobuf plugins live next to this interpreter (the venv's bin/), which need not be
# on PATH when the script runs as `.venv/bin/python scripts/gen_protos.py`. No resolve(): the
# venv's python is a symlink to the system interpreter.
BIN = Path(sys.executable).parent


def generate(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    if not files:
        return
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)
    # protoc writes into out/calico/...; make every folder a package.
    gen_root = out / "calico"
    for d in [gen_root, *[p for p in gen_root.rglob("*") if p.is_dir()]]:
        init = d / "__init__.py"
        if not init.exists():
            init.write_text(HEADER)


def tree_differs(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])

    def walk(c: filecmp.dircmp[str], prefix: str) -> None:
        diffs.extend(prefix + n for n in c.left_only + c.right_only + c.diff_files)
        for name, sub in c.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(cmp, "")
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if calico/ is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "calico"
        if args.check:
            if not fresh.exists() and not OUT.exists():
                return 0
            diffs = tree_differs(fresh, OUT) if OUT.exists() else ["calico/ missing"]
            if diffs:
                print("generated protobuf code is stale; run scripts/gen_protos.py:", *diffs)
                return 1
            print("generated protobuf code is fresh")
            return 0
        if OUT.exists():
            shutil.rmtree(OUT)
        if fresh.exists():
            shutil.copytree(fresh, OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
