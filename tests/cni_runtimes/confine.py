"""Run a runtime (cnitool, podman) so that what it keeps under /var/lib (libcni's cache in
/var/lib/cni, podman's /var/lib/containers/cache) lands in a test's temp dir instead.

The command runs in a mount namespace of its own where a temp dir is bind-mounted over
/var/lib. `--propagation unchanged` keeps /run/netns shared with the host (`ip netns add` makes
it a shared mount), so network namespaces podman creates there stay visible to Felix; the root
mount is made private first, so the bind over /var/lib never reaches the host.
"""

from __future__ import annotations

import shutil
from pathlib import Path

_SCRIPT = 'mount --make-private / && mount --bind "$0" /var/lib && exec "$@"'


def missing_tools() -> str:
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return ""


def with_private_var_lib(state_dir: Path, argv: list[str]) -> list[str]:
    state_dir.mkdir(parents=True, exist_ok=True)
    return ["unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c", _SCRIPT,
            str(state_dir), *argv]  # fmt: skip
