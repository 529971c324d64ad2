"""Install the CNI plugin launchers (`calico`, `calico-ipam`) into a CNI bin directory.

A console-script wrapper starts Python with `site` (venv and editable-install path hooks: ~13
ms per exec here); a runtime execs the plugin once per pod and command. The launcher written
here runs the venv's interpreter with `-S -E` (no site, no PYTHON* variables), puts the repo
root on sys.path by hand and calls the plugin's main(): the plugins need nothing outside the
standard library's built-in modules.

    python -m cni_client.install /opt/cni/bin
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGINS = {"calico": "cni_client.calico", "calico-ipam": "cni_client.calico_ipam"}


def launcher_text(module: str, python: str | None = None, root: Path = REPO_ROOT) -> str:
    # One combined flag word: the kernel passes everything after the interpreter as one argument.
    interpreter = python or sys.executable
    return (
        f"#!{interpreter} -SE\n"
        f"# CNI plugin launcher written by cni_client/install.py; runs {module}.main().\n"
        "import sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        f"from {module} import main\n"
        "sys.exit(main())\n"
    )


def install(
    bin_dir: str | Path, plugins: tuple[str, ...] = tuple(PLUGINS), python: str | None = None
) -> list[Path]:
    """Write one launcher per plugin into bin_dir (created if needed); return their paths.
    Writes go through a temporary name and a rename, so a runtime never execs half a file."""
    target = Path(bin_dir)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in plugins:
        path = target / name
        tmp = target / f".{name}.tmp{os.getpid()}"
        tmp.write_text(launcher_text(PLUGINS[name], python))
        tmp.chmod(0o755)
        tmp.replace(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bin_dir", help="CNI bin directory, e.g. /opt/cni/bin")
    parser.add_argument("--plugin", action="append", choices=sorted(PLUGINS), help="default: all")
    parser.add_argument("--python", help="interpreter for the shebang (default: this one)")
    args = parser.parse_args(argv)
    for path in install(args.bin_dir, tuple(args.plugin or PLUGINS), args.python):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
