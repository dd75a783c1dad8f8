"""Seed corpora for the fuzz harnesses, made from real Go binaries of every release we support.

`python tests/fuzz/seeds.py [OUT_DIR]` builds tests/targets/hello with every toolchain of
tests/gobuild.py GO_VERSIONS (plain, stripped and PIE), reduces each binary to a *mini image*
and writes one seed directory per harness (default .cache/fuzz/seeds/<harness>/). Nothing
here is committed: seeds are derived, and a few seconds to remake.

A mini image keeps, at their original virtual addresses, only the bytes the readers look at:
the build info, a pclntab rebuilt around a few dozen functions (the runtime functions gotrace
probes, functions with inline trees, and each one's successor, which bounds it), their inline
trees, moduledata, the code of the functions gotrace decodes, runtime.waitReasonStrings with
its strings, a few symbols and the DWARF of runtime.g, gobuf and stack. A few KB instead of
megabytes: fast executions, and mutations that land in what is parsed.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gotrace.binary import disasm
from gotrace.binary.dwarf import _Reader, _section, _uleb, _units_with
from gotrace.binary.elf import ElfImage
from gotrace.binary.offsets import TABLE, table_offsets
from gotrace.binary.pclntab import (
    FUNCDATA_INL_TREE,
    MAGIC_GO119,
    PCDATA_INL_TREE_INDEX,
    Pclntab,
)
from tests.fuzz.common import (
    NOALLOC,
    PF_R,
    PF_W,
    PF_X,
    SEEDS,
    MiniImage,
    Section,
    digest,
    pack,
    write_elf,
)

# The functions whose code gotrace decodes (probe placement, wait reasons, allgs).
DECODED = ("runtime.gopark", "runtime.goexit1", "runtime.execute", "runtime.newproc.func1",
           "runtime.newproc1", "runtime.waitReason.String", "runtime.allgadd")
# Functions the readers look up by name, beyond those.
LOOKED_UP = ("runtime.runqput", "runtime.main", "runtime.systemstack_switch",
             "runtime.cgocallbackg", "main.main", "runtime.morestack", "runtime.morestack_noctxt")
SYMBOLS = ("runtime.allgs", "runtime.allglen", "runtime.allgptr", "runtime.waitReasonStrings",
           "runtime.firstmoduledata", "runtime.text", "go:func.*", "go.func.*")
DISASM_BYTES = 256  # code per disasm seed: a prologue and some body, decoded fast
SMALL_FUNC = 1024  # bytes of code: a function whose pc-value tables are short
# Code kept per decoded function: the whole body where gotrace decodes it all, else what the
# entry probe looks at (64 bytes, and the block its stack check jumps to: the whole of the hooked
# functions); newproc1's RETs are only a fallback (none: BadInput).
CODE_KEPT = {"runtime.newproc.func1": 1 << 16, "runtime.waitReason.String": 1 << 16,
             "runtime.allgadd": 1 << 16, "runtime.newproc1": 0, "runtime.gopark": 1 << 16,
             "runtime.goexit1": 1 << 16, "runtime.execute": 1 << 16}
ENTRY_BYTES = 64
INLINE_FUNCS = 6  # functions with inline trees kept, for frames() and inline_sites()
# The pclntab harness looks at every function it is given: only small ones, and the two that
# its lookups name.
PCLNTAB_NAMES = ("runtime.gopark", "runtime.systemstack_switch")
HARNESSES = ("elf", "buildinfo", "pclntab", "dwarf", "waitreasons", "disasm", "allgs",
             "gobinary", "ringbuf", "gdecode")


# -- pclntab -----------------------------------------------------------------------------------


def _table_extent(buf: bytes, start: int) -> int:
    """End offset (after the terminating 0) of the pc-value table at buf[start:]."""
    p = start
    pc = 0
    while True:
        if buf[p] == 0 and pc != 0:
            return p + 1
        while buf[p] & 0x80:  # value delta
            p += 1
        p += 1
        pd = 0
        shift = 0
        while True:  # pc delta
            b = buf[p]
            p += 1
            pd |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        pc += pd or 1


def mini_pclntab(img: ElfImage, pcln: Pclntab, keep: list[int]) -> tuple[bytes, bytes,
                                                                         list[Section]]:
    """(pclntab of the kept functions, its moduledata, their inline trees as sections)."""
    hdr = pcln._hdr
    buf = pcln._buf
    fsize = pcln._func_size
    names = bytearray()
    name_map: dict[int, int] = {}

    def name(orig: int) -> int:
        if orig not in name_map:
            start = hdr.funcname + orig
            name_map[orig] = len(names)
            names.extend(buf[start : buf.index(b"\0", start) + 1])
        return name_map[orig]

    pctab = bytearray(b"\0")
    pc_map: dict[int, int] = {0: 0}

    def table(off: int) -> int:
        if off not in pc_map:
            start = hdr.pctab + off
            pc_map[off] = len(pctab)
            pctab.extend(buf[start : _table_extent(buf, start)])
        return pc_map[off]

    cutab = bytearray()
    files = bytearray()
    file_map: dict[int, int] = {}
    full_cutab = pcln._cutab

    recs: list[bytes] = []
    trees: list[Section] = []
    go119 = pcln.magic == MAGIC_GO119
    entry_size, name_at = (20, 12) if go119 else (16, 4)
    for i in keep:
        p = hdr.pcln + pcln._func_offs[i]
        (npcdata,) = struct.unpack_from("<I", buf, p + 28)
        nfuncdata = buf[p + fsize - 1]
        rec = bytearray(buf[p : p + fsize + 4 * npcdata + 4 * nfuncdata])
        (name_off,) = struct.unpack_from("<i", rec, 4)
        pcsp, pcfile, pcln_off, _npcdata, cu = struct.unpack_from("<IIIII", rec, 16)
        struct.pack_into("<i", rec, 4, name(name_off))
        struct.pack_into("<III", rec, 16, table(pcsp), table(pcfile), table(pcln_off))
        nfiles = max(pcln._decode(pcfile)[1], default=-1) + 1 if pcfile else 0
        struct.pack_into("<I", rec, 32, len(cutab) // 4)
        for k in range(nfiles):
            foff = full_cutab[cu + k] if cu + k < len(full_cutab) else 0xFFFFFFFF
            if foff != 0xFFFFFFFF:
                if foff not in file_map:
                    start = hdr.filetab + foff
                    file_map[foff] = len(files)
                    files.extend(buf[start : buf.index(b"\0", start) + 1])
                foff = file_map[foff]
            cutab += struct.pack("<I", foff)
        for k in range(npcdata):
            (v,) = struct.unpack_from("<I", rec, fsize + 4 * k)
            struct.pack_into("<I", rec, fsize + 4 * k, table(v))
        if pcln.gofunc is not None and npcdata > PCDATA_INL_TREE_INDEX:
            fd = pcln._funcdata(i, FUNCDATA_INL_TREE)
            (pcdata,) = struct.unpack_from("<I", buf, p + fsize + 4 * PCDATA_INL_TREE_INDEX)
            if fd is not None and pcdata:
                top = max(pcln._decode(pcdata)[1])
                if 0 <= top < 256:
                    raw = bytearray(img.read(pcln.gofunc + fd, (top + 1) * entry_size))
                    for k in range(top + 1):
                        (orig,) = struct.unpack_from("<i", raw, k * entry_size + name_at)
                        struct.pack_into("<i", raw, k * entry_size + name_at, name(orig))
                    trees.append(Section("", pcln.gofunc + fd, PF_R, bytes(raw)))
        recs.append(bytes(rec))

    def align(b: bytearray) -> None:
        b.extend(b"\0" * (-len(b) % 8))

    align(names)
    align(cutab)
    align(files)
    align(pctab)
    funcname = 72
    cu_off = funcname + len(names)
    filetab = cu_off + len(cutab)
    pctab_off = filetab + len(files)
    pcln_off = pctab_off + len(pctab)
    ftab = bytearray()
    body = bytearray()
    base = 8 * (len(keep) + 1)
    for i, record in zip(keep, recs, strict=True):
        ftab += struct.pack("<II", pcln._entry_offs[i], base + len(body))
        body += record
        body.extend(b"\0" * (-len(body) % 4))
    ftab += struct.pack("<II", pcln._entry_offs[keep[-1] + 1], 0)
    header = struct.pack("<IBBBB8Q", pcln.magic, 0, 0, hdr.min_lc, 8, len(keep), hdr.nfiles,
                         hdr.text_start, funcname, cu_off, filetab, pctab_off, pcln_off)
    tab = header + names + cutab + files + pctab + ftab + body

    md = b""
    if pcln.moduledata_addr is not None:
        m = bytearray(img.read(pcln.moduledata_addr, 352))
        struct.pack_into("<QQQ", m, 8, pcln.header_addr + funcname, len(names), len(names))
        struct.pack_into("<QQQ", m, 128, pcln.header_addr + pcln_off, len(keep) + 1,
                         len(keep) + 1)
        md = bytes(m)
    return bytes(tab), md, trees


def _kept_functions(pcln: Pclntab, names: tuple[str, ...] = (*DECODED, *LOOKED_UP)) -> list[int]:
    """The functions named (when small enough, or when needed by GoBinary.open), a few
    small ones with inline trees, and the successor of each (it bounds its predecessor)."""
    funcs = pcln.functions()
    index = {f.entry: i for i, f in enumerate(funcs)}
    keep: set[int] = set()
    for n in names:
        f = pcln.lookup(n)
        if f is not None:
            keep.add(index[f.entry])
    # Small functions with inline trees: their tables decode fast, and there are enough of them.
    with_trees = [i for i in range(len(funcs) - 1) if funcs[i].size < SMALL_FUNC
                  and funcs[i + 1].size < SMALL_FUNC
                  and pcln._funcdata(i, FUNCDATA_INL_TREE) is not None]
    mains = [i for i in with_trees if funcs[i].name.startswith("main.")]
    keep.update((mains + with_trees)[:INLINE_FUNCS])
    keep.update({i + 1 for i in keep if i + 1 < len(funcs)})
    return sorted(keep)


# -- wait reasons ------------------------------------------------------------------------------


def _wait_reason_array(img: ElfImage, pcln: Pclntab) -> tuple[int, int] | None:
    """(address, count) of runtime.waitReasonStrings: its symbol, else as waitreasons decodes."""
    sym = img.symbol("runtime.waitReasonStrings") if img.has_symtab else None
    if sym is not None:
        return sym[0], sym[1] // 16
    f = pcln.lookup("runtime.waitReason.String")
    if f is None:
        return None
    count = array = None
    for ins in disasm.decode(img, f.entry, f.end):
        if ins.mnemonic == "cmp" and count is None and ins.op_str.startswith(("al,", "eax,")):
            count = int(ins.op_str.split(",")[1].strip(), 0)
        if ins.mnemonic == "lea" and "rip" in ins.op_str:
            disp = ins.op_str.split("[rip")[1].split("]")[0].replace(" ", "")
            array = ins.addr + ins.size + int(disp, 0)
    return None if count is None or array is None else (array, count)


# -- DWARF -------------------------------------------------------------------------------------


def mini_dwarf(img: ElfImage, wanted: tuple[str, ...] = ("runtime.g", "runtime.gobuf",
                                                          "runtime.stack")) -> tuple[bytes,
                                                                                     bytes] | None:
    """(.debug_info, .debug_abbrev) holding one unit with just the wanted struct subtrees."""
    info = _section(img, "debug_info")
    abbrev = _section(img, "debug_abbrev")
    if info is None or abbrev is None:
        return None
    reader = _Reader(img, info, abbrev)
    units = _units_with(info, reader.units(), b"runtime.g")
    if not units:
        return None
    u = units[0]
    table = reader._table(u.abbrev_offset)
    p = u.dies
    depth = 0
    capture: tuple[int, int] | None = None  # (start, depth)
    parts: list[bytes] = []
    while p < u.end:
        start = p
        code, p = _uleb(info, p)
        if code == 0:
            depth -= 1
            if capture is not None and depth == capture[1]:
                parts.append(info[capture[0] : p])
                capture = None
            if depth < 0:
                break
            continue
        tag, children, specs = table[code]
        name = None
        for attr, form, _implicit in specs:
            if attr == 0x03:
                name = reader._string(form, p, u)
            p = reader._skip(form, p, u)
        if capture is None and tag == 0x13 and children and name in wanted:
            capture = (start, depth)
        if children:
            depth += 1
    dies = b"".join(parts)
    if u.version >= 5:
        head = struct.pack("<HBBI", u.version, 1, u.addr_size, 0)
    else:
        head = struct.pack("<HIB", u.version, 0, u.addr_size)
    body = head + dies
    ab = abbrev[u.abbrev_offset :]
    return struct.pack("<I", len(body)) + body, ab[:8192]


# -- the whole mini image ----------------------------------------------------------------------


def mini_image(path: Path, names: tuple[str, ...] = (*DECODED, *LOOKED_UP)
               ) -> tuple[MiniImage, dict[str, bytes]]:
    """(mini image of a Go binary, code of the decoded functions by name); its pclntab keeps
    the functions `names` (see _kept_functions)."""
    img = ElfImage(str(path))
    pcln = Pclntab(img)
    mini = MiniImage(pie=img.is_pie)
    rng = img.section_range(".go.buildinfo")
    bi = img.section_bytes(".go.buildinfo")
    if rng is not None and bi is not None:
        mini.sections.append(Section(".go.buildinfo", rng[0], PF_R | PF_W, bi[:4096]))
    tab, md, trees = mini_pclntab(img, pcln, _kept_functions(pcln, names))
    mini.sections.append(Section(".gopclntab", pcln.header_addr, PF_R, tab))
    if md and pcln.moduledata_addr is not None:
        mini.sections.append(Section(".noptrdata", pcln.moduledata_addr, PF_R | PF_W, md))
    mini.sections += merge_chunks(trees)
    code: dict[str, bytes] = {}
    texts: list[Section] = []
    for n in DECODED:
        f = pcln.lookup(n)
        keep = min(f.size, CODE_KEPT.get(n, ENTRY_BYTES)) if f is not None else 0
        if f is not None and keep:
            code[n] = img.read(f.entry, keep)
            texts.append(Section("", f.entry, PF_R | PF_X, code[n]))
    mini.sections += merge_chunks(texts)
    arr = _wait_reason_array(img, pcln)
    if arr is not None:
        addr, count = arr
        top = max(s.vaddr + s.memsz for s in img.segments)
        str_base = (top + 0xFFFF) & ~0xFFFF
        raw = img.read(addr, 16 * count)
        strings = bytearray()
        new = bytearray()
        for k in range(count):
            ptr, n = struct.unpack_from("<QQ", raw, 16 * k)
            new += struct.pack("<QQ", str_base + len(strings) if n else 0, n)
            strings += img.read(ptr, n) if n else b""
        mini.sections.append(Section("", addr, PF_R | PF_W, bytes(new)))
        mini.sections.append(Section("", str_base, PF_R, bytes(strings)))
    if img.has_symtab:
        for n in SYMBOLS:
            sym = img.symbol(n)
            if sym is not None:
                mini.symbols[n] = sym
        dw = mini_dwarf(img)
        if dw is not None:
            mini.sections.append(Section(".debug_info", 0, NOALLOC, dw[0]))
            mini.sections.append(Section(".debug_abbrev", 0, NOALLOC, dw[1]))
    img.close()
    return mini, code


def merge_chunks(chunks: list[Section], gap: int = 4096) -> list[Section]:
    """Chunks less than `gap` apart as one (the gap zero-filled): fewer segments to parse."""
    out: list[Section] = []
    for c in sorted(chunks, key=lambda c: c.vaddr):
        last = out[-1] if out else None
        if last is not None and last.flags == c.flags and (
                last.vaddr + len(last.data) <= c.vaddr < last.vaddr + len(last.data) + gap):
            pad = c.vaddr - last.vaddr - len(last.data)
            out[-1] = Section(last.name, last.vaddr, last.flags, last.data + bytes(pad) + c.data)
        else:
            out.append(c)
    return out


def harness_seeds(mini: MiniImage, code: dict[str, bytes]) -> dict[str, list[bytes]]:
    """Seed inputs per harness from one mini image."""
    out: dict[str, list[bytes]] = {h: [] for h in HARNESSES}
    by_name = {s.name: s for s in mini.sections if s.name}
    text = {s.vaddr: s for s in mini.sections if s.flags & PF_X}
    syms = dict(mini.symbols)

    def chunk_of(c: bytes) -> Section:
        return next(s for s in text.values() if c in s.data)

    def fn_symbol(n: str) -> dict[str, tuple[int, int]]:
        c = code.get(n)
        if c is None:
            return {}
        s = chunk_of(c)
        return {f"fuzz:{n}": (s.vaddr + s.data.index(c), len(c))}

    out["elf"].append(write_elf(MiniImage(
        [Section(s.name, s.vaddr, s.flags, s.data[:256]) for s in mini.sections if s.name],
        syms, mini.pie)))
    out["gobinary"].append(write_elf(mini))
    if ".debug_info" in by_name:
        out["gobinary"].append(write_elf(mini, compress_debug=True))
        out["elf"].append(write_elf(MiniImage(
            [s for s in mini.sections if s.flags & NOALLOC], syms), compress_debug=True))
        info, ab = by_name[".debug_info"].data, by_name[".debug_abbrev"].data
        out["dwarf"].append(struct.pack("<HH", len(ab), 0) + ab + info)
    if ".go.buildinfo" in by_name:
        out["buildinfo"].append(pack(MiniImage([by_name[".go.buildinfo"]])))
    loaded = [s for s in mini.sections if not s.flags & NOALLOC and s.name != ".gopclntab"]
    ws = fn_symbol("runtime.waitReason.String")
    wr = {n: v for n, v in syms.items() if n == "runtime.waitReasonStrings"}
    wr_code = [chunk_of(code["runtime.waitReason.String"])] if ws else []
    out["waitreasons"].append(pack(MiniImage(
        [s for s in loaded if s.name != ".go.buildinfo" and not s.flags & PF_X] + wr_code,
        ws | wr)))
    out["waitreasons"].append(pack(MiniImage([s for s in loaded if s.flags & PF_X or
                                              not s.name], ws)))
    ag = fn_symbol("runtime.allgadd")
    if ag:
        start = ag["fuzz:runtime.allgadd"][0]
        body = Section("", start, PF_R | PF_X, code["runtime.allgadd"])
        out["allgs"].append(pack(MiniImage([body], ag | {
            n: v for n, v in syms.items() if n.startswith("runtime.allg")})))
        out["allgs"].append(pack(MiniImage([body], ag)))
    for c in code.values():
        chunk = chunk_of(c)
        start = chunk.vaddr + chunk.data.index(c)
        target = 0
        for ins in disasm.decode(_Code(start, c), start, start + min(len(c), DISASM_BYTES)):
            if ins.mnemonic == "call" and ins.target is not None:
                target = ins.target
                break
        for op in range(3):
            out["disasm"].append(struct.pack("<BQQ", op, start, target) + c[:DISASM_BYTES])
    return out


def pclntab_seed(mini: MiniImage) -> bytes:
    """The pclntab harness' input: what Pclntab reads (no code, no DWARF)."""
    return pack(MiniImage(
        [s for s in mini.sections if not s.flags & (PF_X | NOALLOC)],
        {n: v for n, v in mini.symbols.items() if n in ("runtime.firstmoduledata",
                                                        "runtime.text", "go:func.*",
                                                        "go.func.*")}, mini.pie))


