"""The target process as seen from /proc: identity, its executable, load bias, memory.

The executable is always reached through /proc/PID/exe, never by the path the target sees:
in a container that path belongs to another mount namespace.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from gotrace.binary.elf import ElfImage
from gotrace.errors import BadInput, CannotTrace


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one that reuses its PID."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = stat[stat.rfind(b")") + 2 :].split()
    if rest[0] in (b"Z", b"X"):  # exited, not yet reaped by its parent
        return None
    return int(rest[19])


@dataclass
class Target:
    pid: int
    exe: str  # /proc/PID/exe: opens the right file in any mount namespace
    exe_display: str  # the path as the target itself sees it
    start_time: int

    @classmethod
    def find(cls, pid: int) -> Target:
        if pid <= 0:
            raise BadInput(f"invalid PID {pid}")
        start = _start_time(pid)
        if start is None:
            raise BadInput(f"no process with PID {pid}")
        exe = f"/proc/{pid}/exe"
        try:
            display = os.readlink(exe)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                hint = ("it belongs to another user namespace or is protected" if os.geteuid() == 0
                        else "run as root: sudo gotrace ...")
                raise CannotTrace(f"cannot read /proc/{pid}/exe: permission denied ({hint})") \
                    from None
            raise BadInput(f"PID {pid} has no executable (a kernel thread or a zombie)") from None
        return cls(pid, exe, display, start)

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start_time

    def load_bias(self, img: ElfImage) -> int:
        """Runtime address minus link-time address of the executable (0 unless PIE).

        Taken from the mapping of its first PT_LOAD, recognised by inode or, where a filesystem
        (overlayfs in containers) shows another inode in maps than stat does, by the path the
        target sees.
        """
        if not img.is_pie or not img.segments:
            return 0
        first = min(img.segments, key=lambda s: s.vaddr)
        try:
            st = os.stat(self.exe)
            with open(f"/proc/{self.pid}/maps") as f:
                for line in f:
                    parts = line.split(maxsplit=5)
                    if len(parts) < 6:
                        continue
                    off = int(parts[2], 16)
                    if off != first.offset & ~0xFFF:
                        continue
                    path = parts[5].rstrip("\n").removesuffix(" (deleted)")
                    if int(parts[4]) == st.st_ino or path == self.exe_display.removesuffix(
                            " (deleted)"):
                        start = int(parts[0].split("-")[0], 16)
                        return start - (first.vaddr & ~0xFFF)
        except (OSError, ValueError):
            pass
        return 0

    def namespaces(self) -> Namespaces:
        """Whether the target lives in its own mount / PID namespace (a container)."""
        return Namespaces(
            own_mount=_ns_differs(self.pid, "mnt"),
            own_pid=_ns_differs(self.pid, "pid"),
            inner_pid=_inner_pid(self.pid),
        )


@dataclass(frozen=True)
class Namespaces:
    own_mount: bool | None  # None: could not tell (no permission)
    own_pid: bool | None
    inner_pid: int | None  # its PID as seen inside its own PID namespace (NSpid)

    @property
    def container(self) -> bool:
        return bool(self.own_mount or self.own_pid)


def _ns_differs(pid: int, kind: str) -> bool | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino != os.stat(f"/proc/self/ns/{kind}").st_ino
    except OSError:
        return None


def _inner_pid(pid: int) -> int | None:
    """Last NSpid of /proc/PID/status: the innermost namespace's view of this process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class ProcessMemory:
    """Reads the target's memory through /proc/PID/mem without stopping it.

    Memory changes under our feet and pages can vanish: failures are counted, never raised.
    """

    def __init__(self, pid: int) -> None:
        try:
            self._fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                raise CannotTrace(f"cannot read the memory of PID {pid}: permission denied "
                                  "(run as root, or check kernel.yama.ptrace_scope)") from None
            raise BadInput(f"no process with PID {pid}") from None
        self.failed_reads = 0

    def read(self, addr: int, size: int) -> bytes | None:
        try:
            data = os.pread(self._fd, size, addr)
        except (OSError, OverflowError, ValueError):
            self.failed_reads += 1
            return None
        if len(data) != size:
            self.failed_reads += 1
            return None
        return data

    def u64(self, addr: int) -> int | None:
        data = self.read(addr, 8)
        return None if data is None else int.from_bytes(data, "little")

    def close(self) -> None:
        os.close(self._fd)
