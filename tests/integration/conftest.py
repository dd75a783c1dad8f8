"""Privileged tests: they attach real uprobes, so they need root and BPF and fail without them.

Nothing here skips for lack of privileges: on the machines this project runs on (and in CI)
root and BPF exist, and a suite that skipped there would prove nothing.
"""

from __future__ import annotations

import pytest

from gotrace.errors import GotraceError
from gotrace.live.environment import require_tracing
from tests.gobuild import EDGE_GO_VERSIONS, build_go
from tests.integration.goleaky import GO_LEAKY_SRC

GO_VERSIONS = list(EDGE_GO_VERSIONS)


@pytest.fixture(scope="session", autouse=True)
def can_trace() -> None:
    try:
        require_tracing()
    except GotraceError as e:
        pytest.fail(f"privileged tests need a machine that can trace: {e}", pytrace=False)


@pytest.fixture(scope="session", params=GO_VERSIONS)
def go_leaky(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(Go version, path of go-leaky built with it)."""
    version: str = request.param
    return version, str(build_go(version, GO_LEAKY_SRC, "plain"))
