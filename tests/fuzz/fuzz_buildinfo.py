"""Fuzz the `.go.buildinfo` reader: the Go version decides every layout, and the blob is read
from any binary a user points gotrace at (input: a fuzz container, tests/fuzz/common.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.common import MemImage, contract, instrumented, main, unpack

with instrumented():
    from gotrace.binary.buildinfo import parse_go_version, read_build_info
    from gotrace.binary.elf import ElfImage


@contract
def test_one_input(data: bytes) -> None:
    img = cast(ElfImage, MemImage(unpack(data)))
    info = read_build_info(img)
    parse_go_version(info.go_version)


if __name__ == "__main__":
    main(test_one_input)
