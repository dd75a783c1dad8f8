"""Tests of scripts/vmtest itself (as root; part of the suite, so CI runs them).

The argument split, the initramfs archive and the guest's command are checked directly; one
real boot checks the exit code, the overlay (guest writes never reach the host), the guest
kernel's headers and the time limit.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "vm"))

import initramfs
import vmtest

VMTEST = vmtest.ROOT / "scripts" / "vmtest"


def test_own_options_come_first_and_the_rest_goes_to_pytest() -> None:
    o = vmtest.parse(["--timeout", "60", "--accel=tcg", "-k", "a and b", "--timeout", "9"])
    assert (o.timeout, o.accel, o.pytest_args) == (60.0, "tcg", ["-k", "a and b", "--timeout", "9"])
    o = vmtest.parse(["--", "--cpus", "1"])
    assert (o.cpus, o.pytest_args) == (2, ["--cpus", "1"])
    o = vmtest.parse(["--keep", "--memory", "2048", "tests/integration/test_attach.py"])
    assert (o.keep, o.memory, o.pytest_args) == (True, 2048, ["tests/integration/test_attach.py"])


@pytest.mark.parametrize("argv", [["--timeout", "soon"], ["--accel", "hvf"], ["--cpus"],
                                  ["--command", "true", "-k", "x"]])
def test_bad_options_are_one_line_exit_2(argv: list[str]) -> None:
    with pytest.raises(vmtest.Failure) as e:
        vmtest.parse(argv)
    assert e.value.code == 2 and "\n" not in str(e.value)


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """{name: (mode, contents)} of a newc archive, read back independently of the writer."""
    out: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + (-(pos + namesize) % 4)
        body = data[pos:pos + size]
        pos += size + (-(pos + size) % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_newc_archive_reads_back() -> None:
    a = initramfs.Newc()
    a.dir("bin")
    a.file("bin/tool", b"abcde", 0o755)
    a.symlink("bin/sh", "tool")
    a.chardev("dev/console", 5, 1)
    got = read_newc(a.finish())
    assert got["bin/tool"] == (0o100755, b"abcde")
    assert got["bin/sh"] == (0o120777, b"tool")
    assert got["bin"][0] == 0o40755
    assert got["dev/console"][0] == 0o20600


def test_guest_command_keeps_pytest_arguments_intact() -> None:
    o = vmtest.parse(["-k", "it's \"quoted\" and $HOME", "tests/x.py"])
    script = vmtest.command_script(o, "tcg")
    assert "export GOTRACE_VM_ACCEL=tcg" in script
    last = script.splitlines()[-1]
    words = shlex.split(last.removeprefix("exec ").removeprefix("set -o pipefail; "))
    assert words[1:5] == ["-m", "pytest", "-k", "it's \"quoted\" and $HOME"]
    assert words[5] == "tests/x.py"


def test_a_real_boot_returns_the_exit_code_and_leaves_the_host_untouched() -> None:
    assert os.geteuid() == 0, "booting the VM needs root (sudo)"
    tag = f"vmtest-probe-{uuid.uuid4().hex[:8]}"
    places = [vmtest.ROOT / ".pytest_cache", vmtest.ROOT / ".cache" / "bin",
              Path("/var/cache/gotrace/gocache"), Path("/tmp"), Path("/etc")]
    for p in places:  # a fresh clone may have no .pytest_cache yet: the guest writes in each
        p.mkdir(parents=True, exist_ok=True)
    writes = " && ".join(f"touch {shlex.quote(str(p / tag))}" for p in places)
    check = (f"{writes} && test -e /lib/modules/$(uname -r)/build/include/generated/autoconf.h"
             " && test -e /sys/bus/event_source/devices/uprobe/type"
             " && test -e /sys/kernel/tracing/uprobe_events && test $(id -u) = 0 && exit 7")
    proc = subprocess.run([str(VMTEST), "--timeout", "600", "--command", check],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert "exited with 7" in proc.stderr
    assert not [p for p in places if (p / tag).exists()]


def test_time_limit_kills_the_vm_with_exit_124() -> None:
    assert os.geteuid() == 0, "booting the VM needs root (sudo)"
    proc = subprocess.run([str(VMTEST), "--timeout", "60", "--command", "sleep 600"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 124, proc.stdout + proc.stderr
    assert "timed out after" in proc.stderr and "killed the VM" in proc.stderr
