"""A read-only view of an ELF file by virtual address, the way Go's own tools read binaries.

The headers are parsed here, with struct and explicit bounds, not by pyelftools: it is not
hardened against malformed files (its errors, and zlib's, escaped as tracebacks), and parsing a
few dozen headers with it cost more than everything else gotrace reads from a small binary.
Every malformation becomes a `BadInput` naming the file.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from gotrace.errors import BadInput

_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym
_SYM_SIZE = _SYM.size
_SHF_COMPRESSED = 0x800
_ELFCOMPRESS_ZLIB = 1
# A compressed section may claim any size: inflating is bounded by what real debug info can
# reach (it compresses 3-10x; zlib's own limit is ~1000x), so a bomb is refused up front.
_MAX_INFLATE_RATIO = 100
_MAX_SECTION = 1 << 30

_PT_LOAD = 1
_SHT_SYMTAB, _SHT_NOBITS, _SHT_DYNSYM = 2, 8, 11
_SHN_XINDEX = 0xFFFF
_MACHINES = {3: "EM_386", 40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV",
             8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64", 22: "EM_S390", 258: "EM_LOONGARCH"}


@dataclass(frozen=True)
class _Layout:
    """Header formats of one ELF class and byte order (e_ident[EI_CLASS], [EI_DATA])."""

    ehdr: struct.Struct  # e_type .. e_shstrndx, after e_ident
    phdr: struct.Struct  # p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz
    shdr: struct.Struct  # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link
    chdr: struct.Struct  # ch_type, ch_size


def _layout(elfclass: int, order: str) -> _Layout:
    if elfclass == 64:
        return _Layout(struct.Struct(order + "HHIQQQIHHHHHH"),
                       struct.Struct(order + "IIQQ8xQQ"),  # p_paddr skipped
                       struct.Struct(order + "IIQQQQI"),
                       struct.Struct(order + "I4xQ"))
    return _Layout(struct.Struct(order + "HHIIIIIHHHHHH"),
                   # Elf32_Phdr: type, offset, vaddr, paddr, filesz, memsz, flags
                   struct.Struct(order + "III4xIII"),
                   struct.Struct(order + "IIIIIII"),
                   struct.Struct(order + "II"))


@dataclass(frozen=True)
class _Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int


def inflate(raw: bytes, want: int, what: str) -> bytes:
    """zlib data that must inflate to exactly `want` bytes, a size checked before inflating."""
    if want > min(_MAX_SECTION, _MAX_INFLATE_RATIO * len(raw) + (1 << 20)):
        raise BadInput(f"{what} claims {want:,} bytes, implausible for its {len(raw):,}")
    d = zlib.decompressobj()
    try:
        out = d.decompress(raw, want)
    except zlib.error as e:
        raise BadInput(f"{what} is corrupt ({e})") from None
    if len(out) != want:
        raise BadInput(f"{what} inflates to {len(out):,} bytes, not the {want:,} it claims")
    return out


@dataclass(frozen=True)
class Segment:
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int


class LoadedImage:
    """Reading by virtual address, as a loader would place the bytes of the PT_LOAD segments:
    the one translation for ElfImage and for the fuzzers' in-memory images."""

    name: str
    data: bytes | mmap.mmap
    segments: list[Segment]

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset of a virtual address inside a file-backed part of a PT_LOAD."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        return None

    def read(self, vaddr: int, size: int) -> bytes:
        off = self.vaddr_to_offset(vaddr)
        if off is None or size < 0 or off + size > len(self.data):
            raise BadInput(f"{self.name}: address {vaddr:#x} is not in the file")
        return bytes(self.data[off : off + size])

    def read_u64(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 8), "little")

    def read_pointer(self, vaddr: int) -> int:
        """A pointer stored in the file, as the loader would relocate it (link-time address)."""
        return self.read_u64(vaddr)

    def pointers_to(self, target: int) -> list[int]:
        """Where the loader writes `target` that the file does not hold (ElfImage: a PIE's
        relocations); none here."""
        return []


_RELATIVE = frozenset((8, 1027))  # R_X86_64_RELATIVE, R_AARCH64_RELATIVE


