"""Fuzz the pclntab reader: function table, pc-value tables, inline trees, frames(),
inline_sites(), frame_size(), func_ids(). Input: a fuzz container holding a mini pclntab,
its moduledata, inline trees and build info (tests/fuzz/seeds.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.common import MemImage, contract, instrumented, main, unpack

with instrumented():
    from gotrace.binary.elf import ElfImage
    from gotrace.binary.funcinfo import wrapper_functions
    from gotrace.binary.pclntab import Pclntab

MAX_FUNCS = 48  # functions looked at per input: the seeds have ~30
HOOKED = {"runtime.gopark", "runtime.runqput", "runtime.goexit1", "runtime.execute"}


@contract
def test_one_input(data: bytes) -> None:
    img = cast(ElfImage, MemImage(unpack(data)))
    p = Pclntab(img)
    funcs = p.functions()
    for f in funcs[:MAX_FUNCS]:
        p.lookup(f.name)
        p.func_at(f.entry)
        for pc in (f.entry, f.entry + f.size // 2):
            p.frames(pc, is_return_address=False)
            p.frames(pc + 1, is_return_address=True)
            p.frame_size(pc)
    p.func_ids()
    p.inline_sites(HOOKED | {f.name for f in funcs[:4]})
    p.goroot()
    wrapper_functions(p)


if __name__ == "__main__":
    main(test_one_input)