class _Code:
    def __init__(self, start: int, code: bytes) -> None:
        self.start, self.code = start, code

    def read(self, vaddr: int, size: int) -> bytes:
        return self.code[vaddr - self.start : vaddr - self.start + size]


# -- inputs not taken from binaries ------------------------------------------------------------


def ringbuf_seeds() -> list[bytes]:
    """Ring-buffer contents: ordinary records, busy, discarded and odd-sized ones."""
    ev = struct.Struct("<QQQQQQII")
    rec = struct.pack("<II", ev.size, 0) + ev.pack(1, 2, 3, 4, 5, 6, 7, 8)
    busy = struct.pack("<II", ev.size | 1 << 31, 0) + bytes(ev.size)
    discard = struct.pack("<II", ev.size | 1 << 30, 0) + bytes(ev.size)
    odd = struct.pack("<II", 12, 0) + bytes(16)
    out = []
    for body in (rec * 3, rec + discard + rec, rec + odd + rec + busy, odd, rec * 2 + busy):
        for n in (len(body), len(body) - 8, 24):
            out.append(struct.pack("<I", n) + body)
    return out


G_FIELDS = ("status", "goid", "waitreason", "gopc", "startpc", "parent_goid", "sched_sp",
            "sched_pc", "sched_bp", "stack_lo", "stack_hi", "m", "syscallsp", "syscallpc",
            "syscallbp", "waitsince", "tracking_seq")
