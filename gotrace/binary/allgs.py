"""Where the runtime keeps its list of every goroutine: `runtime.allgs`, `allglen`, `allgptr`.

With symbols they are named in .symtab. Stripped binaries keep no name for them, but
`runtime.allgadd` (in .gopclntab in every version, never inlined) does, in every Go release:
`allgs = append(allgs, gp)` (loads and stores allgs, allgs+8, allgs+16), then
`atomicstorep(&allgptr, &allgs[0])` and `atomic.Storeuintptr(&allglen, n)`, on x86-64 two
`lea reg, [rip+X]; xchg [reg], ...` pairs (docs/go-runtime.md#goroutines-that-existed-before).
On arm64 every global is reached through `adrp` (its 4 KB page) and either an `add` of the
offset in the page or a load/store with that offset (`ldr`/`str`/`ldp`), and the two atomic
stores are `adrp x2; add x2, x2, #off; stlr x1, [x2]`, in that order.
Decoding that body gives the three addresses; the result is checked against the symbol table
in the unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from capstone import arm64_const, x86_const

from gotrace.binary.disasm import MAX_DECODE, Arm64Addresses, Code, arm64_sweep, x86_decoder
from gotrace.binary.elf import ElfImage
from gotrace.binary.pclntab import Pclntab
from gotrace.errors import BadInput


@dataclass(frozen=True)
class AllgsAddrs:
    """Link-time addresses (add the PIE load bias at run time)."""

    allgs: int  # []*g slice header: array, len, cap
    allglen: int  # uintptr, stored after allgptr
    allgptr: int  # **g, the array, stored before allglen
    source: str


def from_symbols(img: ElfImage) -> AllgsAddrs | None:
    names = ("runtime.allgs", "runtime.allglen", "runtime.allgptr")
    syms = [img.symbol(n) for n in names]
    if any(s is None for s in syms):
        return None
    allgs, allglen, allgptr = (s[0] for s in syms if s is not None)
    return AllgsAddrs(allgs, allglen, allgptr, "symbol table")


def _decode_allgadd_arm64(code: Code, start: int, end: int) -> tuple[list[int], list[int]]:
    """(addresses read or written, atomic-store targets in order) of an arm64 body."""
    regs = Arm64Addresses()
    accessed: list[int] = []
    atomic_stores: list[int] = []
    for ins in arm64_sweep(code, start, end):
        ops = ins.operands
        reg_ops = [op for op in ops if op.type == arm64_const.ARM64_OP_REG]
        for op in ops:
            if op.type != arm64_const.ARM64_OP_MEM:
                continue
            addr = regs.target(ins, op)
            if addr is None:
                continue
            if ins.mnemonic == "stlr":  # a store-release: atomic.Store*, atomicstorep
                atomic_stores.append(addr)
                continue
            accessed.append(addr)
            if ins.mnemonic in ("ldp", "stp") and len(reg_ops) == 2:  # two words
                width = 4 if ins.reg_name(reg_ops[0].reg).startswith("w") else 8
                accessed.append(addr + width)
        if ins.mnemonic == "ret":
            break
        regs.step(ins)
    return accessed, atomic_stores


def _decode_allgadd_x86(code: Code, start: int, end: int) -> tuple[list[int], list[int]]:
    """(RIP-relative addresses read or written, atomic-store targets in order) of an x86-64 body."""
    rip_targets: list[int] = []  # every RIP-relative address the body reads or writes
    lea: dict[int, int] = {}  # register -> address most recently loaded into it by LEA
    atomic_stores: list[int] = []
    for ins in x86_decoder().disasm(code.read(start, end - start), start):
        ops = ins.operands
        for op in ops:
            if op.type == x86_const.X86_OP_MEM and op.mem.base == x86_const.X86_REG_RIP:
                addr = ins.address + ins.size + op.mem.disp
                if ins.mnemonic == "lea" and ops[0].type == x86_const.X86_OP_REG:
                    lea[ops[0].reg] = addr
                else:
                    rip_targets.append(addr)
        if ins.mnemonic == "xchg" and ops and ops[0].type == x86_const.X86_OP_MEM:
            base = ops[0].mem.base
            if ops[0].mem.disp == 0 and ops[0].mem.index == 0 and base in lea:
                atomic_stores.append(lea[base])
        elif ins.mnemonic == "ret":
            break
    return rip_targets, atomic_stores


def decode_allgadd(code: Code, start: int, end: int, machine: str) -> AllgsAddrs | None:
    """The addresses `runtime.allgadd` stores to, or None when its body has another shape.

    machine: the image's ELF machine (`ElfImage.machine`), "EM_X86_64" or "EM_AARCH64".
    """
    if not 0 <= end - start <= MAX_DECODE:
        return None
    if machine == "EM_X86_64":
        accessed, atomic_stores = _decode_allgadd_x86(code, start, end)
    elif machine == "EM_AARCH64":
        accessed, atomic_stores = _decode_allgadd_arm64(code, start, end)
    else:
        return None
    if len(atomic_stores) < 2:
        return None
    seen = set(accessed)
    triples = sorted(a for a in seen if a + 8 in seen and a + 16 in seen)
    if len(triples) != 1:
        return None
    return AllgsAddrs(triples[0], atomic_stores[1], atomic_stores[0],
                      "decoded from runtime.allgadd")


def find_allgs(img: ElfImage, pcln: Pclntab) -> AllgsAddrs:
    """Symbols when present, else the decoded body of runtime.allgadd; BadInput if neither."""
    found = from_symbols(img)
    if found is not None:
        return found
    f = pcln.lookup("runtime.allgadd")
    if f is not None:
        try:
            found = decode_allgadd(img, f.entry, f.end, img.machine)
        except BadInput:
            found = None
        if found is not None:
            return found
    raise BadInput(f"{img.name}: cannot find the runtime's goroutine list (runtime.allgs): "
                   "no symbol, and runtime.allgadd does not have the expected shape")
