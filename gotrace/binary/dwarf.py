"""Struct layouts from Go's DWARF: just enough of a DWARF 2-5 reader to find a few structs.

pyelftools parses every debug section and builds an object per DIE: on a 37 MB Go binary that
is ~0.7 s and ~90 MB, growing with the program. Here only .debug_info and .debug_abbrev are
read, and the walk starts in the compile unit whose bytes contain the wanted struct names (Go
puts every type in one "runtime" unit, after the units of code): a few thousand DIEs, whatever
the size of the program. Any parse error becomes a BadInput naming the file.
"""

from __future__ import annotations

import struct
import zlib
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from gotrace.binary.elf import ElfImage, inflate
from gotrace.errors import BadInput

_TAG_STRUCT = 0x13
_TAG_MEMBER = 0x0D
_AT_NAME = 0x03
_AT_MEMBER_LOC = 0x38
_OP_PLUS_UCONST = 0x23

# form -> fixed size in bytes (None: variable, handled in _skip / _value).
_FIXED = {
    0x05: 2, 0x06: 4, 0x07: 8, 0x0B: 1, 0x0C: 1, 0x11: 1, 0x12: 2, 0x13: 4, 0x14: 8, 0x19: 0,
    0x1C: 4, 0x1E: 16, 0x20: 8, 0x21: 0, 0x24: 8, 0x25: 1, 0x26: 2, 0x27: 3, 0x28: 4, 0x29: 1,
    0x2A: 2, 0x2B: 3, 0x2C: 4,
}
_OFFSET_SIZED = {0x0E, 0x10, 0x17, 0x1D, 0x1F}  # strp, ref_addr, sec_offset, strp_sup, line_strp
_ULEB = {0x0D, 0x0F, 0x15, 0x1A, 0x1B, 0x22, 0x23}  # sdata, udata, ref_udata, strx, addrx, *listx


class _Malformed(Exception):
    pass


@dataclass(frozen=True)
class _Unit:
    start: int  # offset of the unit header
    end: int
    version: int
    offset_size: int
    addr_size: int
    abbrev_offset: int
    dies: int  # offset of the first DIE


def struct_members(img: ElfImage, names: Iterable[str]) -> dict[str, dict[str, int]]:
    """{struct name: {member: byte offset}} for the wanted structs."""
    wanted = set(names)
    try:
        info = _section(img, "debug_info")
        abbrev = _section(img, "debug_abbrev")
        if info is None or abbrev is None:
            return {}
        reader = _Reader(img, info, abbrev)
        units = reader.units()
        # Units holding the names first; the rest only if a name was not found there.
        hits = {u.start for name in wanted for u in _units_with(info, units, name.encode())}
        found: dict[str, dict[str, int]] = {}
        for u in sorted(units, key=lambda u: u.start not in hits):
            reader.walk(u, wanted, found)
            if len(found) == len(wanted):
                break
        return found
    except (_Malformed, struct.error, IndexError, KeyError, ValueError, OverflowError,
            zlib.error) as e:
        raise BadInput(f"{img.name}: DWARF unreadable ({e or type(e).__name__}); "
                       "strip it (-ldflags=-w) or report a bug") from None


def _units_with(info: bytes, units: list[_Unit], name: bytes) -> list[_Unit]:
    """Units whose bytes hold `name`; by bisection (units are in order): a file with many
    units and many copies of the name must not cost their product."""
    starts = [u.start for u in units]
    out: dict[int, _Unit] = {}
    pos = info.find(name + b"\0")
    while pos >= 0:
        i = bisect_right(starts, pos) - 1
        if i >= 0 and pos < units[i].end:
            out.setdefault(i, units[i])
        pos = info.find(name + b"\0", pos + 1)
    return list(out.values())


