"""What every fuzz harness shares: the contract, a small image format, an ELF writer, main().

The contract of a reader of untrusted bytes: a result or gotrace's own error (GotraceError,
carrying an exit code); any other exception, a hang or a memory blow-up is a finding.

Harnesses feed readers small *mini images* (a real Go binary reduced to the bytes the readers
look at, each chunk at its original virtual address; see tests/fuzz/seeds.py) so that an
execution costs well under a millisecond. A mini image travels in one of two encodings:

- the fuzz container (`pack`/`unpack`): records of sections and symbols, parsed leniently;
  `MemImage` serves it with ElfImage's interface, with no file and no pyelftools, for the
  section readers;
- a real ELF file (`write_elf`), for the harnesses of ElfImage itself and GoBinary.open.

This module imports nothing of gotrace.binary at import time: a harness imports the readers
inside `instrumented()` so that atheris sees their code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import signal
import struct
import sys
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from gotrace.binary.elf import LoadedImage, Segment
from gotrace.errors import GotraceError

ROOT = Path(__file__).resolve().parents[2]
FUZZ_DIR = Path(__file__).resolve().parent
REGRESSIONS = FUZZ_DIR / "regressions"
CACHE = Path(os.environ.get("GOTRACE_CACHE", ROOT / ".cache")) / "fuzz"
SEEDS = CACHE / "seeds"

TIME_LIMIT_S = 10  # per input, in fuzzing (libFuzzer -timeout) and in the regression replay
MEMORY_LIMIT = 3 << 30  # address space of a fuzzing process (RLIMIT_AS): blow-ups fail fast
PEAK_LIMIT = 256 << 20  # Python allocations one input may make in the replay (tracemalloc)

TestOneInput = Callable[[bytes], None]

PF_X, PF_W, PF_R = 1, 2, 4
NOALLOC = 0x80  # container flag: a section that is not loaded (debug info), no segment


# -- the contract ------------------------------------------------------------------------------


def contract(fn: TestOneInput) -> TestOneInput:
    """The harness entry point: gotrace's own errors are fine, anything else escapes.

    With GOTRACE_FUZZ_KEEP_GOING=DIR (the long campaign), an unexpected exception is saved
    under DIR (one input per distinct exception site) and the run goes on, so that one
    finding does not end a million-execution campaign.
    """
    keep_going = os.environ.get("GOTRACE_FUZZ_KEEP_GOING")

    def one_input(data: bytes) -> None:
        try:
            fn(data)
        except GotraceError:
            pass
        except Exception as e:
            if not keep_going:
                raise
            record_finding(Path(keep_going), data, e)

    one_input.__name__ = fn.__name__
    return one_input


def finding_key(e: BaseException) -> str:
    """Exception type and the innermost gotrace frame: one key per distinct bug."""
    where = "?"
    for fs in traceback.extract_tb(e.__traceback__):
        if "/gotrace/" in fs.filename or "/elftools/" in fs.filename:
            where = f"{Path(fs.filename).name}:{fs.lineno}"
    return f"{type(e).__name__}@{where}"


def record_finding(outdir: Path, data: bytes, e: BaseException) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    key = finding_key(e).replace("/", "_")
    path = outdir / f"{key}.bin"
    if not path.exists():
        path.write_bytes(data)
        (outdir / f"{key}.txt").write_text("".join(traceback.format_exception(e)))
    with open(outdir / "counts.txt", "a") as f:
        f.write(f"{key}\n")


class Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """SIGALRM-bounded block (main thread only): a hang becomes a Timeout."""

    def on_alarm(_sig: int, _frame: FrameType | None) -> None:
        raise Timeout(f"input took more than {seconds}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def instrumented(*packages: str) -> contextlib.AbstractContextManager[Any]:
    """atheris' import hook when this process is a fuzzer, else nothing (pytest replays)."""
    main = sys.modules.get("__main__")
    name = Path(getattr(main, "__file__", "") or "").name
    if not name.startswith("fuzz_"):
        return contextlib.nullcontext()
    import atheris

    hook: contextlib.AbstractContextManager[Any] = atheris.instrument_imports(
        include=list(packages or ("gotrace",)))
    return hook


