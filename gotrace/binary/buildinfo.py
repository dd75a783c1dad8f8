"""The Go version and module info a Go linker stamps into every binary (`.go.buildinfo`).

The version decides which runtime layouts apply, and this blob survives `-ldflags='-s -w'`,
so it is the one version source that works on stripped binaries. Format per
`debug/buildinfo/buildinfo.go`; this is a reader of the same data `go version -m` shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from gotrace.binary.elf import ElfImage
from gotrace.errors import BadInput

MAGIC = b"\xff Go buildinf:"
HEADER_SIZE = 32
_FLAG_BIG_ENDIAN = 0x1
_FLAG_INLINE_STRINGS = 0x2  # Go 1.18+: strings follow the header; older: pointers to them
_PF_W = 0x2
# Longest string we accept: modinfo of a large program is tens of KB; anything bigger is garbage.
_MAX_STRING = 16 << 20


@dataclass(frozen=True)
class BuildInfo:
    """What `go version -m` prints: toolchain version, main package path, `build` settings."""

    go_version: str
    path: str = ""
    settings: dict[str, str] = field(default_factory=dict)


def read_go_version(img: ElfImage) -> str:
    """The toolchain version string, e.g. "go1.27.3" (may carry a " X:..." experiment suffix)."""
    return read_build_info(img).go_version


def read_build_info(img: ElfImage) -> BuildInfo:
    """Find and decode the build info blob; BadInput when the file has none."""
    found = _find_blob(img)
    if found is None:
        raise BadInput(f"{img.name} is not a Go program (no Go build info)")
    off, end = found
    data = img.data
    if end - off < HEADER_SIZE:
        raise BadInput(f"{img.name}: Go build info is truncated")
    ptr_size = data[off + 14]
    flags = data[off + 15]
    if flags & _FLAG_INLINE_STRINGS:
        vers, p = _read_varint_string(img, off + HEADER_SIZE, end)
        mod, _ = _read_varint_string(img, p, end)
    else:
        vers, mod = _read_pointer_strings(img, off, ptr_size, bool(flags & _FLAG_BIG_ENDIAN))
    vers_s = vers.decode("utf-8", "replace")
    if not vers_s:
        raise BadInput(f"{img.name} is not a Go program (empty Go version in build info)")
    return _parse_modinfo(vers_s, mod)


def parse_go_version(s: str) -> tuple[int, int, int]:
    """ "go1.27.3" -> (1, 27, 3); "go1.21rc2" -> (1, 21, 0); " X:..." suffixes are ignored.

    Development builds ("devel go1.23-abc123 ...") yield the release they lead up to; when no
    release can be read at all this raises BadInput rather than guess a layout.
    """
    text = s.strip()
    if text.startswith("devel"):
        m = re.search(r"\bgo(\d+)\.(\d+)", text)
        if m is None:
            raise BadInput(f"cannot tell the Go version from {s!r}")
        return int(m.group(1)), int(m.group(2)), 0
    head = text.split(maxsplit=1)[0] if text else ""
    m = _VERSION_RE.match(head)
    if m is None:
        raise BadInput(f"cannot tell the Go version from {s!r}")
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


_VERSION_RE = re.compile(r"go(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:(?:rc|beta)\d+)?(?:[-+].*)?$")


# -- locating the blob -------------------------------------------------------------------------


def _find_blob(img: ElfImage) -> tuple[int, int] | None:
    """(file offset, end offset) of the blob: its section, else a 16-aligned magic in RW data."""
    data = img.data
    sect = img.section_file_range(".go.buildinfo")
    if sect is not None:
        off, size = sect
        end = min(off + size, len(data))
        if data[off : off + len(MAGIC)] == MAGIC:
            return off, end
    for seg in img.segments:
        if not seg.flags & _PF_W or seg.filesz == 0:
            continue
        start = seg.offset
        end = min(seg.offset + seg.filesz, len(data))
        if start >= end:  # outside the file (mmap.find takes no offset past 2**63)
            continue
        pos = data.find(MAGIC, start, end)
        while pos >= 0:
            if (pos - seg.offset + seg.vaddr) % 16 == 0:
                return pos, end
            pos = data.find(MAGIC, pos + 1, end)
    return None


def _read_varint_string(img: ElfImage, p: int, end: int) -> tuple[bytes, int]:
    """A uvarint length then that many bytes; returns (bytes, offset after them)."""
    data = img.data
    length = 0
    shift = 0
    while True:
        if p >= end or shift > 63:
            raise BadInput(f"{img.name}: Go build info is truncated")
        b = data[p]
        p += 1
        length |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
    if length > _MAX_STRING or p + length > end:
        raise BadInput(f"{img.name}: Go build info is truncated")
    return bytes(data[p : p + length]), p + length


def _read_pointer_strings(
    img: ElfImage, off: int, ptr_size: int, big_endian: bool
) -> tuple[bytes, bytes]:
    """Pre-1.18 header: two pointers to Go string headers {data, len} for version and modinfo."""
    if ptr_size not in (4, 8):
        raise BadInput(f"{img.name}: Go build info has a bad pointer size {ptr_size}")
    order: Literal["little", "big"] = "big" if big_endian else "little"
    hdr = bytes(img.data[off + 16 : off + 16 + 2 * ptr_size])

    def word(b: bytes, i: int) -> int:
        return int.from_bytes(b[i * ptr_size : (i + 1) * ptr_size], order)

    def go_string(addr: int) -> bytes:
        try:
            sh = img.read(addr, 2 * ptr_size)
            ln = word(sh, 1)
            if ln > _MAX_STRING:
                return b""
            return img.read(word(sh, 0), ln) if ln else b""
        except BadInput:
            return b""

    return go_string(word(hdr, 0)), go_string(word(hdr, 1))


# -- modinfo -----------------------------------------------------------------------------------


def _parse_modinfo(vers: str, mod: bytes) -> BuildInfo:
    """Unframe modinfo (16-byte sentinels) and pick out `path` and `build` lines."""
    mod = mod[16:-16] if len(mod) >= 33 and mod[-17] == ord("\n") else b""
    path = ""
    settings: dict[str, str] = {}
    for raw in mod.decode("utf-8", "replace").split("\n"):
        kind, _, rest = raw.partition("\t")
        if kind == "path":
            path = rest
        elif kind == "build":
            key, sep, val = rest.partition("=")
            if key.startswith('"'):
                # A quoted key may hold '='; split after its closing quote instead.
                m = re.match(r'("(?:[^"\\]|\\.)*")=(.*)$', rest)
                if m is None:
                    continue
                key, val, sep = m.group(1), m.group(2), "="
            if sep:
                settings[_unquote(key)] = _unquote(val)
    return BuildInfo(go_version=vers, path=path, settings=settings)


_ESCAPE = re.compile(r"\\(?:([abfnrtv\\'\"])|x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})"
                     r"|U([0-9a-fA-F]{8}))")
_QUOTED_BODY = re.compile(r"(?:[^\"\\\n]|" + _ESCAPE.pattern + r")*")
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", "'": "'", '"': '"'}


def _unquote(s: str) -> str:
    """Undo Go's strconv.Quote on build settings that contain spaces or quotes.

    Go's escapes only, decoded by regular expressions: never a Python parser (ast.literal_eval
    on a crafted setting raised RecursionError or MemoryError). Anything else stays as is.
    """
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        return s
    body = s[1:-1]
    if _QUOTED_BODY.fullmatch(body) is None:
        return s
    try:
        return _ESCAPE.sub(_unescape, body)
    except ValueError:  # \U beyond Unicode
        return s


def _unescape(m: re.Match[str]) -> str:
    simple, hx, octal, u4, u8 = m.groups()
    if simple:
        return _SIMPLE[simple]
    if hx or octal:
        return chr(int(hx, 16) if hx else int(octal, 8) & 0xFF)
    return chr(int(u4 or u8, 16))
