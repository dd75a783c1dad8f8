"""Shared fixtures: Go test binaries built once per session (and cached across sessions)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gobuild import TARGETS, GoBuild, ToolchainUnavailable, build_go


@pytest.fixture(scope="session")
def go_build() -> GoBuild:
    """`go_build(version, variant="plain", target="hello")` -> path of the built binary.

    Skips the test when the toolchain or C compiler for that build is not available.
    """
    built: dict[tuple[str, str, str], Path] = {}

    def build(version: str, variant: str = "plain", target: str = "hello") -> Path:
        key = (version, variant, target)
        if key not in built:
            try:
                built[key] = build_go(version, TARGETS / target, variant)
            except ToolchainUnavailable as e:
                # scripts/setup installs every toolchain the suite uses: missing one is a failure.
                pytest.fail(str(e), pytrace=False)
        return built[key]

    return build


@pytest.fixture(scope="session", autouse=True)
def binary_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """gotrace's per-build-ID cache of binary facts, private to this test session: the first
    read of each test binary derives its facts, later ones (and later gotrace processes) use
    the cache, and nothing is left in /var/cache/gotrace."""
    d = tmp_path_factory.mktemp("binary-cache")
    old = os.environ.get("GOTRACE_BINARY_CACHE")
    os.environ["GOTRACE_BINARY_CACHE"] = str(d)
    yield d
    if old is None:
        del os.environ["GOTRACE_BINARY_CACHE"]
    else:
        os.environ["GOTRACE_BINARY_CACHE"] = old
