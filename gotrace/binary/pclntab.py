"""Go's own symbol table (pclntab): function names, entry PCs and PC -> file:line with inlining.

The runtime needs this table for tracebacks and GC, so it survives `-ldflags='-s -w'`, PIE and
external (cgo) linking; it is how gotrace names functions in stripped binaries. Layouts follow
`runtime/symtab.go`, `runtime/symtabinl.go` and `runtime/runtime2.go` of Go 1.19-1.27 (pclntab
magics 0xfffffff0 and 0xfffffff1). Addresses are link-time virtual addresses as in the file;
callers add the PIE load bias themselves.
"""

from __future__ import annotations

import mmap
import struct
import sys
from array import array
from bisect import bisect_right
from collections.abc import Collection
from dataclasses import dataclass

from gotrace.binary.buildinfo import parse_go_version, read_go_version
from gotrace.binary.elf import ElfImage
from gotrace.errors import BadInput

MAGIC_GO119 = 0xFFFFFFF0  # Go 1.18-1.19
MAGIC_GO120 = 0xFFFFFFF1  # Go 1.20-1.27
_OLD_MAGICS = {0xFFFFFFFB: "1.2-1.15", 0xFFFFFFFA: "1.16-1.17"}
_SUPPORTED = "Go 1.19 or newer is supported"

PCDATA_INL_TREE_INDEX = 2
FUNCDATA_INL_TREE = 3
_NO_FUNCDATA = 0xFFFFFFFF

# moduledata offsets (64-bit) that are stable across 1.19-1.27 (runtime/symtab.go).
_MD_FUNCNAMETAB = 8
_MD_FTAB = 128
_MD_TEXT = 176
# `gofunc` moved: 1.19 -> 304; 1.20-1.26 -> 320 (covctrs added); 1.27 -> 344 (typedesclen,
# itaboffset, itabsize). In every layout `rodata` is the word just before it.
_MD_GOFUNC_119 = 304
_MD_GOFUNC_120 = 320
_MD_GOFUNC_127 = 344

_HEADER_SIZE = 8 + 8 * 8
_PF_X = 0x1
_MAX_INLINE_DEPTH = 256  # a longer parent chain means a corrupt tree; Go's limit is far lower
_PCVALUE_CACHE_MAX = 1 << 16
_MAX_NAME = 1 << 16  # bytes of a function or file name; generic instantiations reach a few KB


@dataclass(frozen=True, slots=True)
class Func:
    """A function in pclntab; `end` is the next function's entry (Go's own notion of size)."""

    name: str
    entry: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.entry


@dataclass(frozen=True, slots=True)
class InlineSite:
    """A call of `callee` that the compiler inlined into `caller`, at `pc` (the call's PC)."""

    callee: str
    caller: Func
    pc: int


@dataclass(frozen=True, slots=True)
class Frame:
    """One logical frame; inlined calls produce several for a single PC."""

    function: str
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class _Header:
    magic: int
    min_lc: int
    nfunc: int
    nfiles: int
    text_start: int
    funcname: int
    cu: int
    filetab: int
    pctab: int
    pcln: int


@dataclass(frozen=True, slots=True)
class _FuncRec:
    """The parts of runtime._func that PC lookups need."""

    entry: int
    name: str
    pcfile: int
    pcln: int
    cu_offset: int
    inl_pcdata: int  # pctab offset of PCDATA_InlTreeIndex, 0 = none
    inl_tree: int  # vaddr of FUNCDATA_InlTree, 0 = none


def _parse_header(buf: bytes | mmap.mmap, off: int, limit: int) -> _Header | None:
    """A pcHeader at buf[off:] whose fields are self-consistent, else None."""
    if off < 0 or off + _HEADER_SIZE > limit:
        return None
    magic, pad1, pad2, min_lc, ptr_size = struct.unpack_from("<IBBBB", buf, off)
    if pad1 or pad2 or min_lc not in (1, 2, 4) or ptr_size != 8:
        return None
    w = struct.unpack_from("<8Q", buf, off + 8)
    nfunc, nfiles, text_start, funcname, cu, filetab, pctab, pcln = w
    size = limit - off
    if not (0 < nfunc < 1 << 24 and nfiles < 1 << 24):
        return None
    if not (_HEADER_SIZE <= funcname <= cu <= filetab <= pctab <= pcln):
        return None
    if pcln + (nfunc + 1) * 8 > size:
        return None
    return _Header(magic, min_lc, nfunc, nfiles, text_start, funcname, cu, filetab, pctab, pcln)


