"""The target process as seen from /proc: identity, its executable, load bias, memory.

The executable is always reached through /proc/PID/exe, never by the path the target sees:
in a container that path belongs to another mount namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from gotrace.binary.elf import ElfImage
from gotrace.errors import BadInput, CannotTrace


def _program_id(pid: int) -> bytes | None:
    """The process's auxiliary vector: exec gives a process a new one (a new random-bytes
    address, a new entry point), so it tells an exec from the same program running on."""
    try:
        with open(f"/proc/{pid}/auxv", "rb") as f:
            return f.read()
    except OSError:
        return None


def _stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after comm (field 3 on), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return stat[stat.rfind(b")") + 2 :].split()


def _state(pid: int) -> str:
    fields = _stat(pid)
    return fields[0].decode() if fields else ""


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one that reuses its PID."""
    fields = _stat(pid)
    if not fields or fields[0] in (b"Z", b"X"):  # exited, not yet reaped by its parent
        return None
    return int(fields[19])


@dataclass
class Target:
    pid: int
    exe: str  # /proc/PID/exe: opens the right file in any mount namespace
    exe_display: str  # the path as the target itself sees it
    start_time: int
    program_id: bytes | None = None  # /proc/PID/auxv: new at every exec (None: unreadable)

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
                raise CannotTrace(f"cannot read /proc/{pid}/exe: permission denied ({hint}; "
                                  "gotrace needs root or CAP_SYS_PTRACE)") from None
            raise BadInput(f"PID {pid} has no executable (a kernel thread or a zombie)") from None
        return cls(pid, exe, display, start, _program_id(pid))

    def alive(self) -> bool:
        """Still the process (and the program) gotrace opened: the PID may have been reused,
        or the process may have exec'd another program since."""
        return self.gone() is None

    def gone(self) -> str | None:
        """None while the process runs the program gotrace opened; else "exited" (also when
        the PID now belongs to another process) or "exec" (it runs another program now)."""
        if _start_time(self.pid) != self.start_time:
            return "exited"
        if self.program_id is not None and _program_id(self.pid) not in (None,
                                                                           self.program_id):
            return "exec"
        return None

    def stopped(self) -> bool:
        """Stopped by SIGSTOP or a debugger: its goroutines cannot run meanwhile."""
        return _state(self.pid) in ("T", "t")

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


IOV_MAX = 1024  # iovecs per process_vm_readv call (UIO_MAXIOV)
BATCH_BYTES = 64 << 20  # bytes per process_vm_readv call at most (the kernel caps a call at 2 GB)

_VmReadv = Callable[[int, int, int, int, int, int], int]


def _libc_process_vm_readv() -> _VmReadv | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        f = libc.process_vm_readv
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                  ctypes.c_ulong, ctypes.c_ulong]
    f.restype = ctypes.c_ssize_t
    return f


_vm_readv = _libc_process_vm_readv()


