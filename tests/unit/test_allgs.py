"""Finding runtime.allgs in real builds, and reading goroutines from (fake) process memory."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace

import pytest

from gotrace.binary.allgs import AllgsAddrs, decode_allgadd, find_allgs, from_symbols
from gotrace.binary.buildinfo import parse_go_version, read_build_info
from gotrace.binary.elf import ElfImage
from gotrace.binary.funcinfo import wrapper_functions
from gotrace.binary.offsets import GOffsets, dwarf_offsets, table_offsets
from gotrace.binary.pclntab import Pclntab
from gotrace.commands.dump import SHORT, SHOWN, SYSTEM, UNKNOWN_WAIT, selected
from gotrace.errors import BadInput
from gotrace.live.goroutines import (
    G_DEAD,
    G_DEADEXTRA,
    G_RUNNING,
    G_SYSCALL,
    G_WAITING,
    GoroutineReader,
    read_g,
    unwind,
)
from tests.gobuild import GO_VERSIONS, GoBuild, build_go
from tests.integration.goleaky import GO_LEAKY_SRC

OFF = table_offsets(27)


@pytest.fixture(params=GO_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- locating allgs in real binaries -------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "pie", "cgo", "cgo-pie"])
def test_allgadd_decoding_matches_the_symbol_table(go_build: GoBuild, version: str,
                                                   variant: str) -> None:
    img = ElfImage(str(go_build(version, variant)))
    tab = Pclntab(img)
    syms = from_symbols(img)
    assert syms is not None
    f = tab.lookup("runtime.allgadd")
    assert f is not None
    decoded = decode_allgadd(img, f.entry, f.end)
    assert decoded is not None
    assert (decoded.allgs, decoded.allglen, decoded.allgptr) == \
        (syms.allgs, syms.allglen, syms.allgptr)
    assert find_allgs(img, tab).source == "symbol table"


def test_stripped_binaries_are_decoded(go_build: GoBuild, version: str) -> None:
    img = ElfImage(str(go_build(version, "stripped")))
    assert not img.has_symtab
    found = find_allgs(img, Pclntab(img))
    assert found.source == "decoded from runtime.allgadd"
    # The three words live in the zero-initialised data the loader maps (.bss / .noptrbss).
    bss = [s for s in img.segments if s.memsz > s.filesz]
    assert bss
    for addr in (found.allgs, found.allglen, found.allgptr):
        assert any(s.vaddr + s.filesz <= addr < s.vaddr + s.memsz for s in bss), hex(addr)
    assert found.allgs + 24 <= found.allglen or found.allglen + 8 <= found.allgs


def test_an_unexpected_allgadd_body_is_refused() -> None:
    class Code:
        def read(self, vaddr: int, size: int) -> bytes:
            return bytes.fromhex("c3") + b"\x90" * (size - 1)  # ret; nops

    assert decode_allgadd(Code(), 0x1000, 0x1040) is None


# -- runtime.g offsets that dump adds, against DWARF -----------------------------------------------


def test_syscall_and_waitsince_offsets_match_dwarf(go_build: GoBuild, version: str) -> None:
    img = ElfImage(str(go_build(version, "plain")))
    _, minor, _ = parse_go_version(read_build_info(img).go_version)
    dwarf = dwarf_offsets(img)
    assert dwarf is not None
    table = table_offsets(minor)
    for name in ("syscallsp", "syscallpc", "syscallbp", "waitsince", "m", "stack_lo", "stack_hi"):
        assert getattr(dwarf, name) == getattr(table, name), name


# -- funcIDs and frame sizes -----------------------------------------------------------------------


def test_go_statement_wrappers_are_known_by_their_funcid(version: str) -> None:
    """Go's tracebacks hide `go f(x)` wrappers but not closures written by the user."""
    img = ElfImage(str(build_go(version, GO_LEAKY_SRC, "stripped")))
    wrappers = wrapper_functions(Pclntab(img))
    wrapper = "main.leakRecv.func1" if version == "1.19" else "main.leakRecv.gowrap1"
    if version != "1.19" and version.split(".")[1] in ("20", "21"):
        wrapper = "main.leakRecv.func1"
    assert wrapper in wrappers
    assert "main.leakSend.func1" not in wrappers  # go func() { results <- v }()
    assert "main.consume" not in wrappers


def test_frame_size_is_zero_at_entry_and_known_inside(go_build: GoBuild, version: str) -> None:
    img = ElfImage(str(go_build(version, "stripped")))
    tab = Pclntab(img)
    f = tab.lookup("runtime.main")
    assert f is not None
    assert tab.frame_size(f.entry) == 0
    sizes = {tab.frame_size(pc) for pc in range(f.entry, f.end, 7)}
    assert any(s and s > 0 for s in sizes)
    assert tab.frame_size(0) is None


