"""BCC's C code writes to file descriptor 2; the user must see gotrace's one line only."""

from __future__ import annotations

import io
import os

import pytest

from gotrace.live.tracer import capture_stderr


def test_writes_to_fd2_are_captured_not_shown(capfd: pytest.CaptureFixture[str]) -> None:
    into = io.StringIO()
    with capture_stderr(into):
        os.write(2, b"cannot attach uprobe, probe entry may not exist\n")  # as libbcc does
    os.write(2, b"after\n")
    assert into.getvalue() == "cannot attach uprobe, probe entry may not exist\n"
    assert capfd.readouterr().err == "after\n"


def test_fd2_is_restored_when_the_call_fails(capfd: pytest.CaptureFixture[str]) -> None:
    into = io.StringIO()
    with pytest.raises(RuntimeError), capture_stderr(into):
        os.write(2, b"clang: error: something\n")
        raise RuntimeError("load failed")
    os.write(2, b"visible again\n")
    assert "clang: error" in into.getvalue()
    assert capfd.readouterr().err == "visible again\n"
