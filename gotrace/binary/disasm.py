"""Decode Go functions to place probes on instructions the kernel emulates.

A uprobe on an instruction the kernel cannot emulate is single-stepped out of line: ~20x the
cost (docs/go-runtime.md#why-emulated-instructions). Go functions start with the stack-bound check
`cmp rsp, [r14+0x10]` (not emulable) followed by `jbe` (emulable), and the registers at the
`jbe` still hold the arguments, so the conditional jump of the prologue is where entry probes
go. A probe must sit on an instruction boundary: an address inside an instruction corrupts
the target, which is why offsets are always decoded, never guessed.

linux/arm64 (the `*_arm64` functions) follows the same plan with fixed 4-byte instructions:
`ldr x16, [x28, #16]; cmp sp, x16; b.ls morestack-block` (Go's `MOVD 16(R28), R16; CMP R16,
RSP; BLS`), the entry probe on the `b.ls`.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import capstone
from capstone import arm64_const, x86_const

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


@lru_cache(maxsize=1)
def _x86_lite() -> Any:
    """capstone in x86-64 mode without operand details: a sweep that only needs boundaries
    and mnemonics runs several times faster."""
    return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def call_starts(img: Code, start: int, end: int, arch: str) -> set[int]:
    """Addresses of every direct call (`call` on amd64, `bl` on arm64) decoded in the function
    [start, end): what a byte scan found is an instruction only if it is in here."""
    if arch == "arm64":
        return {i.addr for i, w in _decode_a64(img, start, end, regs=False)
                if _a64_bl(w) and i.mnemonic != ".word"}
    if not 0 <= end - start <= MAX_DECODE:
        raise BadInput(f"the function at {start:#x} spans {end - start:,} bytes: not one "
                       "gotrace decodes (a corrupt symbol table?)")
    return {addr for addr, _, mnemonic, _ in _x86_lite().disasm_lite(img.read(start, end - start),
                                                                       start)
            if mnemonic == "call"}


def ret_sites(img: Code, start: int, end: int) -> list[int]:
    """Addresses of every RET: return probes go there, never a uretprobe
    (docs/go-runtime.md#why-never-a-uretprobe)."""
    return [i.addr for i in decode(img, start, end, regs=False) if i.mnemonic == "ret"]


# -- linux/arm64 -------------------------------------------------------------------------------
#
# What Linux does with a uprobe on an arm64 instruction (arch/arm64/kernel/probes/decode-insn.c,
# arm_probe_decode_insn, called by arch_uprobe_analyze_insn in probes/uprobes.c; the handlers are
# in probes/simulate-insn.c):
# - simulated in the breakpoint handler, no single step (INSN_GOOD_NO_SLOT): b.cond, cbz/cbnz,
#   tbz/tbnz, adr/adrp, b/bl, br/blr/ret. RET included: unlike x86, return probes cost one trap.
# - single-stepped out of line (INSN_GOOD): everything else that aarch64_insn_is_steppable
#   accepts, e.g. ldr/str/stp, add/sub/cmp, and nop (kernels with Liao Chang's "Simulate nop
#   instruction for better uprobe performance" patch simulate nop; counted as stepped here).
# - refused (INSN_REJECTED: registering the uprobe fails with EINVAL): PC-relative literal loads
#   (ldr/ldrsw/prfm literal: kernels before "arm64: probes: Remove broken LDR (literal) uprobe
#   support", late 2024 with stable backports, simulated ldr literal; now only kprobes do),
#   exclusive loads/stores (ldxr/stxr...), exception-generating instructions (svc, brk...),
#   msr, eret, mrs of DAIF, hints other than nop/pac*/bti* (yield, wfe...), and the authenticated
#   branches (retaa, braa...), which no simulation handler accepts.
# The encodings are the kernel's (__AARCH64_INSN_FUNCS in arch/arm64/include/asm/insn.h).
SIMULATED, STEPPED, REFUSED = "simulated", "single-stepped", "refused"


def _is(word: int, mask: int, value: int) -> bool:
    return word & mask == value


def _a64_bcond(w: int) -> bool:
    return _is(w, 0xFF000000, 0x54000000)  # b.cond (and FEAT_HBC's bc.cond, bit 4)


def _a64_bl(w: int) -> bool:
    return _is(w, 0xFC000000, 0x94000000)


def _a64_ret(w: int) -> bool:
    return _is(w, 0xFFFFFC1F, 0xD65F0000)


def _a64_simulated(w: int) -> bool:
    return (_a64_bcond(w)
            or _is(w, 0x7E000000, 0x34000000)  # cbz, cbnz
            or _is(w, 0x7E000000, 0x36000000)  # tbz, tbnz
            or _is(w, 0x1F000000, 0x10000000)  # adr, adrp
            or _is(w, 0x7C000000, 0x14000000)  # b, bl
            or _is(w, 0xFFFFFC1F, 0xD61F0000)  # br
            or _is(w, 0xFFFFFC1F, 0xD63F0000)  # blr
            or _a64_ret(w))


# Hints the kernel single-steps (aarch64_insn_is_steppable_hint): nop, xpaclri, pacia1716,
# pacib1716, paciaz, paciasp, pacibz, pacibsp, bti, bti c, bti j, bti jc (insn & 0xFE0).
_STEPPABLE_HINTS = {0x000, 0x0E0, 0x100, 0x140, 0x300, 0x320, 0x340, 0x360,
                    0x400, 0x440, 0x480, 0x4C0}
_DAIF = 0xDA11  # AARCH64_INSN_SPCLREG_DAIF: mrs of DAIF is refused, any other mrs stepped


def _a64_steppable(w: int) -> bool:
    """aarch64_insn_is_steppable."""
    if (w >> 26) & 0b111 == 0b101:  # branches, exception generation, system instructions
        if (_is(w, 0x7C000000, 0x14000000) or _is(w, 0x7C000000, 0x34000000)  # b/bl, cb*/tb*
                or _is(w, 0xFF000000, 0x54000000)  # b.cond, bc.cond
                or _is(w, 0xFE000000, 0xD6000000)  # br/blr/ret/eret and their auth forms
                or _is(w, 0xFF000000, 0xD4000000)  # exception generation: svc, brk, ...
                or _is(w, 0xFFF8F01F, 0xD500401F) or _is(w, 0xFFF00000, 0xD5100000)):  # msr
            return False
        if _is(w, 0xFFF00000, 0xD5300000):  # mrs
            return (w & 0x1FFFE0) >> 5 != _DAIF
        if _is(w, 0xFFFFF01F, 0xD503201F):  # hint
            return w & 0xFE0 in _STEPPABLE_HINTS
        return True
    load_literal = _is(w, 0x3B000000, 0x18000000)  # ldr/ldrsw/prfm literal (GP and SIMD)
    exclusive = _is(w, 0x3F800000, 0x08000000)
    return not (load_literal or exclusive or _is(w, 0x1F000000, 0x10000000))  # nor adr/adrp


def uprobe_arm64(word: int) -> str:
    """SIMULATED, STEPPED or REFUSED: what Linux does with a uprobe on this instruction word."""
    if _a64_steppable(word):
        return STEPPED
    return SIMULATED if _a64_simulated(word) else REFUSED


def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def _a64_target(w: int, addr: int) -> int | None:
    """The target of a PC-relative branch (b, bl, b.cond, cbz/cbnz, tbz/tbnz)."""
    if _is(w, 0x7C000000, 0x14000000):
        return addr + 4 * _sext(w & 0x3FFFFFF, 26)
    if _a64_bcond(w) or _is(w, 0x7E000000, 0x34000000):
        return addr + 4 * _sext((w >> 5) & 0x7FFFF, 19)
    if _is(w, 0x7E000000, 0x36000000):
        return addr + 4 * _sext((w >> 5) & 0x3FFF, 14)
    return None


def _a64_literal(w: int, addr: int) -> tuple[int, int] | None:
    """(address, size) of the data a load-literal instruction reads: Go's literal pools sit
    inside function bodies (large and floating-point constants)."""
    if not _is(w, 0x3B000000, 0x18000000):
        return None
    opc, simd = w >> 30, (w >> 26) & 1
    size = (4, 8, 16, 0)[opc] if simd else (4, 8, 4, 0)[opc]  # opc 3: prfm, or reserved
    return (addr + 4 * _sext((w >> 5) & 0x7FFFF, 19), size) if size else None


@lru_cache(maxsize=1)
def arm64_decoder() -> Any:
    """capstone in AArch64 mode with operand details, built once and shared. skipdata: a word
    capstone cannot decode (a literal pool) is returned as data instead of ending the sweep."""
    arch = getattr(capstone, "CS_ARCH_AARCH64", None)  # capstone 6 renamed CS_ARCH_ARM64
    cs = capstone.Cs(capstone.CS_ARCH_ARM64 if arch is None else arch, capstone.CS_MODE_ARM)
    cs.detail = True
    cs.skipdata = True
    return cs


@lru_cache(maxsize=1)
def _arm64_arg_regs() -> frozenset[int]:
    """Registers an arm64 entry probe reads or relies on: R0-R15 (arguments, ABIInternal), R26
    (closure context), R28 (g), R30 (LR: the return address at entry) and RSP, in their 64- and
    32-bit names."""
    try:
        regs, prefix = importlib.import_module("capstone.aarch64_const"), "AARCH64_REG_"
    except ImportError:
        regs, prefix = importlib.import_module("capstone.arm64_const"), "ARM64_REG_"
    names = [f"{w}{n}" for w in "XW" for n in (*range(16), 26, 28, 30)] + ["SP", "WSP", "LR"]
    return frozenset(getattr(regs, prefix + n) for n in names if hasattr(regs, prefix + n))


# Comparisons write only the flags (their destination is XZR), but capstone 5 reports `cmp sp,
# x16`, the stack check itself, as writing SP.
_FLAGS_ONLY = {"cmp", "cmn", "tst", "ccmp", "ccmn", "fcmp", "fcmpe", "fccmp", "fccmpe"}


def _decode_a64(img: Code, start: int, end: int, *, regs: bool,
                limit: int | None = None) -> list[tuple[Insn, int]]:
    """(instruction, its 32-bit word) for each 4-byte word of [start, end); words a load-literal
    of the same range reads are data (mnemonic ".word"), never a RET or BL."""
    if start % 4:
        raise BadInput(f"{start:#x} is not 4-aligned: not an arm64 instruction")
    end -= (end - start) % 4
    if not 0 <= end - start <= MAX_DECODE:
        raise BadInput(f"the function at {start:#x} spans {end - start:,} bytes: not one "
                       "gotrace decodes (a corrupt symbol table?)")
    if limit is not None:
        end = min(end, start + 4 * limit)
    code = img.read(start, end - start)
    words = [int.from_bytes(code[i : i + 4], "little") for i in range(0, len(code) - 3, 4)]
    data: set[int] = set()
    for i, w in enumerate(words):
        lit = _a64_literal(w, start + 4 * i)
        if lit is not None:
            data.update(range(lit[0] - lit[0] % 4, lit[0] + lit[1], 4))
    decoded = {ins.address: ins for ins in arm64_decoder().disasm(code, start)}
    out: list[tuple[Insn, int]] = []
    for i, w in enumerate(words):
        addr = start + 4 * i
        ins = decoded.get(addr)
        if addr in data or ins is None or ins.size != 4 or not ins.id:
            out.append((Insn(addr, 4, ".word", f"{w:#010x}", None, frozenset()), w))
            continue
        written: list[int] = []
        if regs and ins.mnemonic not in _FLAGS_ONLY:
            try:
                _, written = ins.regs_access()
            except capstone.CsError:
                written = []
        out.append((Insn(addr, 4, ins.mnemonic, ins.op_str, _a64_target(w, addr),
                         frozenset(written)), w))
    return out


def decode_arm64(img: Code, start: int, end: int, *, regs: bool = True,
                 limit: int | None = None) -> list[Insn]:
    """`decode` for arm64: one Insn per 4-byte word of [start, end)."""
    return [ins for ins, _ in _decode_a64(img, start, end, regs=regs, limit=limit)]


_COND_LS = 0b1001  # b.ls: C clear or Z set, i.e. SP (or SP - frame) <= g.stackguard0


def entry_probe_arm64(img: Code, start: int, end: int, max_insns: int = 8,
                      morestack: frozenset[int] = frozenset()) -> ProbePoint:
    """`entry_probe` for arm64: the first b.cond of the prologue when nothing before it writes
    R0-R15, R26, R28, LR or SP, else the entry.

    The stack check is `ldr x16, [x28, #16]; cmp sp, x16; b.ls` (large frames first `sub x17,
    sp, #N` and compare x17; huge ones a `subs` and `b.lo` before it). Only a `b.ls` whose target
    block calls one of morestack is marked as the stack check.
    """
    insns = _decode_a64(img, start, min(end, start + 4 * max_insns), regs=True)
    if not insns:
        return ProbePoint(start, False, "could not decode the entry")
    first = uprobe_arm64(insns[0][1])
    if first == SIMULATED:
        return ProbePoint(start, True, "entry instruction is simulated")
    args = _arm64_arg_regs()
    for ins, w in insns:
        if _a64_bcond(w) and ins.target is not None:
            check = (w & 0xF == _COND_LS and start <= ins.target < end
                     and _calls_any_arm64(img, ins.target, end, morestack))
            return ProbePoint(ins.addr, True, f"stack-check branch at +{ins.addr - start}",
                              stack_check=check)
        if ins.regs_written & args or _a64_simulated(w) or ins.mnemonic == ".word":
            break
    if first == REFUSED:
        raise BadInput(f"the function at {start:#x} starts with `{insns[0][0].mnemonic} "
                       f"{insns[0][0].op_str}`, an instruction Linux refuses to uprobe on arm64")
    return ProbePoint(start, False, "no simulated instruction before the body: single-stepped")


def _calls_any_arm64(img: Code, start: int, end: int, targets: frozenset[int],
                     max_insns: int = 48) -> bool:
    """Whether the straight-line block at start (argument spills, `mov x3, x30`, then the bl)
    calls one of targets before any other branch."""
    if not targets or start % 4:
        return False
    for ins, w in _decode_a64(img, start, min(end, start + 4 * max_insns), regs=False):
        if _a64_bl(w):
            return ins.target in targets
        if _a64_simulated(w) and not _is(w, 0x1F000000, 0x10000000):  # a branch (not adr/adrp)
            return False
    return False


def call_sites_arm64(img: Code, start: int, end: int, target: int) -> list[int]:
    """Addresses of `bl target` inside [start, end)."""
    return [i.addr for i, w in _decode_a64(img, start, end, regs=False)
            if _a64_bl(w) and i.target == target and i.mnemonic != ".word"]


def ret_sites_arm64(img: Code, start: int, end: int) -> list[int]:
    """Addresses of every `ret` (simulated by arm64 uprobes, unlike x86's)."""
    return [i.addr for i, w in _decode_a64(img, start, end, regs=False)
            if _a64_ret(w) and i.mnemonic != ".word"]


# -- arm64 addresses, for the readers of globals (allgs, wait reasons) --------------------------


def arm64_sweep(code: Code, start: int, end: int) -> Iterator[Any]:
    """capstone instructions (with operand details) of [start, end), for the readers that
    follow addresses (allgs, wait reasons); words capstone cannot decode are skipped."""
    if not 0 <= end - start <= MAX_DECODE:
        return
    for ins in arm64_decoder().disasm(code.read(start, end - start), start):
        if ins.id and ins.size == 4:
            yield ins


def arm64_reg(ins: Any, reg: int) -> str:
    """The 64-bit name of a general register (`w2` and `x2` are one register)."""
    name = str(ins.reg_name(reg))
    return "x" + name[1:] if name.startswith("w") and name not in ("wzr", "wsp") else name


def arm64_shift(op: Any) -> int:
    """The left shift of an immediate operand (`#1, lsl #12`), else 0."""
    return int(op.shift.value) if op.shift.type == arm64_const.ARM64_SFT_LSL else 0


class Arm64Addresses:
    """Follows the addresses `adrp` and `adrp; add` pairs put in registers, one instruction at a
    time, so that each memory operand can be resolved to the link-time address it reaches."""

    def __init__(self) -> None:
        self.page: dict[str, int] = {}  # register -> the page `adrp` loaded
        self.addr: dict[str, int] = {}  # register -> page + offset, from `add` to a page

    def target(self, ins: Any, op: Any) -> int | None:
        """The address a memory operand reaches, if its base holds a known address."""
        if op.mem.index != 0:
            return None
        base = arm64_reg(ins, op.mem.base)
        if base in self.addr:
            return self.addr[base] + int(op.mem.disp)
        if base in self.page:
            return self.page[base] + int(op.mem.disp)
        return None

    def step(self, ins: Any) -> int | None:
        """Update the registers after `ins` (call after reading its memory operands); returns
        the address it formed if it is the `add` of an `adrp; add` pair."""
        ops = ins.operands
        page = addr = None
        if ins.mnemonic == "adrp" and len(ops) == 2 and ops[1].type == arm64_const.ARM64_OP_IMM:
            page = int(ops[1].imm)
        elif (ins.mnemonic == "add" and len(ops) == 3 and ops[1].type == arm64_const.ARM64_OP_REG
              and ops[2].type == arm64_const.ARM64_OP_IMM):
            src = arm64_reg(ins, ops[1].reg)
            if src in self.page:
                addr = self.page[src] + (int(ops[2].imm) << arm64_shift(ops[2]))
        try:
            _, written = ins.regs_access()
        except capstone.CsError:
            written = [op.reg for op in ops[:1] if op.type == arm64_const.ARM64_OP_REG]
        for reg in written:
            name = arm64_reg(ins, reg)
            self.page.pop(name, None)
            self.addr.pop(name, None)
        if page is not None:
            self.page[arm64_reg(ins, ops[0].reg)] = page
        elif addr is not None:
            self.addr[arm64_reg(ins, ops[0].reg)] = addr
        return addr