def main(test_one_input: TestOneInput) -> None:
    """`python tests/fuzz/fuzz_X.py [libFuzzer flags] CORPUS_DIR...` under limits."""
    import atheris

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    args = list(sys.argv)
    if not any(a.startswith("-timeout=") for a in args):
        args.insert(1, f"-timeout={TIME_LIMIT_S}")
    if not any(a.startswith("-rss_limit_mb=") for a in args):
        args.insert(1, f"-rss_limit_mb={MEMORY_LIMIT >> 20}")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def seed_dir(harness: str) -> Path:
    return SEEDS / harness


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


# -- mini images -------------------------------------------------------------------------------


@dataclass
class Section:
    name: str
    vaddr: int
    flags: int  # PF_* of the segment that loads it; NOALLOC: not loaded
    data: bytes


@dataclass
class MiniImage:
    sections: list[Section] = field(default_factory=list)
    symbols: dict[str, tuple[int, int]] = field(default_factory=dict)
    pie: bool = False


_SEC = struct.Struct("<QBI")
_SYM = struct.Struct("<QQ")


def pack(mini: MiniImage) -> bytes:
    """The fuzz container: [kind u8][name_len u8][name] then a section or a symbol body."""
    out = bytearray(b"\x01" if mini.pie else b"\x00")
    for s in mini.sections:
        name = s.name.encode()
        out += bytes([0, len(name)]) + name + _SEC.pack(s.vaddr, s.flags, len(s.data)) + s.data
    for n, (value, size) in mini.symbols.items():
        name = n.encode()
        out += bytes([1, len(name)]) + name + _SYM.pack(value, size)
    return bytes(out)


def unpack(data: bytes) -> MiniImage:
    """Lenient: a truncated or unknown record ends the image (fuzzed inputs are garbage)."""
    mini = MiniImage(pie=bool(data[:1]) and data[0] & 1 == 1)
    p = 1
    while p + 2 <= len(data):
        kind, n = data[p], data[p + 1]
        name = data[p + 2 : p + 2 + n].decode("utf-8", "replace")
        p += 2 + n
        if kind == 0 and p + _SEC.size <= len(data):
            vaddr, flags, size = _SEC.unpack_from(data, p)
            p += _SEC.size
            mini.sections.append(Section(name, vaddr, flags, data[p : p + size]))
            p += size
        elif kind == 1 and p + _SYM.size <= len(data):
            mini.symbols[name] = _SYM.unpack_from(data, p)
            p += _SYM.size
        else:
            break
    return mini


class MemImage(LoadedImage):
    """ElfImage's interface over a mini image held in memory: sections laid end to end as the
    "file", one PT_LOAD per loaded section, symbols from the image. The readers under test
    only use this interface, so they run on it as they run on a file, minus pyelftools."""

    def __init__(self, mini: MiniImage, name: str = "fuzz-input") -> None:
        self.path = self.name = name
        self.is_pie = mini.pie
        self.machine = "EM_X86_64"
        data = bytearray()
        self.segments: list[Segment] = []
        self._sections: dict[str, tuple[int, int, int]] = {}  # name -> (offset, vaddr, size)
        for s in mini.sections:
            off = len(data)
            data += s.data
            if not s.flags & NOALLOC:
                self.segments.append(Segment(s.vaddr, off, len(s.data), len(s.data),
                                             s.flags & 7))
            if s.name:
                self._sections.setdefault(s.name, (off, s.vaddr, len(s.data)))
        self.data = bytes(data)
        self.size = len(self.data)
        self._symbols = dict(mini.symbols)

    def close(self) -> None:
        pass

    def section_range(self, name: str) -> tuple[int, int] | None:
        s = self._sections.get(name)
        return None if s is None else (s[1], s[2])

    def section_bytes(self, name: str) -> bytes | None:
        s = self._sections.get(name)
        return None if s is None else self.data[s[0] : s[0] + s[2]]

    def section_file_range(self, name: str) -> tuple[int, int] | None:
        s = self._sections.get(name)
        return None if s is None else (s[0], s[2])

    @property
    def has_symtab(self) -> bool:
        return bool(self._symbols)

    @property
    def has_dwarf(self) -> bool:
        return ".debug_info" in self._sections or ".zdebug_info" in self._sections

    def symbols(self) -> dict[str, tuple[int, int]]:
        return self._symbols

    def symbol(self, name: str) -> tuple[int, int] | None:
        return self._symbols.get(name)


