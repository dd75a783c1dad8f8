"""Probe placement on hand-assembled Go prologues: decoded, never guessed."""

from __future__ import annotations

from gotrace.binary import disasm

BASE = 0x401000


class FakeCode:
    def __init__(self, code: bytes) -> None:
        self.code = code

    def read(self, vaddr: int, size: int) -> bytes:
        return self.code[vaddr - BASE : vaddr - BASE + size]


# cmp rsp,[r14+0x10]; jbe +0x20; push rbp; mov rbp,rsp; ... ret
SMALL_FRAME = bytes.fromhex("493b6610" "7620" "55" "4889e5" "4883ec20" "c3") + b"\xcc" * 32
# lea r12,[rsp-0x200]; cmp r12,[r14+0x10]; jbe rel32; push rbp ...
LARGE_FRAME = bytes.fromhex("4c8da42400feffff" "4d3b6610" "0f8600010000" "55" "c3") + b"\xcc" * 8
# nosplit: push rbp; mov rbp,rsp; ... ret
NOSPLIT = bytes.fromhex("55" "4889e5" "8b4810" "5d" "c3")


def test_probe_goes_on_the_stack_check_branch() -> None:
    p = disasm.entry_probe(FakeCode(SMALL_FRAME), BASE, BASE + len(SMALL_FRAME))
    assert (p.addr - BASE, p.emulated) == (4, True)


def test_large_frame_prologue_skips_the_lea_and_cmp() -> None:
    p = disasm.entry_probe(FakeCode(LARGE_FRAME), BASE, BASE + len(LARGE_FRAME))
    assert (p.addr - BASE, p.emulated) == (12, True)


def test_nosplit_function_falls_back_to_the_entry() -> None:
    p = disasm.entry_probe(FakeCode(NOSPLIT), BASE, BASE + len(NOSPLIT))
    assert (p.addr, p.emulated) == (BASE, False)


def test_ret_sites_are_instruction_boundaries() -> None:
    # mov eax,0xc3c3c3c3 hides C3 bytes inside an instruction: only the real RET counts.
    code = bytes.fromhex("b8c3c3c3c3" "c3")
    assert disasm.ret_sites(FakeCode(code), BASE, BASE + len(code)) == [BASE + 5]


def test_call_sites_match_the_target() -> None:
    # call +0 (to BASE+5); call +0x10 (to BASE+0x1a)
    code = bytes.fromhex("e800000000" "e810000000")
    assert disasm.call_sites(FakeCode(code), BASE, BASE + 10, BASE + 5) == [BASE]


def test_call_starts_are_instructions_not_bytes_inside_one() -> None:
    # mov eax, 0x000000e8 then movabs rax, imm64 holding "e8 00 00 00 00": E8 bytes inside
    # instructions, then one real call.
    code = bytes.fromhex("b8e8000000" "48b8e800000000909090" "e800000000")
    assert disasm.call_starts(FakeCode(code), BASE, BASE + len(code), "amd64") == {BASE + 15}


MORESTACK = BASE + 0x1000


def _with_morestack_block(callee: int) -> bytes:
    """SMALL_FRAME whose jbe target (+0x26) spills RAX, then calls callee and jumps back."""
    code = bytearray(SMALL_FRAME[:0x26])
    code += bytes.fromhex("4889442408")  # mov [rsp+8], rax
    after_call = BASE + len(code) + 5
    code += b"\xe8" + (callee - after_call).to_bytes(4, "little", signed=True)
    code += b"\xeb" + (-(len(code) + 2) & 0xFF).to_bytes(1, "little")  # jmp entry
    return bytes(code)


def test_jbe_to_a_morestack_call_is_the_stack_check() -> None:
    code = _with_morestack_block(MORESTACK)
    p = disasm.entry_probe(FakeCode(code), BASE, BASE + len(code),
                           morestack=frozenset({MORESTACK}))
    assert (p.addr - BASE, p.stack_check) == (4, True)


def test_jbe_elsewhere_is_not_the_stack_check() -> None:
    code = _with_morestack_block(MORESTACK + 0x40)
    p = disasm.entry_probe(FakeCode(code), BASE, BASE + len(code),
                           morestack=frozenset({MORESTACK}))
    assert (p.addr - BASE, p.stack_check) == (4, False)
    # Without morestack's address nothing is marked: both passes are counted.
    code = _with_morestack_block(MORESTACK)
    assert not disasm.entry_probe(FakeCode(code), BASE, BASE + len(code)).stack_check


# mov rax,rdx; nopl 0x0(rax,rax,1); call +0; ret
NOP5_CALL = bytes.fromhex("4889d0" "0f1f440000" "e800000000" "c3")


def test_probe_moves_to_the_nop5_before_a_call() -> None:
    code = FakeCode(NOP5_CALL)
    assert disasm.nop5_before(code, BASE, BASE + len(NOP5_CALL), BASE + 8) == BASE + 3


def test_no_nop5_when_a_branch_lands_on_the_call() -> None:
    # jmp +5 lands on the call, skipping the nop: a probe on the nop would miss that path.
    code = bytes.fromhex("eb05" "0f1f440000" "e800000000" "c3")
    assert disasm.nop5_before(FakeCode(code), BASE, BASE + len(code), BASE + 7) is None


def test_no_nop5_before_other_instructions_or_nops() -> None:
    # mov rax,rdx; nopw (4 bytes, not the 5-byte nop); call +0
    code = bytes.fromhex("4889d0" "0f1f4000" "e800000000" "c3")
    assert disasm.nop5_before(FakeCode(code), BASE, BASE + len(code), BASE + 7) is None
    assert disasm.nop5_before(FakeCode(NOP5_CALL), BASE, BASE + len(NOP5_CALL), BASE + 3) \
        is None