def _section(img: ElfImage, name: str) -> bytes | None:
    """A debug section, decompressed (SHF_COMPRESSED by ElfImage, or the old .zdebug_)."""
    try:
        data = img.section_bytes(f".{name}")
        z = None if data is not None else img.section_bytes(f".z{name}")
    except BadInput as e:  # a corrupt compressed section: the DWARF is what is unreadable
        raise _Malformed(e.message) from None
    if data is not None:
        return data
    if z is None:
        return None
    if z[:4] != b"ZLIB" or len(z) < 12:
        raise _Malformed(f".z{name} is not ZLIB-compressed")
    try:  # the size is big-endian after the magic; a zip bomb is refused before inflating
        return inflate(z[12:], int.from_bytes(z[4:12], "big"), f".z{name}")
    except BadInput as e:
        raise _Malformed(e.message) from None


_MAX_NAME = 1 << 12  # a type or member name; runtime.g's are short


def _cstring(buf: bytes, p: int) -> str:
    """The NUL-terminated name at p, cut at _MAX_NAME bytes (no struct we look for has a
    longer name): many names that all scan to one distant NUL would cost their product."""
    end = buf.find(b"\0", p, p + _MAX_NAME)
    return buf[p : end if end >= 0 else p + _MAX_NAME].decode("utf-8", "replace")


