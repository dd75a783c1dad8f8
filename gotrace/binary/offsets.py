"""Where the fields of `runtime.g` live: from DWARF when the binary has it, else per-minor tables.

The tables are docs/go-runtime.md#runtimeg-offsets (checked against DWARF of real builds,
amd64 = arm64). They are kept here, in one place; unit tests compare them with DWARF for every
toolchain we have, and with the document.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gotrace.binary.elf import ElfImage
from gotrace.errors import BadInput

SUPPORTED_MINORS = range(19, 28)  # Go 1.19 ... 1.27
# runtime.g is ~450 bytes in every release: an offset from DWARF beyond this is corrupt, and
# would size the memory reads of every goroutine (gotrace/live/goroutines.py).
_MAX_G_OFFSET = 1 << 12


@dataclass(frozen=True)
class GOffsets:
    """Byte offsets inside runtime.g (and runtime.m) that the probes and the memory reader use."""

    status: int  # atomicstatus (uint32; the _Gscan bit 0x1000 may be or-ed in)
    goid: int
    waitreason: int  # uint8
    gopc: int
    startpc: int
    parent_goid: int | None  # Go 1.21+
    sched_sp: int
    sched_pc: int
    sched_bp: int
    stack_lo: int = 0
    stack_hi: int = 8
    m: int = 48
    source: str = "table"
    # For reading goroutines from outside (gotrace dump, the scan at attach); None: absent.
    syscallsp: int | None = None
    syscallpc: int | None = None
    syscallbp: int | None = None  # Go 1.23+
    waitsince: int | None = None
    tracking_seq: int | None = None  # uint8, +1 at every transition out of _Grunning

    def as_cflags(self) -> list[str]:
        flags = [
            f"-DG_STATUS_OFF={self.status}",
            f"-DG_GOID_OFF={self.goid}",
            f"-DG_WAITREASON_OFF={self.waitreason}",
            f"-DG_GOPC_OFF={self.gopc}",
            f"-DG_STARTPC_OFF={self.startpc}",
        ]
        if self.parent_goid is not None:
            flags.append(f"-DG_PARENT_GOID_OFF={self.parent_goid}")
        # The creation facts sit close together in g: the create probe reads them in one go.
        fields = [self.goid, self.gopc, self.startpc]
        if self.parent_goid is not None:
            fields.append(self.parent_goid)
        lo, hi = min(fields), max(fields) + 8
        if hi - lo <= 256 and all(f % 8 == lo % 8 for f in fields):
            flags += [f"-DG_SPAN_LO={lo}", f"-DG_SPAN_LEN={hi - lo}"]
        return flags


def _row(status: int, goid: int, wr: int, gopc: int, parent: int | None, startpc: int,
         bp: int) -> GOffsets:
    return GOffsets(status=status, goid=goid, waitreason=wr, gopc=gopc, startpc=startpc,
                    parent_goid=parent, sched_sp=56, sched_pc=64, sched_bp=bp)


# minor -> offsets; docs/go-runtime.md#runtimeg-offsets
TABLE: dict[int, GOffsets] = {
    19: _row(144, 152, 176, 296, None, 312, 104),
    20: _row(144, 152, 176, 296, None, 312, 104),
    21: _row(144, 152, 176, 280, 272, 296, 104),
    22: _row(144, 152, 176, 280, 272, 296, 104),
    23: _row(152, 160, 184, 288, 280, 304, 104),
    24: _row(152, 160, 184, 288, 280, 304, 104),
    25: _row(144, 152, 176, 280, 272, 296, 96),
    26: _row(144, 152, 176, 288, 280, 304, 96),
    27: _row(144, 152, 176, 288, 280, 304, 96),
}


# minor -> (syscallsp, syscallpc, syscallbp, waitsince, trackingSeq);
# docs/go-runtime.md#runtimeg-offsets.
# 1.20 has 1.19's layout (its changes kept every offset).
SYSCALL_TABLE: dict[int, tuple[int, int, int | None, int, int]] = {
    19: (112, 120, None, 168, 189),
    20: (112, 120, None, 168, 189),
    21: (112, 120, None, 168, 188),
    22: (112, 120, None, 168, 191),
    23: (112, 120, 128, 176, 199),
    24: (112, 120, 128, 176, 199),
    25: (104, 112, 120, 168, 191),
    26: (104, 112, 120, 168, 191),
    27: (104, 112, 120, 168, 191),
}


def table_offsets(minor: int) -> GOffsets:
    try:
        sp, pc, bp, since, seq = SYSCALL_TABLE[minor]
        return replace(TABLE[minor], source=f"built-in table for go1.{minor}", syscallsp=sp,
                       syscallpc=pc, syscallbp=bp, waitsince=since, tracking_seq=seq)
    except KeyError:
        raise BadInput(
            f"go1.{minor} is not supported: gotrace knows the runtime of Go 1.19 to 1.27"
        ) from None


def dwarf_offsets(img: ElfImage) -> GOffsets | None:
    """Read the offsets from DWARF; None when the binary has none (stripped)."""
    from gotrace.binary.dwarf import struct_members

    if not img.has_dwarf:
        return None
    members = struct_members(img, ("runtime.g", "runtime.gobuf", "runtime.stack"))
    g = members.get("runtime.g")
    gobuf = members.get("runtime.gobuf")
    if not g or not gobuf:
        return None
    for struct_name, fields in members.items():
        for name, off in fields.items():
            if not 0 <= off < _MAX_G_OFFSET:
                raise BadInput(f"{img.name}: DWARF puts {struct_name}.{name} at offset {off}, "
                               "outside any runtime.g; strip it (-ldflags=-w) or report a bug")
    try:
        sched = g["sched"]
        return GOffsets(
            status=g["atomicstatus"],
            goid=g["goid"],
            waitreason=g["waitreason"],
            gopc=g["gopc"],
            startpc=g["startpc"],
            parent_goid=g.get("parentGoid"),
            sched_sp=sched + gobuf["sp"],
            sched_pc=sched + gobuf["pc"],
            sched_bp=sched + gobuf["bp"],
            stack_lo=g["stack"] + members.get("runtime.stack", {}).get("lo", 0),
            stack_hi=g["stack"] + members.get("runtime.stack", {}).get("hi", 8),
            m=g["m"],
            source="DWARF",
            syscallsp=g.get("syscallsp"),
            syscallpc=g.get("syscallpc"),
            syscallbp=g.get("syscallbp"),
            waitsince=g.get("waitsince"),
            tracking_seq=g.get("trackingSeq"),
        )
    except KeyError as e:
        raise BadInput(f"{img.name}: runtime.g in DWARF lacks field {e}") from None


# runtime.m.curg (the goroutine an M runs), in the releases without g.parentGoid (Go 1.19 and
# 1.20): there the creator's goid is read as g0.m.curg.goid at the create hook
# (docs/go-runtime.md#runtimem-offsets).
M_CURG = 192
