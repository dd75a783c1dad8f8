"""The per-build-ID cache of derived facts: same facts as a fresh read, and never a stale or
foreign entry (a probe at a wrong address would corrupt the target)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from gotrace.binary import cache
from gotrace.binary.elf import ElfImage
from gotrace.binary.gobinary import GoBinary
from tests.gobuild import GO_VERSIONS, PGO_VARIANT, GoBuild, version_key

NEWEST = max(GO_VERSIONS, key=version_key)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("GOTRACE_BINARY_CACHE", str(d))
    return d


def facts(gb: GoBinary) -> dict[str, object]:
    return {
        "go_version": gb.go_version, "minor": gb.minor, "offsets": asdict(gb.offsets),
        "wait_reasons": gb.wait_reasons, "wait_reason_source": gb.wait_reason_source,
        "hooks": gb.hooks, "inlined": gb.inlined, "warnings": gb.warnings(),
    }


@pytest.mark.parametrize("variant", ["plain", "stripped", "cgo-pie", PGO_VARIANT])
def test_cached_facts_equal_fresh_ones(go_build: GoBuild, cache_dir: Path, variant: str) -> None:
    path = str(go_build(NEWEST, variant))
    fresh = GoBinary.open(path, use_cache=False)
    first = GoBinary.open(path)
    second = GoBinary.open(path)
    assert not fresh.from_cache and not first.from_cache and second.from_cache
    assert facts(second) == facts(fresh) == facts(first)
    assert len(list(cache_dir.glob("*.json"))) == 1


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_every_release_has_a_build_id(go_build: GoBuild, version: str) -> None:
    with ElfImage(str(go_build(version, "stripped"))) as img:
        go, _ = cache.build_ids(img)
        assert go.count("/") >= 1  # actionID/contentID
        assert cache.cache_key(img) is not None


def test_changed_probe_bytes_are_a_miss(go_build: GoBuild, cache_dir: Path,
                                        tmp_path: Path) -> None:
    """Same build ID and size, other bytes where a probe goes: the entry must not be used."""
    binary = tmp_path / "prog"
    shutil.copy(go_build(NEWEST, "stripped"), binary)
    gb = GoBinary.open(str(binary))
    park = next(h for h in gb.hooks if h.event == "park")
    off = gb.img.vaddr_to_offset(park.addr)
    gb.img.close()
    assert off is not None
    data = bytearray(binary.read_bytes())
    data[off] ^= 0xFF
    binary.write_bytes(bytes(data))
    with ElfImage(str(binary)) as img:
        assert cache.entry_path(img) is not None and cache.entry_path(img).exists()  # type: ignore[union-attr]
        assert cache.load(img) is None


def test_other_gotrace_code_is_another_key(go_build: GoBuild, cache_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with ElfImage(str(go_build(NEWEST, "stripped"))) as img:
        key = cache.cache_key(img)
        monkeypatch.setattr(cache, "_code_digest", lambda: "another gotrace")
        assert cache.cache_key(img) not in (None, key)


def test_entries_writable_by_others_are_ignored(go_build: GoBuild, cache_dir: Path) -> None:
    path = str(go_build(NEWEST, "stripped"))
    GoBinary.open(path)
    (entry,) = cache_dir.glob("*.json")
    os.chmod(entry, 0o666)
    assert not GoBinary.open(path).from_cache
    # Re-deriving wrote a fresh, trusted entry in its place.
    assert GoBinary.open(path).from_cache


def test_garbage_entry_is_a_miss(go_build: GoBuild, cache_dir: Path) -> None:
    path = str(go_build(NEWEST, "stripped"))
    GoBinary.open(path)
    (entry,) = cache_dir.glob("*.json")
    for text in ("not json", "[]", json.dumps({"format": cache.FORMAT}),
                 json.dumps(dict(json.loads(entry.read_text()), hooks=[{"event": 1}]))):
        entry.write_text(text)
        gb = GoBinary.open(path, use_cache=True)
        assert not gb.from_cache and len(gb.hooks) == 4


def test_cache_off(go_build: GoBuild, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOTRACE_BINARY_CACHE", "off")
    path = str(go_build(NEWEST, "stripped"))
    assert not GoBinary.open(path).from_cache
    assert not GoBinary.open(path).from_cache
    with ElfImage(path) as img:
        assert cache.entry_path(img) is None


def test_no_build_id_no_cache(go_build: GoBuild, cache_dir: Path, tmp_path: Path) -> None:
    data = bytearray(go_build(NEWEST, "stripped").read_bytes())
    with ElfImage(str(go_build(NEWEST, "stripped"))) as img:
        notes = [img.section_file_range(n) for n in (".note.go.buildid", ".note.gnu.build-id")]
    for fr in notes:  # the notes' owner names are no longer "Go" and "GNU"
        if fr is not None:
            data[fr[0] + 12 : fr[0] + 14] = b"Xx"
    binary = tmp_path / "nobuildid"
    binary.write_bytes(bytes(data))
    with ElfImage(str(binary)) as img:
        assert cache.build_ids(img) == ("", "")
        assert cache.cache_key(img) is None
    assert not GoBinary.open(str(binary)).from_cache
    assert not list(cache_dir.glob("*.json"))
