"""The wait-reason strings of this very binary.

`waitReason` values are renumbered in almost every Go release
(docs/go-runtime.md#wait-reasons), so the strings are read from the binary's own
`runtime.waitReasonStrings` array, never from a table.
Stripped binaries have no symbol for it; `runtime.waitReason.String` (always in pclntab)
bounds-checks against the array length and then takes its address: on x86-64 `cmp al, N` and a
RIP-relative LEA, on arm64 `cmp w2, #N` and an `adrp x3, page; add x3, x3, #off` pair.
"""

from __future__ import annotations

from capstone import arm64_const

from gotrace.binary.disasm import Arm64Addresses, arm64_shift, arm64_sweep, decode
from gotrace.binary.elf import ElfImage
from gotrace.errors import BadInput

# waitReason is a uint8, and its strings are short phrases ("chan receive"): larger values
# mean a corrupt array, whose reading could otherwise copy the file once per entry.
MAX_REASONS = 256
MAX_LENGTH = 256


def _read_strings(img: ElfImage, addr: int, count: int) -> list[str] | None:
    raw = img.read(addr, 16 * count)
    out = []
    for i in range(count):
        n = int.from_bytes(raw[16 * i + 8 : 16 * i + 16], "little")
        ptr = img.read_pointer(addr + 16 * i) if n else 0  # relocated (PIE)
        if n > MAX_LENGTH:
            return None
        out.append(img.read(ptr, n).decode(errors="replace") if n else "")
    return out


def from_symbol(img: ElfImage) -> list[str] | None:
    sym = img.symbol("runtime.waitReasonStrings")
    if sym is None or sym[1] == 0 or sym[1] % 16 or sym[1] // 16 > MAX_REASONS:
        return None
    return _read_strings(img, sym[0], sym[1] // 16)


def from_string_method(img: ElfImage, start: int, end: int) -> list[str] | None:
    """Decode `runtime.waitReason.String` (`img.machine`: x86-64 or arm64): the first compare
    with a constant gives the length, the last address the body forms the array."""
    if img.machine == "EM_X86_64":
        count, array = _string_method_x86(img, start, end)
    elif img.machine == "EM_AARCH64":
        count, array = _string_method_arm64(img, start, end)
    else:
        return None
    if not count or array is None or count > MAX_REASONS:
        return None
    try:
        strings = _read_strings(img, array, count)
    except BadInput:
        return None
    return strings if strings and any(s == "chan receive" for s in strings) else None


def _string_method_x86(img: ElfImage, start: int, end: int) -> tuple[int | None, int | None]:
    """`cmp al, N` (the length) and the last RIP-relative LEA (the array)."""
    count = None
    array = None
    for ins in decode(img, start, end, regs=False):
        if ins.mnemonic == "cmp" and count is None and ins.op_str.startswith(("al,", "eax,")):
            try:
                count = int(ins.op_str.split(",")[1].strip(), 0)
            except ValueError:
                continue
        if ins.mnemonic == "lea" and "rip" in ins.op_str:
            disp = ins.op_str.split("[rip")[1].split("]")[0].replace(" ", "")
            try:
                array = ins.addr + ins.size + int(disp, 0)
            except ValueError:
                continue
    return count, array


def _string_method_arm64(img: ElfImage, start: int, end: int) -> tuple[int | None, int | None]:
    """`cmp w2, #N` (the length; w2 is the uint8 argument zero-extended) and the last address
    an `adrp; add` pair forms (the array; the first such address is the string "?")."""
    count = None
    array = None
    regs = Arm64Addresses()
    for ins in arm64_sweep(img, start, end):
        ops = ins.operands
        if (ins.mnemonic == "cmp" and count is None and len(ops) == 2
                and ops[1].type == arm64_const.ARM64_OP_IMM):
            count = int(ops[1].imm) << arm64_shift(ops[1])
        addr = regs.step(ins)
        if addr is not None:
            array = addr
    return count, array


def wait_reasons(img: ElfImage, string_method: tuple[int, int] | None) -> tuple[list[str], str]:
    """(strings indexed by waitReason, where they came from)."""
    names = from_symbol(img)
    if names:
        return names, "runtime.waitReasonStrings"
    if string_method is not None:
        names = from_string_method(img, *string_method)
        if names:
            return names, "decoded from runtime.waitReason.String"
    raise BadInput(f"{img.name}: cannot find the wait-reason strings of this Go runtime")
