"""Fuzz wait-reason extraction: runtime.waitReasonStrings by symbol, or decoded from
runtime.waitReason.String (its range is the container's `fuzz:runtime.waitReason.String`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.common import MemImage, contract, instrumented, main, unpack

with instrumented():
    from gotrace.binary.elf import ElfImage
    from gotrace.binary.waitreasons import wait_reasons


@contract
def test_one_input(data: bytes) -> None:
    img = MemImage(unpack(data))
    method = img.symbol("fuzz:runtime.waitReason.String")
    wait_reasons(cast(ElfImage, img),
                 None if method is None else (method[0], method[0] + method[1]))


if __name__ == "__main__":
    main(test_one_input)