class ProcessMemory:
    """Reads the target's memory without stopping it: process_vm_readv, many ranges per call
    (`read_batch`), or pread on /proc/PID/mem where process_vm_readv is not permitted.

    Memory changes under our feet and pages can vanish: failures are counted, never raised.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.failed_reads = 0
        self.vm_readv: _VmReadv | None = _vm_readv  # None: pread only (not permitted, or tests)
        self.syscalls = 0  # reads issued (process_vm_readv calls and preads)
        self._fd: int | None = None
        try:
            self._fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM):
                raise BadInput(f"no process with PID {pid}") from None
            # /proc/PID/mem is root's file (0600): with CAP_SYS_PTRACE alone, only
            # process_vm_readv may read; try it on the first mapping of the process.
            if not self._vm_readv_works():
                raise CannotTrace(f"cannot read the memory of PID {pid}: permission denied "
                                  "(run as root or with CAP_SYS_PTRACE; check "
                                  "kernel.yama.ptrace_scope)") from None

    def _vm_readv_works(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/maps") as f:
                first = int(f.readline().split("-", 1)[0], 16)
        except (OSError, ValueError):
            return False
        if self.vm_readv is None:
            return False
        _, failed = self.read_batch([first], [8])
        self.failed_reads -= len(failed)
        return not failed and self.vm_readv is not None

    def read(self, addr: int, size: int) -> bytes | None:
        if self._fd is None:
            return self.read_many([(addr, size)])[0]
        self.syscalls += 1
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

    def read_batch(self, addrs: Sequence[int], sizes: Sequence[int],
                   into: bytearray | None = None) -> tuple[bytearray, list[int]]:
        """Read every range (addrs[i], sizes[i]) into one buffer, back to back: range i lands at
        sum(sizes[:i]). Returns (buffer, indices of the ranges that could not be read, whole).
        `into`: a buffer to reuse when it is large enough (fresh memory costs a page fault per
        4 KB, as much as the copy itself); it is returned, possibly longer than the data.

        process_vm_readv with up to IOV_MAX ranges per call. A call that stops short (a range
        unmapped meanwhile) tells how many bytes it copied: the ranges before that point are
        good, the one it stopped in is read again alone and, if it still fails, counted in
        failed_reads with its bytes left zero; the rest of the batch goes on after it.
        """
        n = len(addrs)
        offs = list(accumulate(sizes, initial=0))
        buf = into if into is not None and len(into) >= offs[-1] else bytearray(offs[-1])
        failed: list[int] = []
        if n == 0:
            return buf, failed
        if self.vm_readv is not None and offs[-1]:
            failed = self._vm_batch(addrs, sizes, offs, buf)
        else:
            failed = self._pread_batch(addrs, sizes, offs, buf, range(n))
        self.failed_reads += len(failed)
        return buf, failed

    def read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes | None]:
        """Each range's bytes, or None where it could not be read (batched: `read_batch`)."""
        if not ranges:
            return []
        addrs, sizes = zip(*ranges, strict=True)
        buf, failed = self.read_batch(addrs, sizes)
        view = memoryview(buf)
        out: list[bytes | None] = []
        pos = 0
        for size in sizes:
            out.append(bytes(view[pos : pos + size]))
            pos += size
        for i in failed:
            out[i] = None
        return out

    def _pread_batch(self, addrs: Sequence[int], sizes: Sequence[int], offs: list[int],
                     buf: bytearray, which: Sequence[int]) -> list[int]:
        failed = []
        view = memoryview(buf)
        for i in which:
            size = sizes[i]
            if not size:
                continue
            self.syscalls += 1
            try:
                got = -1 if self._fd is None else \
                    os.preadv(self._fd, [view[offs[i] : offs[i] + size]], addrs[i])
            except (OSError, OverflowError, ValueError):
                got = -1
            if got != size:
                failed.append(i)
        return failed

    def _vm_batch(self, addrs: Sequence[int], sizes: Sequence[int], offs: list[int],
                  buf: bytearray) -> list[int]:
        vm = self.vm_readv
        assert vm is not None
        n = len(addrs)
        cbuf = (ctypes.c_char * max(1, len(buf))).from_buffer(buf)
        base = ctypes.addressof(cbuf)
        # iovec arrays for the whole batch, laid out as (base, len) pairs of u64.
        local = array("Q", bytes(16 * n))
        remote = array("Q", bytes(16 * n))
        local[0::2] = array("Q", [base + o for o in offs[:-1]])
        local[1::2] = remote[1::2] = array("Q", sizes)
        try:
            remote[0::2] = array("Q", addrs)
        except OverflowError:  # an address that is not one: read those ranges one by one
            return self._pread_batch(addrs, sizes, offs, buf, range(n))
        lbase, _ = local.buffer_info()
        rbase, _ = remote.buffer_info()
        failed: list[int] = []
        i = 0
        try:
            while i < n:
                j = min(n, i + IOV_MAX)
                if offs[j] - offs[i] > BATCH_BYTES:  # at least one range per call
                    j = max(i + 1, bisect_right(offs, offs[i] + BATCH_BYTES, i, j) - 1)
                self.syscalls += 1
                got = vm(self.pid, lbase + 16 * i, j - i, rbase + 16 * i, j - i, 0)
                if got < 0:
                    err = ctypes.get_errno()
                    if err in (errno.EPERM, errno.ENOSYS, errno.EACCES):
                        # Not permitted here (seccomp, an LSM): /proc/PID/mem from now on.
                        self.vm_readv = None
                        return failed + self._pread_batch(addrs, sizes, offs, buf, range(i, n))
                    if err == errno.ESRCH:  # the process is gone
                        failed.extend(range(i, n))
                        break
                    got = 0  # EFAULT, ENOMEM: the first range failed
                if got == offs[j] - offs[i]:
                    i = j
                    continue
                # Stopped inside range k: ranges i..k-1 are whole; k again, alone.
                k = bisect_right(offs, offs[i] + got, i, j) - 1
                self.syscalls += 1
                if sizes[k] and vm(self.pid, lbase + 16 * k, 1, rbase + 16 * k, 1, 0) != sizes[k]:
                    failed.append(k)
                i = k + 1
        finally:
            del cbuf
        return failed

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
