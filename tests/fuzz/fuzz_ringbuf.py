"""Fuzz the ring-buffer record parser (the kernel side is ours, but the bytes are shared
memory). Input: [n u32][buffer]; also checks it never consumes past the buffer."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.common import contract, instrumented, main

with instrumented():
    from gotrace.live.ringbuf import parse_records


@contract
def test_one_input(data: bytes) -> None:
    if len(data) < 4:
        return
    (n,) = struct.unpack_from("<I", data)
    buf = data[4:]
    _events, used, malformed = parse_records(buf, n)
    if not 0 <= used <= len(buf) or malformed < 0:
        raise AssertionError(f"parse_records consumed {used} of {len(buf)} bytes")


if __name__ == "__main__":
    main(test_one_input)