def _uleb(buf: bytes, p: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[p]
        p += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, p
        shift += 7
        if shift > 63:
            raise _Malformed("LEB128 too long")


def _sleb(buf: bytes, p: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[p]
        p += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, p
        if shift > 63:
            raise _Malformed("LEB128 too long")


_Spec = tuple[int, int, int]  # attribute, form, implicit constant
_Abbrev = tuple[int, bool, list[_Spec]]  # tag, has children, attributes


class _Reader:
    def __init__(self, img: ElfImage, info: bytes, abbrev: bytes) -> None:
        self.img = img
        self.info = info
        self.abbrev = abbrev
        self._abbrevs: dict[int, dict[int, _Abbrev]] = {}
        self._str: bytes | None = None
        # Abbreviation bytes parsed so far: each unit names its table by offset, and tables
        # that start inside one another (a crafted file) would be parsed once per unit.
        self._abbrev_budget = 4 * len(abbrev) + (1 << 16)

    def units(self) -> list[_Unit]:
        info = self.info
        out = []
        p = 0
        while p + 11 <= len(info):
            (length,) = struct.unpack_from("<I", info, p)
            offset_size = 4
            hdr = p + 4
            if length == 0xFFFFFFFF:
                (length,) = struct.unpack_from("<Q", info, p + 4)
                offset_size = 8
                hdr = p + 12
            end = hdr + length
            if length < 7 or end > len(info):
                raise _Malformed(f"compile unit at {p:#x} runs past .debug_info")
            (version,) = struct.unpack_from("<H", info, hdr)
            fmt = "<I" if offset_size == 4 else "<Q"
            if version >= 5:
                unit_type, addr_size = info[hdr + 2], info[hdr + 3]
                (abbrev_off,) = struct.unpack_from(fmt, info, hdr + 4)
                dies = hdr + 4 + offset_size
                if unit_type in (4, 5):  # skeleton / split compile: an 8-byte id follows
                    dies += 8
                elif unit_type in (2, 6):  # type units: signature and type offset
                    dies += 8 + offset_size
            elif version >= 2:
                (abbrev_off,) = struct.unpack_from(fmt, info, hdr + 2)
                addr_size = info[hdr + 2 + offset_size]
                dies = hdr + 3 + offset_size
            else:
                raise _Malformed(f"DWARF version {version}")
            out.append(_Unit(p, end, version, offset_size, addr_size, abbrev_off, dies))
            p = end
        return out

    def _table(self, off: int) -> dict[int, _Abbrev]:
        table = self._abbrevs.get(off)
        if table is not None:
            return table
        if self._abbrev_budget <= 0:
            raise _Malformed("abbreviation tables overlap")
        buf = self.abbrev
        table = {}
        p = off
        try:
            while True:
                code, p = _uleb(buf, p)
                if code == 0:
                    break
                tag, p = _uleb(buf, p)
                children = buf[p] == 1
                p += 1
                specs: list[_Spec] = []
                while True:
                    attr, p = _uleb(buf, p)
                    form, p = _uleb(buf, p)
                    implicit = 0
                    if form == 0x21:  # implicit_const: the value lives here
                        implicit, p = _sleb(buf, p)
                    if attr == 0 and form == 0:
                        break
                    specs.append((attr, form, implicit))
                table[code] = (tag, children, specs)
        finally:
            self._abbrev_budget -= p - off
        self._abbrevs[off] = table
        return table

    def _skip(self, form: int, p: int, u: _Unit) -> int:
        size = _FIXED.get(form)
        if size is not None:
            return p + size
        if form in _OFFSET_SIZED:
            return p + u.offset_size
        if form in _ULEB:
            return _uleb(self.info, p)[1]
        if form == 0x01:  # addr
            return p + u.addr_size
        if form == 0x08:  # string
            return self.info.index(b"\0", p) + 1
        if form in (0x09, 0x18):  # block, exprloc
            n, p = _uleb(self.info, p)
            return p + n
        if form == 0x0A:
            return p + 1 + self.info[p]
        if form == 0x03:
            return p + 2 + int(struct.unpack_from("<H", self.info, p)[0])
        if form == 0x04:
            return p + 4 + int(struct.unpack_from("<I", self.info, p)[0])
        if form == 0x16:  # indirect: the form is in the data
            real, p = _uleb(self.info, p)
            return self._skip(real, p, u)
        raise _Malformed(f"unknown attribute form {form:#x}")

    def _string(self, form: int, p: int, u: _Unit) -> str | None:
        info = self.info
        if form == 0x08:
            return _cstring(info, p)
        if form == 0x0E:  # strp into .debug_str
            if self._str is None:
                self._str = _section(self.img, "debug_str") or b""
            (off,) = struct.unpack_from("<I" if u.offset_size == 4 else "<Q", info, p)
            return _cstring(self._str, off)
        return None  # strx and friends: not used by Go for type names

    def _const(self, form: int, p: int, implicit: int) -> int | None:
        info = self.info
        if form == 0x0B:
            return info[p]
        if form == 0x05:
            return int(struct.unpack_from("<H", info, p)[0])
        if form == 0x06:
            return int(struct.unpack_from("<I", info, p)[0])
        if form == 0x07:
            return int(struct.unpack_from("<Q", info, p)[0])
        if form == 0x0F:
            return _uleb(info, p)[0]
        if form == 0x0D:
            return _sleb(info, p)[0]
        if form == 0x21:
            return implicit
        if form in (0x18, 0x0A, 0x09):  # a location expression: DW_OP_plus_uconst N
            if form == 0x0A:
                n, q = info[p], p + 1
            else:
                n, q = _uleb(info, p)
            if n >= 2 and info[q] == _OP_PLUS_UCONST:
                return _uleb(info, q + 1)[0]
        return None

    def walk(self, u: _Unit, wanted: set[str], found: dict[str, dict[str, int]]) -> None:
        """Collect the members of every wanted struct defined in this unit."""
        table = self._table(u.abbrev_offset)
        info = self.info
        p = u.dies
        depth = 0
        into: dict[str, int] | None = None  # members of the struct being read
        into_depth = -1
        while p < u.end:
            code, p = _uleb(info, p)
            if code == 0:
                depth -= 1
                if into is not None and depth < into_depth:
                    into = None
                if depth < 0:
                    return
                continue
            tag, children, specs = table[code]
            name: str | None = None
            loc: int | None = None
            for attr, form, implicit in specs:
                if attr == _AT_NAME and tag in (_TAG_STRUCT, _TAG_MEMBER):
                    name = self._string(form, p, u)
                elif attr == _AT_MEMBER_LOC and into is not None and depth == into_depth:
                    loc = self._const(form, p, implicit)
                p = self._skip(form, p, u)
            if into is not None and depth == into_depth and tag == _TAG_MEMBER:
                if name is not None and loc is not None:
                    into[name] = loc
            elif tag == _TAG_STRUCT and children and name in wanted and name not in found:
                into = found[name] = {}
                into_depth = depth + 1
            if children:
                depth += 1