# -- reading goroutines from memory -------------------------------------------------------------


class FakeMemory:
    """Byte blobs at addresses; `changes` alter a blob after a number of reads of it."""

    def __init__(self) -> None:
        self.blobs: dict[int, bytes] = {}
        self.failed_reads = 0
        self.on_read: Callable[[int], None] | None = None

    def read(self, addr: int, size: int) -> bytes | None:
        if self.on_read:
            self.on_read(addr)
        for base, blob in self.blobs.items():
            if base <= addr and addr + size <= base + len(blob):
                return blob[addr - base : addr - base + size]
        self.failed_reads += 1
        return None

    def u64(self, addr: int) -> int | None:
        raw = self.read(addr, 8)
        return None if raw is None else int.from_bytes(raw, "little")


def make_g(gaddr: int, goid: int, status: int, *, off: GOffsets = OFF, lo: int = 0x10000,
           sp_off: int = 0x1F00, reason: int = 19) -> bytes:
    raw = bytearray(512)
    hi = lo + 0x2000
    struct.pack_into("<QQ", raw, off.stack_lo, lo, hi)
    struct.pack_into("<Q", raw, off.goid, goid)
    struct.pack_into("<I", raw, off.status, status)
    raw[off.waitreason] = reason
    struct.pack_into("<QQQ", raw, off.sched_sp, lo + sp_off, 0x401234, gaddr)  # sp, pc, g
    struct.pack_into("<Q", raw, off.sched_bp, lo + sp_off + 0x10)
    struct.pack_into("<Q", raw, off.gopc, 0x402000)
    struct.pack_into("<Q", raw, off.startpc, 0x403000)
    return bytes(raw)


class FakeReader:
    """GoroutineReader over fake memory, without a GoBinary."""

    def __init__(self, mem: FakeMemory, allglen_addr: int, allgptr_addr: int) -> None:
        class GB:
            offsets = OFF
            go_version = "go1.27.3"

        self.reader = GoroutineReader.__new__(GoroutineReader)
        self.reader.gb = GB()  # type: ignore[assignment]
        self.reader.mem = mem  # type: ignore[assignment]
        self.reader.bias = 0
        self.reader.addrs = AllgsAddrs(0, allglen_addr, allgptr_addr, "test")


def memory_with_gs(gs: dict[int, bytes | None]) -> tuple[FakeMemory, FakeReader]:
    mem = FakeMemory()
    arr = 0x9000
    mem.blobs[0x8000] = struct.pack("<QQ", len(gs), arr)  # allglen, allgptr
    mem.blobs[arr] = b"".join(struct.pack("<Q", a) for a in gs)
    for addr, blob in gs.items():
        if blob is not None:
            mem.blobs[addr] = blob
    return mem, FakeReader(mem, 0x8000, 0x8008)


def test_scan_skips_dead_goroutines_and_counts_unreadable_ones() -> None:
    _, fr = memory_with_gs({
        0xA000: make_g(0xA000, 1, G_WAITING),
        0xA400: make_g(0xA400, 7, G_DEAD),
        0xA800: make_g(0xA800, 8, G_DEADEXTRA),
        0xAC00: None,  # unmapped
        0xB000: make_g(0xB000, 9, G_RUNNING | 0x1000),  # _Gscan bit set
    })
    scan = fr.reader.scan()
    assert [(g.goid, g.status) for g in scan.goroutines] == [(1, G_WAITING), (9, G_RUNNING)]
    assert scan.skipped == 1 and scan.allglen == 5
    assert scan.goroutines[0].sched_g == 0xA000 and scan.goroutines[0].gaddr == 0xA000


def test_an_absurd_allglen_is_bad_input_not_a_crash() -> None:
    mem = FakeMemory()
    mem.blobs[0x8000] = struct.pack("<QQ", 1 << 40, 0x9000)
    with pytest.raises(BadInput, match="allglen"):
        FakeReader(mem, 0x8000, 0x8008).reader.g_pointers()


def test_an_unreadable_pointer_array_is_counted() -> None:
    mem = FakeMemory()
    mem.blobs[0x8000] = struct.pack("<QQ", 3, 0xDEAD000)
    ptrs, lost = FakeReader(mem, 0x8000, 0x8008).reader.g_pointers()
    assert ptrs == [] and lost == 3


