"""Many uprobes as one BPF link (BPF_TRACE_UPROBE_MULTI, Linux 6.6+), which BCC does not offer.

attach probes each `go` statement until it walked a creation stack (live/tracer.py). Taking a
uprobe off waits for an RCU grace period, and the kernel does that one probe at a time under a
global lock for perf-event uprobes (~0.1 s each here: 68 probes took 7 s to close). A
uprobe_multi link holds them all and waits once when closed, so a set of probes is replaced by
a smaller one in ~0.1 s.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Sequence

BPF_LINK_CREATE = 28
BPF_TRACE_UPROBE_MULTI = 48  # enum bpf_attach_type; also the program's expected_attach_type
_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())


class _UprobeMultiAttr(ctypes.Structure):
    """union bpf_attr, link_create with its uprobe_multi member (include/uapi/linux/bpf.h)."""

    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("path", ctypes.c_uint64),
        ("offsets", ctypes.c_uint64),
        ("ref_ctr_offsets", ctypes.c_uint64),
        ("cookies", ctypes.c_uint64),
        ("cnt", ctypes.c_uint32),
        ("multi_flags", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("_pad", ctypes.c_uint8 * 68),  # the rest of union bpf_attr's 128 bytes, zeroed
    ]


_libc = ctypes.CDLL(None, use_errno=True)


def attach(prog_fd: int, path: str, offsets: Sequence[int], pid: int) -> int:
    """A link fd holding one uprobe at each file offset of path, for process pid alone.
    Raises OSError (ENOSYS, EINVAL...) where the kernel has no uprobe_multi links."""
    if _SYS_BPF is None:
        raise OSError(38, "no bpf system call number for this machine")
    path_b = ctypes.create_string_buffer(path.encode())
    offs = (ctypes.c_uint64 * len(offsets))(*offsets)
    attr = _UprobeMultiAttr(prog_fd=prog_fd, attach_type=BPF_TRACE_UPROBE_MULTI,
                            path=ctypes.addressof(path_b), offsets=ctypes.addressof(offs),
                            cnt=len(offsets), pid=pid)
    fd = int(_libc.syscall(_SYS_BPF, BPF_LINK_CREATE, ctypes.byref(attr),
                           ctypes.sizeof(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd
