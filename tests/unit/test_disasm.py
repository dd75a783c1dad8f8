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
