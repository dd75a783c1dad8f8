"""Facts of a function's `_func` record beyond names and lines: its funcID and frame sizes.

Which functions Go's tracebacks leave out: compiler-generated wrappers (`FuncIDWrapper`).

A `go f(x)` statement runs through a generated closure (`main.g.func1` up to Go 1.21,
`main.g.gowrap1` from 1.22) that Go's own stack dumps never show; neither do method-value and
ABI wrappers. The runtime knows them by the funcID byte of their `_func` record. FuncIDWrapper
is always the entry right after `FuncID_systemstack_switch` in the enum (1.19 to 1.27), whose
numbering otherwise changes between releases, so its value is read from this binary.

Frame sizes (the pcsp table) let a goroutine in a system call be unwound on Go < 1.23, which
does not save the frame pointer at syscalls: from `g.syscallsp` and the frame size at
`g.syscallpc`, the caller's frame pointer is found where the function's prologue stored it.
The record layout is parsed by gotrace.binary.pclntab; this module reads the two more fields.
"""

from __future__ import annotations

import struct

from gotrace.binary.pclntab import Pclntab


def func_ids(pcln: Pclntab) -> list[int]:
    """The funcID byte of every function, in table order.

    `_func` ends with {funcID u8, flag u8, _ u8, nfuncdata u8} in every layout since Go 1.18.
    """
    buf = pcln._buf  # pclntab internals: the record layout is parsed there
    base = pcln._hdr.pcln
    at = pcln._func_size - 4
    return [buf[base + fo + at] for fo in pcln._func_offs[: len(pcln.functions())]]


def wrapper_functions(pcln: Pclntab) -> frozenset[str]:
    """Names of the functions marked FuncIDWrapper; empty when the marker cannot be found."""
    funcs = pcln.functions()
    try:
        ids = func_ids(pcln)
    except (IndexError, AttributeError):
        return frozenset()
    anchor = pcln.lookup("runtime.systemstack_switch")
    if anchor is None:
        return frozenset()
    index = {f.entry: i for i, f in enumerate(funcs)}
    i = index.get(anchor.entry)
    if i is None:
        return frozenset()
    wrapper = ids[i] + 1
    return frozenset(f.name for f, fid in zip(funcs, ids, strict=True) if fid == wrapper)


def frame_size(pcln: Pclntab, pc: int) -> int | None:
    """Bytes of stack the function at `pc` uses there (its pcsp table), or None if unknown.

    At a return address `pc` in a function whose SP is `sp`, the caller's return PC is at
    `sp + size` and, when size > 0, the saved frame pointer just below it.
    """
    i = pcln._index_at(pc)
    if i is None:
        return None
    try:
        p = pcln._hdr.pcln + pcln._func_offs[i]
        (pcsp,) = struct.unpack_from("<I", pcln._buf, p + 16)
        entry = pcln.text_start + pcln._entry_offs[i]
        size = pcln._pcvalue(pcsp, entry, pc)
    except (struct.error, IndexError, ValueError):
        return None
    return size if size >= 0 else None