NONE16 = 0xFFFF


def gdecode_seeds() -> list[bytes]:
    """A runtime.g at 0x1000 parked on a stack of three frames, with every release's offsets.

    Input layout (tests/fuzz/fuzz_gdecode.py): selector u8, 17 u16 offsets (0xffff =
    absent), gaddr u64, then memory that starts at address 0x1000.
    """
    out = []
    base = 0x1000
    for minor in sorted(TABLE):
        off = table_offsets(minor)
        mem = bytearray(0x2000)
        stack_lo, stack_hi = base + 0x1000, base + 0x2000
        sp = stack_lo + 0x800
        bp1, bp2 = sp + 0x40, sp + 0x100

        def put(o: int | None, v: int, fmt: str = "<Q", mem: bytearray = mem) -> None:
            if o is not None:
                struct.pack_into(fmt, mem, o, v)

        put(off.status, 4, "<I")
        put(off.goid, 42)
        put(off.waitreason, 7, "<B")
        put(off.gopc, 0x401000)
        put(off.startpc, 0x402000)
        put(off.parent_goid, 1)
        put(off.sched_sp, sp)
        put(off.sched_pc, 0x403000)
        put(off.sched_bp, bp1)
        put(off.stack_lo, stack_lo)
        put(off.stack_hi, stack_hi)
        struct.pack_into("<QQ", mem, bp1 - base, bp2, 0x404000)
        struct.pack_into("<QQ", mem, bp2 - base, 0, 0x405000)
        offs = [getattr(off, f) for f in G_FIELDS]
        head = struct.pack("<17H", *(NONE16 if o is None else o for o in offs))
        for selector in (minor - min(TABLE), 0x80):  # built-in offsets, then as fuzzed ones
            out.append(bytes([selector]) + head + struct.pack("<Q", base) + bytes(mem))
    return out


def write_seeds(out_dir: Path = SEEDS, versions: tuple[str, ...] | None = None,
                variants: tuple[str, ...] = ("plain", "stripped", "pie")) -> dict[str, int]:
    """Build the binaries, write every harness' seeds; returns the count per harness."""
    from tests.gobuild import GO_VERSIONS, TARGETS, build_go

    seeds: dict[str, list[bytes]] = {h: [] for h in HARNESSES}
    for version in versions or GO_VERSIONS:
        for variant in variants:
            path = build_go(version, TARGETS / "hello", variant)
            mini, code = mini_image(path)
            for h, inputs in harness_seeds(mini, code).items():
                seeds[h] += inputs
            seeds["pclntab"].append(pclntab_seed(mini_image(path, PCLNTAB_NAMES)[0]))
    seeds["ringbuf"] = ringbuf_seeds()
    seeds["gdecode"] = gdecode_seeds()
    counts = {}
    for h, inputs in seeds.items():
        d = out_dir / h
        d.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            (d / digest(data)).write_bytes(data)
        counts[h] = len(inputs)
    return counts


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SEEDS
    for harness, n in write_seeds(target).items():
        print(f"{harness:12} {n:4} seeds in {target / harness}")
