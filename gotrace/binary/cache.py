"""Facts derived from a Go binary, kept on disk per build ID so that the next attach is instant.

Reading DWARF of a big unstripped binary costs about a second; decoding the runtime's functions
and inline trees a few hundred milliseconds more. None of that changes while the file does not,
so the results are stored as JSON under /var/cache/gotrace/binaries (root) or
~/.cache/gotrace/binaries, named by a digest of:

- the binary's Go build ID and GNU build ID (no build ID at all: nothing is cached), its size;
- the source of the code that derives the facts (gotrace/binary/*.py): a gotrace change never
  reuses facts an older gotrace derived.

An entry is used only if the bytes at every probe address and the Go symbol table header are
still those it was derived from (a probe on a wrong address would corrupt the target), and, as
root, only if it belongs to root and is writable by nobody else. Anything else is a miss.
`GOTRACE_BINARY_CACHE=off` disables the cache; another value names its directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from gotrace.binary.elf import ElfImage
from gotrace.errors import BadInput

FORMAT = 1
_ROOT_DIR = "/var/cache/gotrace/binaries"
_FINGERPRINT_BYTES = 16


def cache_dir() -> Path | None:
    """Where entries live; None when caching is off."""
    env = os.environ.get("GOTRACE_BINARY_CACHE")
    if env is not None:
        return None if env.lower() in ("off", "0", "no", "") else Path(env)
    if os.geteuid() == 0:
        return Path(_ROOT_DIR)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gotrace" / "binaries"


def build_ids(img: ElfImage) -> tuple[str, str]:
    """(Go build ID, GNU build ID in hex); either may be empty."""
    go = _note(img, ".note.go.buildid", b"Go\0\0", 4)
    gnu = _note(img, ".note.gnu.build-id", b"GNU\0", 3)
    return (go.rstrip(b"\0").decode("utf-8", "replace") if go else "",
            gnu.hex() if gnu else "")


def _note(img: ElfImage, section: str, name: bytes, kind: int) -> bytes | None:
    try:
        data = img.section_bytes(section)
    except BadInput:
        return None
    if not data or len(data) < 12:
        return None
    namesz, descsz, ntype = struct.unpack_from("<III", data, 0)
    start = 12 + (namesz + 3) // 4 * 4
    if ntype != kind or data[12 : 12 + namesz] != name or start + descsz > len(data):
        return None
    return data[start : start + descsz]


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """Digest of the modules that derive the cached facts."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for p in sorted(here.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(img: ElfImage) -> str | None:
    go, gnu = build_ids(img)
    if not go and not gnu:
        return None
    h = hashlib.sha256(f"{FORMAT}\n{_code_digest()}\n{go}\n{gnu}\n{img.size}".encode())
    return h.hexdigest()[:40]


def entry_path(img: ElfImage) -> Path | None:
    """The file an entry for this binary lives in (whether or not it exists)."""
    d = cache_dir()
    key = cache_key(img)
    return None if d is None or key is None else d / f"{key}.json"


def fingerprint(img: ElfImage, addrs: list[int]) -> list[list[Any]]:
    """[address, bytes there in hex] for each address: what an entry must still find."""
    out: list[list[Any]] = []
    for a in sorted(set(addrs)):
        try:
            out.append([a, img.read(a, _FINGERPRINT_BYTES).hex()])
        except BadInput:
            out.append([a, ""])
    return out


def _trusted(path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def load(img: ElfImage) -> dict[str, Any] | None:
    """The facts stored for this binary, or None (no entry, stale, foreign or unreadable)."""
    path = entry_path(img)
    if path is None or not _trusted(path) or not _trusted(path.parent):
        return None
    try:
        facts: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(facts, dict) or facts.get("format") != FORMAT:
        return None
    stored = facts.get("fingerprint")
    if not isinstance(stored, list) or not stored:
        return None
    if fingerprint(img, [int(a) for a, _ in stored]) != stored:
        return None
    return facts


def save(img: ElfImage, facts: dict[str, Any], addrs: list[int]) -> bool:
    """Store the facts (atomically); False when there is no build ID or no writable cache."""
    path = entry_path(img)
    if path is None:
        return False
    entry = dict(facts, format=FORMAT, fingerprint=fingerprint(img, addrs))
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entry, f, separators=(",", ":"))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return False
    return True
