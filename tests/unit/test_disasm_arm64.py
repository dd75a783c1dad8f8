"""Probe placement on hand-assembled linux/arm64 Go prologues: decoded, never guessed.

Each instruction is written as the 32-bit word `go tool objdump` prints (little-endian in the
file), with the instruction in capstone's syntax and Go's beside it.
"""

from __future__ import annotations

import pytest

from gotrace.binary import disasm
from gotrace.errors import BadInput

BASE = 0x10000
MORESTACK = BASE + 0x1000


class FakeCode:
    def __init__(self, code: bytes) -> None:
        self.code = code

    def read(self, vaddr: int, size: int) -> bytes:
        return self.code[vaddr - BASE : vaddr - BASE + size]


def code(*words: int) -> FakeCode:
    return FakeCode(b"".join(w.to_bytes(4, "little") for w in words))


def bl(at: int, target: int) -> int:
    """`bl target` placed at offset `at` of the function."""
    return 0x94000000 | ((target - BASE - at) // 4 & 0x3FFFFFF)


def small_frame(callee: int) -> FakeCode:
    """Go's small-frame prologue; the b.ls target spills the arguments, calls callee and
    jumps back to the entry."""
    return code(
        0xF9400B90,  # +0x00 ldr x16, [x28, #0x10]   MOVD 16(R28), R16
        0xEB3063FF,  # +0x04 cmp sp, x16             CMP R16, RSP
        0x54000089,  # +0x08 b.ls +0x10 (to +0x18)   BLS 4(PC)
        0xF81E0FFE,  # +0x0c str x30, [sp, #-0x20]!  MOVD.W R30, -32(RSP)
        0xF84207FE,  # +0x10 ldr x30, [sp], #0x20    MOVD.P 32(RSP), R30
        0xD65F03C0,  # +0x14 ret                     RET
        0xA90087E0,  # +0x18 stp x0, x1, [sp, #8]    STP (R0, R1), 8(RSP)
        0xAA1E03E3,  # +0x1c mov x3, x30             MOVD R30, R3
        bl(0x20, callee),  # +0x20 bl callee         CALL runtime.morestack_noctxt(SB)
        0xA94087E0,  # +0x24 ldp x0, x1, [sp, #8]    LDP 8(RSP), (R0, R1)
        0x17FFFFF6,  # +0x28 b -0x28 (to +0)         JMP runtime.f(SB)
    )


def probe(c: FakeCode, morestack: frozenset[int] = frozenset({MORESTACK})) -> disasm.ProbePoint:
    return disasm.entry_probe_arm64(c, BASE, BASE + len(c.code), morestack=morestack)


def test_probe_goes_on_the_bls_of_the_stack_check() -> None:
    p = probe(small_frame(MORESTACK))
    assert (p.addr - BASE, p.emulated, p.stack_check) == (8, True, True)


def test_bls_to_another_call_is_not_the_stack_check() -> None:
    p = probe(small_frame(MORESTACK + 0x40))
    assert (p.addr - BASE, p.emulated, p.stack_check) == (8, True, False)
    # Without morestack's address nothing is marked: both passes are counted.
    assert not probe(small_frame(MORESTACK), frozenset()).stack_check


def test_large_frame_prologue_compares_r17() -> None:
    c = code(
        0xF9400B90,  # ldr x16, [x28, #0x10]  MOVD 16(R28), R16
        0xD100C3F1,  # sub x17, sp, #0x30     SUB $48, RSP, R17
        0xEB10023F,  # cmp x17, x16           CMP R16, R17
        0x54000069,  # b.ls +0xc (to +0x18)   BLS 3(PC)
        0xD65F03C0,  # ret                    RET
        0xD503201F,  # nop                    NOOP
        0xAA1E03E3,  # +0x18 mov x3, x30      MOVD R30, R3
        bl(0x1C, MORESTACK),  # bl morestack  CALL runtime.morestack_noctxt(SB)
    )
    p = probe(c)
    assert (p.addr - BASE, p.emulated, p.stack_check) == (12, True, True)


def test_only_a_bls_is_marked() -> None:
    # Huge frames first branch on the subtraction's borrow: a probe there, never skipped.
    c = code(
        0xF9400B90,  # ldr x16, [x28, #0x10]  MOVD 16(R28), R16
        0xF13E43F1,  # subs x17, sp, #0xf90   SUBS $3984, RSP, R17
        0x54000063,  # b.lo +0xc (to +0x14)   BLO 3(PC)
        0xD65F03C0,  # ret                    RET
        0xD503201F,  # nop                    NOOP
        bl(0x14, MORESTACK),  # bl morestack  CALL runtime.morestack_noctxt(SB)
    )
    p = probe(c)
    assert (p.addr - BASE, p.emulated, p.stack_check) == (8, True, False)


def test_an_argument_write_before_the_branch_keeps_the_entry() -> None:
    c = code(
        0xD2800020,  # mov x0, #1             MOVD $1, R0
        0xEB3063FF,  # cmp sp, x16            CMP R16, RSP
        0x54000089,  # b.ls +0x10             BLS 4(PC)
    )
    p = probe(c)
    assert (p.addr, p.emulated, p.stack_check) == (BASE, False, False)


def test_nosplit_function_falls_back_to_the_entry() -> None:
    c = code(
        0xF9400001,  # ldr x1, [x0]       MOVD (R0), R1
        0x91000420,  # add x0, x1, #1     ADD $1, R1, R0
        0xD65F03C0,  # ret                RET
    )
    p = probe(c)
    assert (p.addr, p.emulated, p.stack_check) == (BASE, False, False)


def test_a_simulated_entry_instruction_is_the_probe() -> None:
    c = code(
        0x14000002,  # b +8               JMP 2(PC)
        0xD503201F,  # nop                NOOP
        0xD65F03C0,  # ret                RET
    )
    p = probe(c)
    assert (p.addr, p.emulated) == (BASE, True)


def test_an_entry_linux_refuses_to_probe_is_an_error() -> None:
    c = code(
        0x5800005B,  # ldr x27, +8 (literal)   MOVD $const, R27 from the pool
        0xD65F03C0,  # ret                     RET
        0x00000000, 0x00000000,  # the 8-byte literal
    )
    with pytest.raises(BadInput, match="refuses to uprobe"):
        probe(c)


@pytest.mark.parametrize(("word", "how"), [
    (0x54000089, disasm.SIMULATED),  # b.ls
    (0xB4000040, disasm.SIMULATED),  # cbz x0, +8
    (0x36000040, disasm.SIMULATED),  # tbz w0, #0, +8
    (0x90000000, disasm.SIMULATED),  # adrp x0, 0
    (0x94000000, disasm.SIMULATED),  # bl +0
    (0x17FFFFF6, disasm.SIMULATED),  # b -0x28
    (0xD65F03C0, disasm.SIMULATED),  # ret
    (0xD61F0200, disasm.SIMULATED),  # br x16
    (0xD63F0020, disasm.SIMULATED),  # blr x1
    (0xF9400B90, disasm.STEPPED),  # ldr x16, [x28, #0x10]
    (0xEB3063FF, disasm.STEPPED),  # cmp sp, x16
    (0xA90087E0, disasm.STEPPED),  # stp x0, x1, [sp, #8]
    (0xD53BD040, disasm.STEPPED),  # mrs x0, tpidr_el0
    (0xD503201F, disasm.STEPPED),  # nop (simulated only by newer kernels)
    (0x5800005B, disasm.REFUSED),  # ldr x27, literal
    (0x98000040, disasm.REFUSED),  # ldrsw x0, literal
    (0xC85F7C20, disasm.REFUSED),  # ldxr x0, [x1]
    (0xD4000001, disasm.REFUSED),  # svc #0
    (0xD4200000, disasm.REFUSED),  # brk #0
    (0xD503203F, disasm.REFUSED),  # yield
])
def test_what_linux_does_with_a_uprobe(word: int, how: str) -> None:
    assert disasm.uprobe_arm64(word) == how


def test_ret_sites_skip_literal_pools() -> None:
    # The pool word at +8 reads as `ret`, but the ldr at +0 loads it: data, not code.
    c = code(
        0x58000040,  # ldr x0, +8 (literal)   MOVD $const, R0 from the pool
        0xD65F03C0,  # ret                    RET
        0xD65F03C0, 0x00000000,  # the 8-byte literal 0x00000000d65f03c0
        0xD65F03C0,  # ret                    RET
    )
    assert disasm.ret_sites_arm64(c, BASE, BASE + len(c.code)) == [BASE + 4, BASE + 16]


def test_decoding_starts_on_a_4_aligned_instruction() -> None:
    c = code(0xD65F03C0, 0xD65F03C0)  # ret; ret
    with pytest.raises(BadInput, match="not 4-aligned"):
        disasm.ret_sites_arm64(c, BASE + 2, BASE + 8)


def test_call_sites_match_the_target() -> None:
    c = code(
        bl(0, BASE + 0x10),  # bl +0x10        CALL runtime.target(SB)
        bl(4, BASE + 0x40),  # bl +0x3c        CALL runtime.other(SB)
        0x14000002,          # b +8 (to +0x10) JMP: not a call
        0xD65F03C0,          # ret             RET
        0xD65F03C0,          # +0x10 ret       RET (runtime.target)
    )
    assert disasm.call_sites_arm64(c, BASE, BASE + len(c.code), BASE + 0x10) == [BASE]
