"""Decode x86-64 Go functions to place probes on instructions the kernel emulates.

A uprobe on an instruction the kernel cannot emulate is single-stepped out of line: ~20x the
cost (docs/go-runtime.md#why-emulated-instructions). Go functions start with the stack-bound check
`cmp rsp, [r14+0x10]` (not emulable) followed by `jbe` (emulable), and the registers at the
`jbe` still hold the arguments, so the conditional jump of the prologue is where entry probes
go. A probe must sit on an instruction boundary: an address inside an instruction corrupts
the target, which is why offsets are always decoded, never guessed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import capstone
from capstone import x86_const

from gotrace.errors import BadInput


class Code(Protocol):
    """Anything that reads bytes by virtual address (an ElfImage, or a test's fake)."""

    def read(self, vaddr: int, size: int) -> bytes: ...


# Registers the Go register ABI passes arguments in; an instruction that writes one of them,
# or RSP, before the probe point would make the probe see something other than the arguments.
_ARG_REGS = {
    x86_const.X86_REG_RAX, x86_const.X86_REG_RBX, x86_const.X86_REG_RCX, x86_const.X86_REG_RDI,
    x86_const.X86_REG_RSI, x86_const.X86_REG_R8, x86_const.X86_REG_R9, x86_const.X86_REG_R10,
    x86_const.X86_REG_R11, x86_const.X86_REG_R14, x86_const.X86_REG_RSP, x86_const.X86_REG_RDX,
}
_EMULATED_JUMPS = {"jmp", "call"}  # plus every jcc (conditional jump), and nop
# The runtime functions gotrace decodes are a few KB at most; decoding with operand details
# costs ~20 us an instruction, so a table claiming megabytes would stall for minutes.
MAX_DECODE = 1 << 16


@dataclass(frozen=True)
class Insn:
    addr: int
    size: int
    mnemonic: str
    op_str: str
    target: int | None  # immediate branch target, if any
    regs_written: frozenset[int]


@dataclass(frozen=True)
class ProbePoint:
    addr: int
    emulated: bool
    why: str
    # On the prologue's `jbe` to morestack: when the branch is taken the prologue runs again,
    # so a handler must ignore that pass
    # (docs/go-runtime.md#entry-probes-fire-twice-on-split-stacks).
    stack_check: bool = False


@lru_cache(maxsize=1)
def x86_decoder() -> Any:
    """capstone in x86-64 mode with operand details, built once and shared."""
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.detail = True
    return cs


def decode(img: Code, start: int, end: int, *, regs: bool = True,
           limit: int | None = None) -> list[Insn]:
    """Linear sweep of [start, end); Go puts no data inside amd64 function bodies.

    regs=False leaves `regs_written` empty: asking capstone for it is a good part of the cost
    of a sweep, and only the entry probe needs it. limit: stop after that many instructions.
    """
    if not 0 <= end - start <= MAX_DECODE:
        raise BadInput(f"the function at {start:#x} spans {end - start:,} bytes: not one "
                       "gotrace decodes (a corrupt symbol table?)")
    code = img.read(start, end - start)
    out: list[Insn] = []
    branch = (capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL)
    for ins in x86_decoder().disasm(code, start):
        target = None
        groups = ins.groups  # one copy out of capstone, not one per group() asked
        if branch[0] in groups or branch[1] in groups:
            ops = ins.operands
            if ops and ops[0].type == x86_const.X86_OP_IMM:
                target = int(ops[0].imm)
        written: list[int] = []
        if regs:
            try:
                _, written = ins.regs_access()
            except capstone.CsError:
                written = []
        out.append(Insn(ins.address, ins.size, ins.mnemonic, ins.op_str, target,
                        frozenset(written)))
        if limit is not None and len(out) >= limit:
            break
    return out


def is_emulated(insn: Insn) -> bool:
    """Whether x86 uprobes emulate this instruction instead of single-stepping it."""
    m = insn.mnemonic
    if m == "nop":
        return True
    if m in _EMULATED_JUMPS:
        return insn.target is not None  # only relative forms
    return m.startswith("j") and insn.target is not None  # jcc rel8/rel32


def entry_probe(img: Code, start: int, end: int, max_insns: int = 6,
                morestack: frozenset[int] = frozenset()) -> ProbePoint:
    """The cheapest safe address at which the registers still hold the function's arguments.

    morestack: entry addresses of runtime.morestack*; a `jbe` whose target calls one of them is
    the stack check, marked so that handlers can skip the pass that reruns the prologue.
    """
    insns = decode(img, start, min(end, start + 64), limit=max(max_insns, 1))
    if not insns:
        return ProbePoint(start, False, "could not decode the entry")
    if is_emulated(insns[0]):
        return ProbePoint(start, True, "entry instruction is emulated")
    for ins in insns[:max_insns]:
        if ins.mnemonic.startswith("j") and ins.mnemonic != "jmp" and ins.target is not None:
            check = (ins.mnemonic == "jbe" and start <= ins.target < end
                     and _calls_any(img, ins.target, end, morestack))
            return ProbePoint(ins.addr, True, f"stack-check branch at +{ins.addr - start}",
                              stack_check=check)
        if ins.regs_written & _ARG_REGS or ins.mnemonic in ("call", "ret", "push", "pop"):
            break
    return ProbePoint(start, False, "no emulated instruction before the body: single-stepped")


def _calls_any(img: Code, start: int, end: int, targets: frozenset[int],
               max_insns: int = 24) -> bool:
    """Whether the straight-line block at start (argument spills, then the call) calls one of
    targets before any other branch."""
    if not targets:
        return False
    for ins in decode(img, start, min(end, start + 256), regs=False, limit=max_insns):
        if ins.mnemonic == "call":
            return ins.target in targets
        if ins.mnemonic.startswith("j") or ins.mnemonic == "ret":
            return False
    return False


# The 5-byte nop (x86_nops[5] in Linux) that kernels with optimized uprobes (arch_uprobe_optimize,
# here Linux 6.18) rewrite into a call to a uprobe trampoline after the first hit: no trap at all.
NOP5 = bytes.fromhex("0f1f440000")


def nop5_before(img: Code, start: int, end: int, addr: int) -> int | None:
    """The address of a 5-byte nop right before the instruction at addr, if no branch lands on
    addr itself: a probe there sees the same registers on every path and costs less."""
    insns = decode(img, start, end, regs=False)
    for prev, ins in itertools.pairwise(insns):
        if ins.addr == addr:
            if prev.size != 5 or img.read(prev.addr, 5) != NOP5:
                return None
            return None if any(i.target == addr for i in insns) else prev.addr
    return None


def call_sites(img: Code, start: int, end: int, target: int) -> list[int]:
    """Addresses of `call target` inside [start, end)."""
    return [i.addr for i in decode(img, start, end, regs=False)
            if i.mnemonic == "call" and i.target == target]


def ret_sites(img: Code, start: int, end: int) -> list[int]:
    """Addresses of every RET: return probes go there, never a uretprobe
    (docs/go-runtime.md#why-never-a-uretprobe)."""
    return [i.addr for i in decode(img, start, end, regs=False) if i.mnemonic == "ret"]
