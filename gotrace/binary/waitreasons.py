"""The wait-reason strings of this very binary.

`waitReason` values are renumbered in almost every Go release
(docs/go-runtime.md#wait-reasons), so the strings are read from the binary's own
`runtime.waitReasonStrings` array, never from a table.
Stripped binaries have no symbol for it; `runtime.waitReason.String` (always in pclntab)
bounds-checks against the array length and then takes its address with a RIP-relative LEA.
"""

from __future__ import annotations

from gotrace.binary.disasm import decode
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
        ptr = int.from_bytes(raw[16 * i : 16 * i + 8], "little")
        n = int.from_bytes(raw[16 * i + 8 : 16 * i + 16], "little")
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
    """Decode `runtime.waitReason.String`: `cmp al, N` gives the length, the last LEA the array."""
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
    if not count or array is None or count > MAX_REASONS:
        return None
    try:
        strings = _read_strings(img, array, count)
    except BadInput:
        return None
    return strings if strings and any(s == "chan receive" for s in strings) else None


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
