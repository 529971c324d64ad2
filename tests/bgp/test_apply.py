"""ConfigApplier with the real `bird -p`, BIRD not running (the reload path is exercised by the
cluster tests, where BIRD runs inside a namespace)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.bgp.apply import ConfigApplier
from services.bgp.intent import build_intent
from services.bgp.render import RenderOptions, config_sha256, render_config
from services.bgp.supervisor import BirdPaths
from tests.bgp.objects import THREE_NODES, cluster


@pytest.fixture
def paths(tmp_path: Path) -> BirdPaths:
    if shutil.which("bird") is None:
        print("SKIP: bird (BIRD 2) is not installed")
        pytest.skip("bird (BIRD 2) is not installed")
    return BirdPaths(tmp_path / "bird")


def good_text(paths: BirdPaths, extra: str = "") -> str:
    intent = build_intent(cluster(*THREE_NODES), "n1")
    return render_config(intent, RenderOptions(str(paths.directory), extra_config=extra))


async def test_first_apply_writes_then_unchanged_writes_nothing(paths: BirdPaths) -> None:
    applier = ConfigApplier(paths)
    text = good_text(paths)
    first = await applier.apply(text, bird_running=False)
    assert first.ok and first.reloaded and first.config_sha256 == config_sha256(text)
    assert paths.config.read_text() == text
    mtime = paths.config.stat().st_mtime_ns
    again = await applier.apply(text, bird_running=False)
    assert again.ok and not again.reloaded
    assert paths.config.stat().st_mtime_ns == mtime
    # A new calico-bgpd on the same directory knows the file on disk.
    assert ConfigApplier(paths).current_sha == config_sha256(text)


async def test_rejected_config_keeps_the_last_good_one(paths: BirdPaths) -> None:
    applier = ConfigApplier(paths)
    good = good_text(paths)
    await applier.apply(good, bird_running=False)
    bad = good_text(paths, extra="protocol bogus {}\n")
    result = await applier.apply(bad, bird_running=False)
    assert not result.ok and not result.reloaded
    assert "bogus" in result.error or "syntax error" in result.error
    assert paths.config.read_text() == good
    assert applier.remembered(result)
    # The same text is not checked again: the candidate file is left as it was.
    candidate_mtime = paths.candidate.stat().st_mtime_ns
    repeat = await applier.apply(bad, bird_running=False)
    assert repeat == result and paths.candidate.stat().st_mtime_ns == candidate_mtime
    # A good text afterwards applies.
    fixed = good_text(paths, extra="# fixed\n")
    assert (await applier.apply(fixed, bird_running=False)).ok
    assert paths.config.read_text() == fixed


async def test_first_config_rejected_leaves_no_config(paths: BirdPaths) -> None:
    applier = ConfigApplier(paths)
    result = await applier.apply("router id nonsense;\n", bird_running=False)
    assert not result.ok and not paths.config.exists() and not applier.has_config
