"""Shared fixtures: Go test binaries built once per session (and cached across sessions)."""

from __future__ import annotations

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
