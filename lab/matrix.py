"""Reachability tables of lab pods: probing every pair and printing the table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lab import netns
from lab.lab import Lab
from lab.prober import Endpoint, all_pairs, probe_pairs
from lab.state import PodState

ALLOWED = "."
BLOCKED = "X"
SELF = "-"


def endpoint_of(pod: PodState) -> Endpoint:
    return Endpoint(pod.key, str(netns.netns_path(pod.netns)), pod.ip)


def lab_endpoints(lab: Lab) -> list[Endpoint]:
    return [endpoint_of(p) for _, p in sorted(lab.state.pods.items()) if p.ip]


async def probe_all(
    endpoints: Sequence[Endpoint], port: int, protocol: str, wait: float = 1.0
) -> dict[tuple[str, str], bool]:
    return await probe_pairs(all_pairs(endpoints), port, protocol, wait)


def render(
    keys: Sequence[str],
    observed: Mapping[tuple[str, str], bool],
    title: str = "",
    expected: Mapping[tuple[str, str], bool] | None = None,
) -> str:
    """Rows are sources, columns destinations; '.' connected, 'X' blocked, '-' itself.
    With `expected`, a cell that differs is marked with '!' after it."""
    width = max([len(k) for k in keys] + [4])
    lines = [title] if title else []
    lines.append(" " * (width + 1) + " ".join(k.rjust(width) for k in keys))
    for src in keys:
        cells = []
        for dst in keys:
            if src == dst:
                cell = SELF
            elif (src, dst) not in observed:
                cell = "?"
            else:
                ok = observed[(src, dst)]
                cell = ALLOWED if ok else BLOCKED
                if expected is not None and expected.get((src, dst), ok) != ok:
                    cell += "!"
            cells.append(cell.rjust(width))
        lines.append(src.ljust(width) + " " + " ".join(cells))
    return "\n".join(lines)
