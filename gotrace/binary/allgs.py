"""Where the runtime keeps its list of every goroutine: `runtime.allgs`, `allglen`, `allgptr`.

With symbols they are named in .symtab. Stripped binaries keep no name for them, but
`runtime.allgadd` (in .gopclntab in every version, never inlined) does, in every Go release:
`allgs = append(allgs, gp)` (loads and stores allgs, allgs+8, allgs+16), then
`atomicstorep(&allgptr, &allgs[0])` and `atomic.Storeuintptr(&allglen, n)`, two
`lea reg, [rip+X]; xchg [reg], ...` pairs (docs/go-runtime.md#goroutines-that-existed-before).
Decoding that body gives the three addresses; the result is checked against the symbol table
in the unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from capstone import x86_const

from gotrace.binary.disasm import MAX_DECODE, Code, x86_decoder
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


def decode_allgadd(code: Code, start: int, end: int) -> AllgsAddrs | None:
    """The addresses `runtime.allgadd` stores to, or None when its body has another shape."""
    rip_targets: list[int] = []  # every RIP-relative address the body reads or writes
    lea: dict[int, int] = {}  # register -> address most recently loaded into it by LEA
    atomic_stores: list[int] = []
    if not 0 <= end - start <= MAX_DECODE:
        return None
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
    if len(atomic_stores) < 2:
        return None
    accessed = set(rip_targets)
    triples = sorted(a for a in accessed if a + 8 in accessed and a + 16 in accessed)
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
            found = decode_allgadd(img, f.entry, f.end)
        except BadInput:
            found = None
        if found is not None:
            return found
    raise BadInput(f"{img.name}: cannot find the runtime's goroutine list (runtime.allgs): "
                   "no symbol, and runtime.allgadd does not have the expected shape")
