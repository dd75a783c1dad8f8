"""A read-only view of an ELF file by virtual address, the way Go's own tools read binaries.

pyelftools is not hardened against malformed files, so every parse error becomes a
`BadInput` with the file's name instead of a traceback.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from gotrace.errors import BadInput

_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym
_SYM_SIZE = _SYM.size


@dataclass(frozen=True)
class Segment:
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int


class ElfImage:
    """An ELF file mapped into memory; `read(vaddr, n)` reads what a loader would place there."""

    def __init__(self, path: str, name: str | None = None) -> None:
        """path: what to open; name: the file as the user knows it, for messages."""
        self.path = path
        self.name = name or path
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - kept open for pyelftools
        except OSError as e:
            raise BadInput(f"cannot open {self.name}: {e.strerror}") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            self.size = size
            if size < 64:
                raise BadInput(f"{self.name} is not an ELF executable (too small)")
            self.data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            if self.data[:4] != b"\x7fELF":
                raise BadInput(f"{self.name} is not an ELF executable")
            self.elf = ELFFile(self._file)
            self.is_pie = self.elf.header["e_type"] == "ET_DYN"
            self.machine = str(self.elf.header["e_machine"])
            self.segments = [
                Segment(
                    int(s["p_vaddr"]),
                    int(s["p_offset"]),
                    int(s["p_filesz"]),
                    int(s["p_memsz"]),
                    int(s["p_flags"]),
                )
                for s in self.elf.iter_segments()
                if s["p_type"] == "PT_LOAD"
            ]
            self._sections = {
                s.name: s for s in self.elf.iter_sections() if s.name
            }
        except BadInput:
            raise
        except (ELFError, ValueError, KeyError, IndexError, OSError, AssertionError) as e:
            raise BadInput(f"{self.name}: not a readable ELF file ({e})") from None
        self._symbols: dict[str, tuple[int, int]] | None = None

    def close(self) -> None:
        self.data.close()
        self._file.close()

    # -- sections -------------------------------------------------------------------------

    def section_range(self, name: str) -> tuple[int, int] | None:
        """(vaddr, size) of an allocated section, or None."""
        s = self._sections.get(name)
        if s is None or s["sh_type"] == "SHT_NOBITS":
            return None
        return int(s["sh_addr"]), int(s["sh_size"])

    def section_bytes(self, name: str) -> bytes | None:
        s = self._sections.get(name)
        if s is None or s["sh_type"] == "SHT_NOBITS":
            return None
        try:
            return bytes(s.data())  # handles SHF_COMPRESSED
        except (ELFError, ValueError, OSError) as e:
            raise BadInput(f"{self.name}: section {name} unreadable ({e})") from None

    def section_file_range(self, name: str) -> tuple[int, int] | None:
        """(file offset, size) of a section's raw bytes, for zero-copy access."""
        s = self._sections.get(name)
        if s is None or s["sh_type"] == "SHT_NOBITS":
            return None
        return int(s["sh_offset"]), int(s["sh_size"])

    # -- addresses ------------------------------------------------------------------------

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset of a virtual address inside a file-backed part of a PT_LOAD."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        return None

    def read(self, vaddr: int, size: int) -> bytes:
        off = self.vaddr_to_offset(vaddr)
        if off is None or off + size > len(self.data):
            raise BadInput(f"{self.name}: address {vaddr:#x} is not in the file")
        return bytes(self.data[off : off + size])

    def read_u64(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 8), "little")

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
        if not isinstance(tab, SymbolTableSection):
            return {}
        try:
            strtab = self.elf.get_section(int(tab["sh_link"]))
            sym_off, sym_size = int(tab["sh_offset"]), int(tab["sh_size"])
            str_off, str_size = int(strtab["sh_offset"]), int(strtab["sh_size"])
        except (ELFError, ValueError, KeyError, IndexError, TypeError) as e:
            raise BadInput(f"{self.name}: symbol table unreadable ({e})") from None
        if (self.elf.elfclass != 64 or sym_off + sym_size > len(self.data)
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