def test_a_goroutine_that_keeps_moving_is_skipped() -> None:
    mem, fr = memory_with_gs({0xA000: make_g(0xA000, 5, G_WAITING)})
    lo = 0x10000
    mem.blobs[lo] = bytes(0x2000)  # its stack: zeros (the walk stops at once)
    g = fr.reader.scan().goroutines[0]
    flip = [0]

    def move(addr: int) -> None:
        if addr == 0xA000:  # each read of the g sees a new resume point
            flip[0] += 1
            mem.blobs[0xA000] = make_g(0xA000, 5, G_WAITING, sp_off=0x1F00 - 0x10 * flip[0])

    mem.on_read = move
    assert fr.reader.stack(g) is None


def test_a_goroutine_that_exited_meanwhile_is_skipped_and_a_stable_one_read() -> None:
    mem, fr = memory_with_gs({0xA000: make_g(0xA000, 5, G_WAITING)})
    lo = 0x10000
    stack = bytearray(0x2000)
    struct.pack_into("<QQ", stack, 0x1F10, 0, 0x404040)  # frame: next bp 0, return PC
    mem.blobs[lo] = bytes(stack)
    g = fr.reader.scan().goroutines[0]
    st = fr.reader.stack(g)
    assert st is not None and st.pcs == [0x401234, 0x404040] and st.source == "sched"
    mem.blobs[0xA000] = make_g(0xA000, 6, G_WAITING)  # g reused by goroutine 6
    assert fr.reader.stack(g) is None


def test_running_goroutines_get_no_stack_and_syscalls_use_the_syscall_frame() -> None:
    gsys = bytearray(make_g(0xB000, 3, G_SYSCALL))
    lo = 0x10000
    struct.pack_into("<QQQ", gsys, OFF.syscallsp or 0, lo + 0x1E00, 0x405000, lo + 0x1E40)
    mem, fr = memory_with_gs({0xA000: make_g(0xA000, 2, G_RUNNING), 0xB000: bytes(gsys)})
    stack = bytearray(0x2000)
    struct.pack_into("<QQ", stack, 0x1E40, 0, 0x406000)
    mem.blobs[lo] = bytes(stack)
    running, syscall = fr.reader.scan().goroutines
    st = fr.reader.stack(running)
    assert st is not None and st.pcs == [] and st.source == "none"
    st = fr.reader.stack(syscall)
    assert st is not None and st.pcs == [0x405000, 0x406000] and st.source == "syscall"


def test_unwind_reads_the_stack_window_once() -> None:
    mem = FakeMemory()
    lo, hi = 0x10000, 0x12000
    stack = bytearray(hi - lo)
    struct.pack_into("<QQ", stack, 0x100, lo + 0x200, 0x402000)
    struct.pack_into("<QQ", stack, 0x200, 0, 0x403000)
    mem.blobs[lo] = bytes(stack)
    reads: list[int] = []
    mem.on_read = reads.append
    assert unwind(mem, 0x401000, lo + 0x80, lo + 0x100, lo, hi) == [0x401000, 0x402000, 0x403000]  # type: ignore[arg-type]
    assert reads == [lo + 0x80]


def test_read_g_returns_the_new_fields() -> None:
    mem, _ = memory_with_gs({})
    raw = bytearray(make_g(0xA000, 42, G_WAITING))
    struct.pack_into("<Q", raw, OFF.parent_goid or 0, 7)
    struct.pack_into("<Q", raw, OFF.waitsince or 0, 123456789)
    mem.blobs[0xA000] = bytes(raw)
    g = read_g(mem, OFF, 0xA000)  # type: ignore[arg-type]
    assert g is not None
    assert (g.goid, g.parent_goid, g.gopc, g.startpc, g.waitsince, g.gaddr) == \
        (42, 7, 0x402000, 0x403000, 123456789, 0xA000)


def test_min_wait_keeps_goroutines_the_gc_dated_long_enough() -> None:
    now = 1000 * 10**9
    g = read_g(memory_with_gs({0xA000: make_g(0xA000, 9, G_WAITING)})[0], OFF, 0xA000)  # type: ignore[arg-type]
    assert g is not None
    dated = replace(g, waitsince=now - 400 * 10**9)  # the GC saw it waiting 400 s ago
    assert selected(dated, "main.worker", now, 300.0, False) == SHOWN
    assert selected(dated, "main.worker", now, 500.0, False) == SHORT
    assert selected(g, "main.worker", now, 300.0, False) == UNKNOWN_WAIT  # no GC since
    assert selected(g, "main.worker", now, None, False) == SHOWN
    assert selected(replace(dated, status=G_RUNNING), "main.worker", now, 1.0, False) == SHORT
    assert selected(dated, "runtime.bgsweep", now, None, False) == SYSTEM
    assert selected(dated, "runtime.bgsweep", now, None, True) == SHOWN
    assert selected(dated, "runtime.main", now, None, False) == SHOWN