class ElfImage(LoadedImage):
    """An ELF file mapped into memory; `read(vaddr, n)` reads what a loader would place there."""

    def __init__(self, path: str, name: str | None = None) -> None:
        """path: what to open; name: the file as the user knows it, for messages."""
        self.path = path
        self.name = name or path
        self._relative: dict[int, int] | None = None  # R_*_RELATIVE: offset -> addend
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - kept open for pyelftools
        except OSError as e:
            raise BadInput(f"cannot open {self.name}: {e.strerror}") from None
        try:
            self._open()
        except BaseException:
            # The file and its mapping are closed on failure: a long-lived caller (a fuzzer,
            # a server) must not leak a descriptor per bad file.
            self.close()
            raise
        self._symbols: dict[str, tuple[int, int]] | None = None

    def _open(self) -> None:
        size = os.fstat(self._file.fileno()).st_size
        self.size = size
        if size < 64:
            raise BadInput(f"{self.name} is not an ELF executable (too small)")
        try:
            self.data: mmap.mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise BadInput(f"{self.name}: cannot map the file ({e})") from None
        data = self.data
        if data[:4] != b"\x7fELF":
            raise BadInput(f"{self.name} is not an ELF executable")
        if data[4] not in (1, 2) or data[5] not in (1, 2):
            raise BadInput(f"{self.name}: not a readable ELF file (class {data[4]}, "
                           f"data encoding {data[5]})")
        self.elfclass = 64 if data[4] == 2 else 32
        lay = _layout(self.elfclass, "<" if data[5] == 1 else ">")
        self._lay = lay
        (e_type, e_machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
         shentsize, shnum, shstrndx) = lay.ehdr.unpack_from(data, 16)
        self.is_pie = e_type == 3  # ET_DYN
        self.machine = _MACHINES.get(e_machine, f"EM_{e_machine}")
        self.segments = [
            Segment(vaddr, offset, filesz, memsz, flags)
            for ptype, flags, offset, vaddr, filesz, memsz in self._phdrs(phoff, phentsize, phnum)
            if ptype == _PT_LOAD
        ]
        self._sections = self._read_sections(shoff, shentsize, shnum, shstrndx)
        self._elf: Any = None

    def _table(self, what: str, off: int, entsize: int, count: int,
               fmt: struct.Struct) -> list[tuple[int, ...]]:
        """`count` header records of `entsize` bytes at `off`, each checked to be in the file."""
        if count == 0:
            return []
        if entsize < fmt.size or off + count * entsize > len(self.data):
            raise BadInput(f"{self.name}: not a readable ELF file ({what} table of {count} "
                           f"entries of {entsize} bytes at {off:#x} is outside the file)")
        return [fmt.unpack_from(self.data, off + i * entsize) for i in range(count)]

    def _phdrs(self, phoff: int, phentsize: int, phnum: int) -> list[tuple[int, ...]]:
        raw = self._table("program header", phoff, phentsize, phnum, self._lay.phdr)
        if self.elfclass == 32:  # Elf32_Phdr keeps p_flags last
            return [(t, fl, o, v, fs, ms) for t, o, v, fs, ms, fl in raw]
        return raw

    def _read_sections(self, shoff: int, shentsize: int, shnum: int,
                       shstrndx: int) -> dict[str, _Section]:
        """Sections by name; none when the section headers are cut off the end of the file:
        the loader does not need them, and pclntab is then found by scanning the segments."""
        self._by_index: list[_Section] = []
        if shoff == 0 or shoff >= len(self.data):
            return {}
        fmt = self._lay.shdr
        if shentsize >= fmt.size and shoff + max(shnum, 1) * shentsize > len(self.data):
            return {}
        if shnum == 0 or shstrndx == _SHN_XINDEX:  # the real values live in section 0
            (zero,) = self._table("section header", shoff, shentsize, 1, fmt)
            shnum = shnum or zero[5]
            shstrndx = zero[6] if shstrndx == _SHN_XINDEX else shstrndx
        headers = self._table("section header", shoff, shentsize, shnum, fmt)
        if shstrndx >= len(headers):
            raise BadInput(f"{self.name}: not a readable ELF file (section names in section "
                           f"{shstrndx} of {len(headers)})")
        str_off, str_size = headers[shstrndx][4], headers[shstrndx][5]
        if str_off + str_size > len(self.data):
            return {}  # cut off too, as above
        names = self.data[str_off : str_off + str_size]
        out: dict[str, _Section] = {}
        for name_off, typ, flags, addr, offset, size, link in headers:
            end = names.find(b"\0", name_off) if name_off < len(names) else -1
            name = names[name_off:end].decode("utf-8", "replace") if end >= 0 else ""
            sec = _Section(name, typ, flags, addr, offset, size, link)
            self._by_index.append(sec)
            if name:
                out[name] = sec
        return out

    @property
    def elf(self) -> Any:
        """pyelftools' view of the file, for tests that compare with a complete reader."""
        if self._elf is None:
            from elftools.elf.elffile import ELFFile

            self._elf = ELFFile(self._file)
        return self._elf

    def close(self) -> None:
        data: mmap.mmap | None = getattr(self, "data", None)  # None: failed before mapping
        if data is not None:
            data.close()
        self._file.close()

    # -- sections -------------------------------------------------------------------------

    def section_range(self, name: str) -> tuple[int, int] | None:
        """(vaddr, size) of an allocated section, or None."""
        s = self._sections.get(name)
        if s is None or s.type == _SHT_NOBITS:
            return None
        return s.addr, s.size

    def read_pointer(self, vaddr: int) -> int:
        """A pointer stored in the file, as the loader would relocate it (link-time address).

        In a PIE the loader writes an R_*_RELATIVE relocation's addend there, whatever the file
        holds: GNU ld for arm64 leaves other values in place (it writes the addends only with
        --apply-dynamic-relocs), as seen in Go's external-linking cgo PIE builds."""
        if not self.is_pie:
            return self.read_u64(vaddr)
        got = self._relatives().get(vaddr)
        return self.read_u64(vaddr) if got is None else got

    def pointers_to(self, target: int) -> list[int]:
        """Where a PIE's loader writes `target` (R_*_RELATIVE relocations with that addend):
        pointers the file itself may not hold (see read_pointer). [] outside PIE."""
        if not self.is_pie:
            return []
        return sorted(off for off, addend in self._relatives().items() if addend == target)

    def _relatives(self) -> dict[int, int]:
        """R_*_RELATIVE relocations: offset -> addend, read once."""
        if self._relative is None:
            data = self.section_bytes(".rela.dyn") or b""
            self._relative = {off: addend for off, info, addend in
                              struct.iter_unpack("<QQq", data[: len(data) // 24 * 24])
                              if info & 0xFFFFFFFF in _RELATIVE}
        return self._relative

    def section_bytes(self, name: str) -> bytes | None:
        """A section's contents, inflated when SHF_COMPRESSED (Go compresses its DWARF).

        The size the file claims for the inflated data is checked before inflating.
        """
        s = self._sections.get(name)
        if s is None or s.type == _SHT_NOBITS:
            return None
        if s.offset + s.size > len(self.data):
            raise BadInput(f"{self.name}: section {name} runs past the end of the file")
        raw = self.data[s.offset : s.offset + s.size]
        if not s.flags & _SHF_COMPRESSED:
            return raw
        return self._inflate(name, raw)

    def _inflate(self, name: str, raw: bytes) -> bytes:
        chdr = self._lay.chdr
        hdr_size = 24 if self.elfclass == 64 else 12  # Elf64_Chdr / Elf32_Chdr
        if len(raw) < hdr_size:
            raise BadInput(f"{self.name}: compressed section {name} is truncated")
        kind, want = chdr.unpack_from(raw)
        if kind != _ELFCOMPRESS_ZLIB:
            raise BadInput(f"{self.name}: section {name} uses an unknown compression ({kind})")
        return inflate(raw[hdr_size:], want, f"{self.name}: compressed section {name}")

    def section_file_range(self, name: str) -> tuple[int, int] | None:
        """(file offset, size) of a section's raw bytes, for zero-copy access."""
        s = self._sections.get(name)
        if s is None or s.type == _SHT_NOBITS:
            return None
        return s.offset, s.size

    # -- addresses ------------------------------------------------------------------------

    @property
    def has_symtab(self) -> bool:
        return ".symtab" in self._sections

    @property
    def has_dwarf(self) -> bool:
        return any(n in self._sections for n in (".debug_info", ".zdebug_info"))

    def symbols(self) -> dict[str, tuple[int, int]]:
        """name -> (value, size) from .symtab (empty when stripped).

        Read straight from the raw table (24-byte Elf64_Sym records): pyelftools takes about a
        second for the 30k+ symbols of a big Go binary, this takes a few tens of ms.
        """
        if self._symbols is None:
            self._symbols = self._read_symtab()
        return self._symbols

    def _read_symtab(self) -> dict[str, tuple[int, int]]:
        tab = self._sections.get(".symtab")
        if tab is None or tab.type not in (_SHT_SYMTAB, _SHT_DYNSYM) or self.data[5] != 1:
            return {}  # none, or big-endian (no Go target gotrace probes)
        if tab.link >= len(self._by_index):
            raise BadInput(f"{self.name}: symbol table unreadable (no string table "
                           f"{tab.link})")
        strtab = self._by_index[tab.link]
        sym_off, sym_size = tab.offset, tab.size
        str_off, str_size = strtab.offset, strtab.size
        if (self.elfclass != 64 or sym_off + sym_size > len(self.data)
                or str_off + str_size > len(self.data)):
            raise BadInput(f"{self.name}: symbol table unreadable (outside the file)")
        raw = self.data[sym_off : sym_off + sym_size - sym_size % _SYM_SIZE]
        strs = self.data[str_off : str_off + str_size]
        syms: dict[str, tuple[int, int]] = {}
        find = strs.find
        for name_off, _info, _other, _shndx, value, size in _SYM.iter_unpack(raw):
            if name_off == 0 or name_off >= str_size:
                continue
            end = find(b"\0", name_off)
            if end < 0:
                continue
            name = strs[name_off:end].decode("utf-8", "replace")
            syms.setdefault(name, (value, size))
        return syms

    def symbol(self, name: str) -> tuple[int, int] | None:
        return self.symbols().get(name)

    def __enter__(self) -> ElfImage:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