# -- ELF files ---------------------------------------------------------------------------------

_SHT_PROGBITS, _SHT_SYMTAB, _SHT_STRTAB = 1, 2, 3
_SHF_WRITE, _SHF_ALLOC, _SHF_EXEC, _SHF_COMPRESSED = 0x1, 0x2, 0x4, 0x800


def write_elf(mini: MiniImage, *, compress_debug: bool = False) -> bytes:
    """A minimal ELF64 x86-64 executable: one PT_LOAD per loaded section, section headers,
    .symtab/.strtab when the image has symbols, and SHF_COMPRESSED debug sections on request.
    Small on purpose: it is a fuzz input."""
    secs: list[tuple[str, int, int, int, bytes, int, int]] = []  # name type flags addr data link es
    for s in mini.sections:
        if not s.name:  # loaded but unnamed: a PT_LOAD only, one header less to parse
            secs.append(("", 0, 0, s.vaddr, s.data, 0, 0))
            continue
        flags = 0 if s.flags & NOALLOC else _SHF_ALLOC
        flags |= (_SHF_EXEC if s.flags & PF_X else 0) | (_SHF_WRITE if s.flags & PF_W else 0)
        data = s.data
        if compress_debug and s.name.startswith(".debug_"):
            data = struct.pack("<IIQQ", 1, 0, len(data), 1) + zlib.compress(data)
            flags |= _SHF_COMPRESSED
        secs.append((s.name, _SHT_PROGBITS, flags, s.vaddr, data, 0, 0))
    if mini.symbols:
        strtab = bytearray(b"\0")
        symtab = bytearray(24)
        for n, (value, size) in mini.symbols.items():
            symtab += struct.pack("<IBBHQQ", len(strtab), 0x11, 0, 1, value, size)
            strtab += n.encode() + b"\0"
        link = sum(1 for sec in secs if sec[0]) + 2  # .strtab: after null, named, .symtab
        secs.append((".symtab", _SHT_SYMTAB, 0, 0, bytes(symtab), link, 24))
        secs.append((".strtab", _SHT_STRTAB, 0, 0, bytes(strtab), 0, 0))
    shstr = bytearray(b"\0")
    name_offs = []
    for sec in secs:
        name_offs.append(len(shstr))
        shstr += sec[0].encode() + b"\0"
    name_offs.append(len(shstr))
    shstr += b".shstrtab\0"
    secs.append((".shstrtab", _SHT_STRTAB, 0, 0, bytes(shstr), 0, 0))

    loads = [(i, s) for i, s in enumerate(mini.sections) if not s.flags & NOALLOC]
    phoff = 64
    body = bytearray()
    pos = phoff + 56 * len(loads)
    offsets = []
    for sec in secs:
        pad = -(pos + len(body)) % 16
        body += b"\0" * pad
        offsets.append(pos + len(body))
        body += sec[4]
    shoff = pos + len(body) + (-(pos + len(body)) % 8)
    body += b"\0" * (shoff - pos - len(body))

    out = bytearray()
    out += b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    headers = sum(1 for sec in secs if sec[0] or sec[1])
    out += struct.pack("<HHIQQQIHHHHHH", 3 if mini.pie else 2, 62, 1, 0, phoff, shoff, 0,
                       64, 56, len(loads), 64, headers + 1, headers)
    for i, s in loads:
        out += struct.pack("<IIQQQQQQ", 1, s.flags & 7, offsets[i], s.vaddr, s.vaddr,
                           len(s.data), len(s.data), 0x1000)
    out += body
    out += b"\0" * 64
    for k, (name, typ, flags, addr, data, link, es) in enumerate(secs):
        if not name and not typ:
            continue
        out += struct.pack("<IIQQQQIIQQ", name_offs[k], typ, flags, addr, offsets[k], len(data),
                           link, 1 if typ == _SHT_SYMTAB else 0, 16, es)
    return bytes(out)


class ScratchFile:
    """One file in a tmpfs that each execution rewrites: readers that want a path get one."""

    def __init__(self, tag: str) -> None:
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
        self.path = str(base / f"gotrace-fuzz-{tag}-{os.getpid()}")

    def write(self, data: bytes) -> str:
        with open(self.path, "wb") as f:
            f.write(data)
        return self.path

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