class Pclntab:
    """Read-only view of one binary's pclntab. Keep the ElfImage open while using it (the inline
    trees live in rodata and are read on demand)."""

    def __init__(self, img: ElfImage) -> None:
        self._img = img
        self.name = img.name
        file_off, limit, self.header_addr = self._locate(img)
        # Copy the table so that closing the image's mmap never fails on exported buffers.
        self._buf = bytes(img.data[file_off:limit])
        hdr = _parse_header(self._buf, 0, len(self._buf))
        if hdr is None:  # _locate validated it; this only guards against a racing file change
            raise BadInput(f"{self.name}: Go symbol table (pclntab) header is malformed")
        self._hdr = hdr
        self.min_lc = hdr.min_lc
        self.magic = hdr.magic
        self._minor: int | None = None
        if hdr.magic == MAGIC_GO119:
            self._reject_go118()
        self._func_size = 40 if hdr.magic == MAGIC_GO119 else 44

        ftab = array("I")
        ftab.frombytes(self._buf[hdr.pcln : hdr.pcln + (hdr.nfunc + 1) * 8])
        if sys.byteorder != "little":
            ftab.byteswap()
        self._entry_offs = ftab[0::2]  # nfunc+1 entries; the last one is etext - text
        self._func_offs = ftab[1::2]
        self._nfunc = hdr.nfunc
        ncu = (hdr.filetab - hdr.cu) // 4
        cutab = array("I")
        cutab.frombytes(self._buf[hdr.cu : hdr.cu + ncu * 4])
        if sys.byteorder != "little":
            cutab.byteswap()
        self._cutab = cutab

        self.moduledata_addr = self._find_moduledata(img, hdr)
        self.text_start = self._text_start(img, hdr)
        self.gofunc = self._gofunc(img)

        self._funcs: list[Func] | None = None
        self._by_name: dict[str, Func] | None = None
        self._recs: dict[int, _FuncRec] = {}
        self._pcvalue_cache: dict[int, tuple[list[int], list[int]]] = {}
        # Bytes of pc-value tables decoded since the cache was last emptied. Real tables do
        # not overlap, so decoding each once reads pctab once; tables that start inside one
        # another (a crafted file) would make decoding quadratic: beyond this, it stops.
        self._decode_budget = self._decode_budget_max = 4 * len(self._buf) + (1 << 20)
        self._files: dict[int, str] = {}
        self._inl_names: dict[int, str] = {}

    # -- locating the table -------------------------------------------------------------------

    def _locate(self, img: ElfImage) -> tuple[int, int, int]:
        """(file offset, end offset, vaddr) of the pcHeader: its section, else a scan for it."""
        data = img.data
        for name in (".gopclntab", ".data.rel.ro.gopclntab"):
            fr = img.section_file_range(name)
            rng = img.section_range(name)
            if fr is None or rng is None:
                continue
            off, size = fr
            end = min(off + size, len(data))
            if end - off < 8:
                raise BadInput(f"{self.name}: section {name} is truncated")
            self._check_magic(int.from_bytes(data[off : off + 4], "little"))
            if _parse_header(data, off, end) is None:
                raise BadInput(f"{self.name}: Go symbol table ({name}) header is malformed")
            return off, end, rng[0]
        # No section header (PIE + external linking up to Go 1.25, or renamed/stripped sections):
        # scan loaded data for the magic with a sane header. Read-only segments first.
        segs = sorted(img.segments, key=lambda s: (s.flags & 0x2 != 0, s.flags & _PF_X != 0))
        old: int | None = None
        for seg in segs:
            start = seg.offset
            end = min(seg.offset + seg.filesz, len(data))
            if start >= end:  # outside the file (mmap.find takes no offset past 2**63)
                continue
            for magic in (MAGIC_GO120, MAGIC_GO119, *_OLD_MAGICS):
                pat = struct.pack("<IBB", magic, 0, 0)
                pos = data.find(pat, start, end)
                while pos >= 0:
                    if (pos - seg.offset) % 8 == 0 and _parse_header(data, pos, end) is not None:
                        if magic in _OLD_MAGICS:
                            old = magic
                            break
                        return pos, end, pos - seg.offset + seg.vaddr
                    pos = data.find(pat, pos + 1, end)
        if old is not None:
            self._check_magic(old)
        if any(s.offset + s.filesz > len(data) for s in img.segments):
            raise BadInput(f"{self.name} is truncated (its segments extend past the end of file)")
        raise BadInput(f"{self.name} has no Go symbol table (pclntab); is it a Go program?")

    def _check_magic(self, magic: int) -> None:
        if magic in (MAGIC_GO119, MAGIC_GO120):
            return
        if magic in _OLD_MAGICS:
            raise BadInput(
                f"{self.name} was built by Go {_OLD_MAGICS[magic]}, which is too old; {_SUPPORTED}"
            )
        raise BadInput(f"{self.name}: unknown Go symbol table format (magic {magic:#x})")

    def _reject_go118(self) -> None:
        """Go 1.18 shares 1.19's magic but not its funcdata encoding; tell them apart by version."""
        minor = self._go_minor()
        if minor is not None and minor < 19:
            raise BadInput(f"{self.name} was built by Go 1.{minor}, which is too old; {_SUPPORTED}")

    def _find_moduledata(self, img: ElfImage, hdr: _Header) -> int | None:
        """Address of runtime.firstmoduledata: the pattern {pcHeader, funcnametab}, else the
        relocations that write pcHeader's address, else its symbol.

        The moduledata pointers hold link-time addresses in the file, also in PIE (covered by
        R_*_RELATIVE relocations too), except where GNU ld for arm64 linked a PIE (cgo): it
        leaves them to the relocations (ElfImage.read_pointer).
        """
        if self.header_addr + hdr.funcname >= 1 << 64:  # no 64-bit pointer can hold it
            return None
        pat = struct.pack("<QQ", self.header_addr, self.header_addr + hdr.funcname)
        data = img.data
        ranges: list[tuple[int, int, int]] = []  # (file start, file end, vaddr of file start)
        for name in (".go.module", ".noptrdata"):
            fr = img.section_file_range(name)
            rng = img.section_range(name)
            if fr is not None and rng is not None:
                ranges.append((fr[0], fr[0] + fr[1], rng[0]))
        ranges += [
            (s.offset, s.offset + s.filesz, s.vaddr)
            for s in img.segments
            if not s.flags & _PF_X and s.filesz
        ]
        for start, end, vaddr in ranges:
            end = min(end, len(data))
            if start >= end:  # outside the file (mmap.find takes no offset past 2**63)
                continue
            pos = data.find(pat, start, end)
            while pos >= 0:
                addr = pos - start + vaddr
                if addr % 8 == 0 and self._moduledata_ok(img, addr, hdr):
                    return addr
                pos = data.find(pat, pos + 1, end)
        for addr in img.pointers_to(self.header_addr):
            if addr % 8 == 0 and self._moduledata_ok(img, addr, hdr):
                return addr
        # Last resort, as parsing .symtab is slow on big binaries.
        sym = img.symbol("runtime.firstmoduledata") if img.has_symtab else None
        if sym is not None and self._moduledata_ok(img, sym[0], hdr):
            return sym[0]
        return None

    def _moduledata_ok(self, img: ElfImage, addr: int, hdr: _Header) -> bool:
        try:
            pchdr, funcnametab, ftab = (img.read_pointer(addr + off)
                                        for off in (0, _MD_FUNCNAMETAB, _MD_FTAB))
        except BadInput:
            return False
        return bool(
            pchdr == self.header_addr
            and funcnametab == self.header_addr + hdr.funcname
            and ftab == self.header_addr + hdr.pcln
        )

    def _md_word(self, off: int) -> int | None:
        if self.moduledata_addr is None:
            return None
        try:
            return self._img.read_pointer(self.moduledata_addr + off)
        except BadInput:
            return None

    def _text_start(self, img: ElfImage, hdr: _Header) -> int:
        """Base of every entry offset. Go 1.26+ writes 0 in the header, and `.text` is wrong for
        externally linked binaries (C start-up code precedes runtime.text), so it comes last."""
        if hdr.text_start:
            return hdr.text_start
        text = self._md_word(_MD_TEXT)
        if text:
            return text
        sym = img.symbol("runtime.text") if img.has_symtab else None
        if sym is not None and sym[0]:
            return sym[0]
        rng = img.section_range(".text")
        if rng is not None:
            return rng[0]
        raise BadInput(f"{self.name}: cannot find the start of Go code (runtime.text)")

    def _gofunc(self, img: ElfImage) -> int | None:
        """moduledata.gofunc, the base of funcdata offsets (inline trees); None if unknown.

        Its offset in moduledata depends on the Go version (the build info says which); every
        candidate must also decode real inline trees, which guards against unknown versions.
        """
        if self.moduledata_addr is not None:
            minor = self._go_minor()
            if self.magic == MAGIC_GO119:
                candidates = [_MD_GOFUNC_119]
            elif minor is not None and 20 <= minor <= 26:
                candidates = [_MD_GOFUNC_120, _MD_GOFUNC_127]
            else:
                candidates = [_MD_GOFUNC_127, _MD_GOFUNC_120]
            for off in candidates:
                gofunc = self._md_word(off)
                if gofunc and self._gofunc_decodes(gofunc):
                    return gofunc
        for name in ("go:func.*", "go.func.*"):
            sym = img.symbol(name) if img.has_symtab else None
            if sym is not None and self._gofunc_decodes(sym[0]):
                return sym[0]
        return None

    def _gofunc_decodes(self, gofunc: int, samples: int = 8) -> bool:
        """Whether the first inline-tree entries of a few functions make sense with this base:
        a name offset inside funcnametab at a NUL-terminated name, a parentPc inside the caller.
        """
        hdr = self._hdr
        checked = 0
        for i in range(self._nfunc):
            try:
                fd = self._funcdata(i, FUNCDATA_INL_TREE)
            except (struct.error, IndexError):
                return False
            if fd is None:
                continue
            size = self._entry_offs[i + 1] - self._entry_offs[i]
            try:
                name_off, parent_pc = self._read_inlined_call(gofunc + fd, 0)
            except (BadInput, struct.error):
                return False
            if not (0 <= name_off < hdr.cu - hdr.funcname and 0 <= parent_pc < size):
                return False
            if name_off > 0 and self._buf[hdr.funcname + name_off - 1] != 0:
                return False  # names start right after another name's NUL
            checked += 1
            if checked >= samples:
                break
        return checked > 0

    def _go_minor(self) -> int | None:
        """Minor Go version from the build info, None when it cannot be read."""
        if self._minor is None:
            try:
                major, minor, _ = parse_go_version(read_go_version(self._img))
            except BadInput:
                self._minor = -1
            else:
                self._minor = minor if major == 1 else -1
        return None if self._minor < 0 else self._minor

    # -- functions -----------------------------------------------------------------------------

    def functions(self) -> list[Func]:
        """Every function in table order (sorted by entry). Built once, then cached."""
        if self._funcs is None:
            buf = self._buf
            base = self._hdr.pcln
            names = self._hdr.funcname
            text = self.text_start
            eo = self._entry_offs
            funcs: list[Func] = []
            unpack = struct.Struct("<i").unpack_from
            cache: dict[int, str] = {}
            for i, fo in enumerate(self._func_offs[: self._nfunc]):
                try:
                    (name_off,) = unpack(buf, base + fo + 4)
                    name = cache.get(name_off)
                    if name is None:
                        name = self._cstring(names + name_off)
                        cache[name_off] = name
                except (struct.error, ValueError, IndexError):
                    raise BadInput(
                        f"{self.name}: Go symbol table entry {i} is out of bounds"
                    ) from None
                funcs.append(Func(name, text + eo[i], text + eo[i + 1]))
            self._funcs = funcs
        return self._funcs

    def lookup(self, name: str) -> Func | None:
        """The function named `name`; of duplicates (ABI wrappers) the largest, i.e. the body."""
        if self._by_name is None:
            by_name: dict[str, Func] = {}
            for f in self.functions():
                old = by_name.get(f.name)
                if old is None or f.size > old.size:
                    by_name[f.name] = f
            self._by_name = by_name
        return self._by_name.get(name)

    def func_at(self, pc: int) -> Func | None:
        """The function whose code contains `pc`, or None outside Go text."""
        i = self._index_at(pc)
        return None if i is None else self.functions()[i]

    def _index_at(self, pc: int) -> int | None:
        rel = pc - self.text_start
        if rel < 0 or rel >= 1 << 32:
            return None
        i = bisect_right(self._entry_offs, rel) - 1
        if i < 0 or i >= self._nfunc:
            return None
        return i

    def func_ids(self) -> list[int]:
        """The funcID byte of every function, in table order.

        `_func` ends with {funcID u8, flag u8, _ u8, nfuncdata u8} in every layout since Go 1.18.
        """
        buf, base, at = self._buf, self._hdr.pcln, self._func_size - 4
        try:
            return [buf[base + fo + at] for fo in self._func_offs[: len(self.functions())]]
        except IndexError:
            raise BadInput(f"{self.name}: a Go symbol table entry is out of bounds") from None

    def frame_size(self, pc: int) -> int | None:
        """Bytes of stack the function at `pc` uses there (its pcsp table), or None if unknown.

        At a return address `pc` in a function whose SP is `sp`, the caller's return PC is at
        `sp + size` and, when size > 0, the saved frame pointer just below it.
        """
        i = self._index_at(pc)
        if i is None:
            return None
        try:
            p = self._hdr.pcln + self._func_offs[i]
            (pcsp,) = struct.unpack_from("<I", self._buf, p + 16)
            size = self._pcvalue(pcsp, self.text_start + self._entry_offs[i], pc)
        except (struct.error, IndexError, ValueError):
            return None
        return size if size >= 0 else None

    # -- PC -> frames --------------------------------------------------------------------------

    def frames(self, pc: int, *, is_return_address: bool) -> list[Frame]:
        """Logical frames at `pc`, innermost first (inlined calls expanded); [] for unknown PCs.

        For a return address the lookup uses pc-1, the call instruction, as Go tracebacks do:
        the return address can already belong to the next line or the next inlined call.
        """
        i = self._index_at(pc)
        if i is None:
            return []
        try:
            rec = self._rec(i)
            tpc = pc - 1 if is_return_address and pc > rec.entry else pc
            out: list[Frame] = []
            if rec.inl_pcdata and rec.inl_tree:
                ix = self._pcvalue(rec.inl_pcdata, rec.entry, tpc)
                while ix >= 0:
                    if len(out) >= _MAX_INLINE_DEPTH:
                        return []
                    name, parent_pc = self._inlined_call(rec.inl_tree, ix)
                    out.append(Frame(name, *self._file_line(rec, tpc)))
                    tpc = rec.entry + parent_pc
                    ix = self._pcvalue(rec.inl_pcdata, rec.entry, tpc)
            out.append(Frame(rec.name, *self._file_line(rec, tpc)))
            return out
        except (BadInput, struct.error, ValueError, IndexError, OverflowError):
            return []

    def inline_sites(self, names: Collection[str]) -> list[InlineSite] | None:
        """Every place where a function named in `names` was inlined into another one.

        Reads each function's inline tree (FUNCDATA_InlTree) as far as its PCDATA_InlTreeIndex
        table reaches. None when the trees cannot be read (moduledata.gofunc not found).
        """
        if self.gofunc is None:
            return None
        wanted = set(names)
        funcs = self.functions()
        buf = self._buf
        base = self._hdr.pcln
        fsize = self._func_size
        go119 = self.magic == MAGIC_GO119
        entry_size, name_at = (20, 12) if go119 else (16, 4)
        u32 = struct.Struct("<I").unpack_from
        call = struct.Struct("<ii")
        names_by_off: dict[int, str] = {}
        out: list[InlineSite] = []
        # Real trees do not overlap, so all of them hold at most file size / entry size
        # entries; trees that all claim the same 64k entries (a crafted file) would not end.
        budget = len(self._img.data) // entry_size + (1 << 16)
        for i in range(self._nfunc):
            try:
                p = base + self._func_offs[i]
                (npcdata,) = u32(buf, p + 28)
                if npcdata <= PCDATA_INL_TREE_INDEX or buf[p + fsize - 1] <= FUNCDATA_INL_TREE:
                    continue
                (fd,) = u32(buf, p + fsize + 4 * npcdata + 4 * FUNCDATA_INL_TREE)
                (pcdata,) = u32(buf, p + fsize + 4 * PCDATA_INL_TREE_INDEX)
                if fd == _NO_FUNCDATA or pcdata == 0:
                    continue
                top = max(self._table(pcdata)[1])
                if top < 0 or top > 1 << 16:
                    continue
                raw = self._img.read(self.gofunc + fd, (top + 1) * entry_size)
            except (BadInput, struct.error, ValueError, IndexError):
                continue
            budget -= top + 1
            if budget < 0:
                return None  # overlapping trees: corrupt
            for k in range(top + 1):
                name_off, parent_pc = call.unpack_from(raw, k * entry_size + name_at)
                name = names_by_off.get(name_off)
                if name is None:
                    try:
                        name = self._cstring(self._hdr.funcname + name_off)
                    except (ValueError, IndexError):
                        name = ""
                    names_by_off[name_off] = name
                if name in wanted:
                    out.append(InlineSite(name, funcs[i], funcs[i].entry + parent_pc))
        return out

    def goroot(self) -> str | None:
        """GOROOT of the toolchain that built the binary (from runtime.main's source path)."""
        f = self.lookup("runtime.main")
        if f is None:
            return None
        fr = self.frames(f.entry, is_return_address=False)
        if not fr:
            return None
        suffix = "/src/runtime/proc.go"
        path = fr[-1].file
        if not path.endswith(suffix) or len(path) == len(suffix):
            return None  # e.g. -trimpath
        return path[: -len(suffix)]

    # -- internals -----------------------------------------------------------------------------

    def _cstring(self, off: int) -> str:
        """The NUL-terminated name at `off`, cut at _MAX_NAME bytes: scanning each name to a
        distant NUL would make reading every name quadratic in the table."""
        buf = self._buf
        if not 0 <= off < len(buf):
            raise ValueError(f"name offset {off} is outside the table")
        end = buf.find(b"\0", off, off + _MAX_NAME)
        return buf[off : end if end >= 0 else off + _MAX_NAME].decode("utf-8", "replace")

    def _funcdata(self, i: int, which: int) -> int | None:
        """Function i's funcdata offset `which` (relative to gofunc), None when absent."""
        buf = self._buf
        p = self._hdr.pcln + self._func_offs[i]
        (npcdata,) = struct.unpack_from("<I", buf, p + 28)
        nfuncdata = buf[p + self._func_size - 1]
        if which >= nfuncdata:
            return None
        (fd,) = struct.unpack_from("<I", buf, p + self._func_size + 4 * npcdata + 4 * which)
        return None if fd == _NO_FUNCDATA else int(fd)

    def _rec(self, i: int) -> _FuncRec:
        rec = self._recs.get(i)
        if rec is not None:
            return rec
        buf = self._buf
        p = self._hdr.pcln + self._func_offs[i]
        _entry_off, _name_off, _args, _dr, _pcsp, pcfile, pcln, npcdata, cu_offset = (
            struct.unpack_from("<IiiIIIIII", buf, p)
        )
        inl_pcdata = 0
        if npcdata > PCDATA_INL_TREE_INDEX:
            (inl_pcdata,) = struct.unpack_from(
                "<I", buf, p + self._func_size + 4 * PCDATA_INL_TREE_INDEX
            )
        inl_tree = 0
        if self.gofunc is not None:
            fd = self._funcdata(i, FUNCDATA_INL_TREE)
            if fd is not None:
                inl_tree = self.gofunc + fd
        rec = _FuncRec(
            entry=self.text_start + self._entry_offs[i],
            name=self.functions()[i].name,
            pcfile=pcfile,
            pcln=pcln,
            cu_offset=cu_offset,
            inl_pcdata=inl_pcdata,
            inl_tree=inl_tree,
        )
        self._recs[i] = rec
        return rec

    def _file_line(self, rec: _FuncRec, pc: int) -> tuple[str, int]:
        fileno = self._pcvalue(rec.pcfile, rec.entry, pc)
        line = self._pcvalue(rec.pcln, rec.entry, pc)
        if fileno < 0 or line < 0:
            return "?", 0
        idx = rec.cu_offset + fileno
        if idx >= len(self._cutab):
            return "?", 0
        foff = self._cutab[idx]
        if foff == _NO_FUNCDATA:
            return "?", 0
        name = self._files.get(foff)
        if name is None:
            name = self._cstring(self._hdr.filetab + foff)
            self._files[foff] = name
        return name, line

    def _inlined_call(self, tree: int, ix: int) -> tuple[str, int]:
        """(callee name, parentPc) of inline-tree entry `ix`."""
        name_off, parent_pc = self._read_inlined_call(tree, ix)
        name = self._inl_names.get(name_off)
        if name is None:
            name = self._cstring(self._hdr.funcname + name_off)
            self._inl_names[name_off] = name
        return name, parent_pc

    def _read_inlined_call(self, tree: int, ix: int) -> tuple[int, int]:
        """(nameOff, parentPc) of runtime.inlinedCall `ix`; the struct changed in Go 1.20."""
        if self.magic == MAGIC_GO119:
            # {parent i16, funcID u8, _ u8, file i32, line i32, func_ i32, parentPc i32}
            raw = self._img.read(tree + ix * 20 + 12, 8)
        else:
            # {funcID u8, _ [3]byte, nameOff i32, parentPc i32, startLine i32}
            raw = self._img.read(tree + ix * 16 + 4, 8)
        name_off, parent_pc = struct.unpack("<ii", raw)
        return name_off, parent_pc

    def _pcvalue(self, off: int, entry: int, pc: int) -> int:
        """Value of the pc-value table at pctab+off for `pc`; -1 when absent or out of range."""
        if off == 0:
            return -1
        ends, vals = self._table(off)
        i = bisect_right(ends, pc - entry)
        return vals[i] if i < len(vals) else -1

    def _table(self, off: int) -> tuple[list[int], list[int]]:
        """The decoded table at pctab+off, cached (tables are shared by many functions)."""
        table = self._pcvalue_cache.get(off)
        if table is None:
            if len(self._pcvalue_cache) >= _PCVALUE_CACHE_MAX:
                self._pcvalue_cache.clear()
                self._decode_budget = self._decode_budget_max
            table = self._decode(off)
            self._pcvalue_cache[off] = table
        return table

    def _decode(self, off: int) -> tuple[list[int], list[int]]:
        """Decode a whole table into (end PC offsets, values) per runtime.step.

        Each pair is a zig-zag value delta and a PC delta (in units of minLC), both uvarints;
        the value applies to PCs below the new PC. A zero value delta after the first pair ends
        the table. Offsets are relative to the function entry, so tables shared by several
        functions decode once.
        """
        if self._decode_budget <= 0:
            raise ValueError("pc-value tables overlap: the table is corrupt")
        buf = self._buf
        p = start = self._hdr.pctab + off
        try:
            quantum = self.min_lc
            ends: list[int] = []
            vals: list[int] = []
            val = -1
            pc = 0
            while True:
                b = buf[p]
                if b == 0 and pc != 0:
                    break
                p += 1
                uv = b & 0x7F
                shift = 7
                while b & 0x80:
                    b = buf[p]
                    p += 1
                    uv |= (b & 0x7F) << shift
                    shift += 7
                    if shift > 35:
                        raise ValueError("bad varint in pc-value table")
                val += -(uv & 1) ^ (uv >> 1)
                b = buf[p]
                p += 1
                pd = b & 0x7F
                shift = 7
                while b & 0x80:
                    b = buf[p]
                    p += 1
                    pd |= (b & 0x7F) << shift
                    shift += 7
                    if shift > 35:
                        raise ValueError("bad varint in pc-value table")
                pc += pd * quantum
                ends.append(pc)
                vals.append(val)
                if pc >= 1 << 32:
                    raise ValueError("pc-value table runs past any function")
        finally:  # failed decodes are charged too: they are not cached
            self._decode_budget -= p - start
        return ends, vals
