"""pclntab reader against Go's own tools, on every supported build mode and several Go versions.

`go tool addr2line` and the ELF symbol table are independent readers of the same facts, so
agreement with them on real binaries is the evidence that layouts and traps are handled.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gotrace.binary.elf import ElfImage
from gotrace.binary.pclntab import Frame, Func, Pclntab
from gotrace.errors import BadInput
from tests.gobuild import GO_VERSIONS, TARGETS, VARIANTS, GoBuild, addr2line, goroot, version_key

HELLO = TARGETS / "hello"
NEWEST = max(GO_VERSIONS, key=version_key)


def marker_line(name: str) -> int:
    """Line of the `// MARK:name` comment in the hello target (so edits don't break tests)."""
    for n, text in enumerate((HELLO / "main.go").read_text().splitlines(), 1):
        if f"// MARK:{name}" in text:
            return n
    raise AssertionError(f"marker {name} not in main.go")


def hello_file() -> str:
    return str(HELLO.resolve() / "main.go")


def open_tab(path: Path) -> Iterator[tuple[ElfImage, Pclntab]]:
    img = ElfImage(str(path))
    try:
        yield img, Pclntab(img)
    finally:
        img.close()


@pytest.fixture(params=GO_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def hello(go_build: GoBuild, version: str, variant: str) -> Iterator[tuple[ElfImage, Pclntab]]:
    yield from open_tab(go_build(version, variant))


@pytest.fixture
def hello_plain(go_build: GoBuild, version: str) -> Iterator[tuple[ElfImage, Pclntab]]:
    yield from open_tab(go_build(version, "plain"))


def sample_pcs(tab: Pclntab, n: int = 300) -> list[int]:
    """~n PCs: random functions of the whole program plus every function of package main."""
    rnd = random.Random(20240601)
    funcs = tab.functions()
    mains = [f for f in funcs if f.name.startswith("main.")]
    pcs = [rnd.randrange(f.entry, f.end) for f in mains for _ in range(5)]
    pcs += [f.entry for f in mains]
    others = rnd.sample(funcs, min(len(funcs), max(0, n - len(pcs))))
    pcs += [rnd.randrange(f.entry, f.end) for f in others]
    return pcs


# -- against go tool addr2line -------------------------------------------------------------------


def no_line_table(tab: Pclntab, pc: int) -> bool:
    """The function at pc has no pc-line table (offset 0), as linker-made markers such as
    go:textfipsstart: the runtime then has no line, addr2line reads pctab's first bytes."""
    i = tab._index_at(pc)
    return i is not None and tab._rec(i).pcln == 0


def test_frames_agree_with_addr2line(
    hello: tuple[ElfImage, Pclntab], version: str, variant: str
) -> None:
    img, tab = hello
    oracle = version
    if img.section_range(".gopclntab") is None and version_key(version) < (1, 21):
        # Go 1.19's objfile reads only a `.gopclntab` section; newer ones also know the PIE
        # section name and the runtime.pclntab symbols.
        oracle = NEWEST
        assert version_key(oracle) >= (1, 21), "no toolchain here reads this binary's pclntab"
    # addr2line bases entry offsets on the runtime.text symbol, else on the .text section.
    sym = img.symbol("runtime.text")
    text_sect = img.section_range(".text")
    assert text_sect is not None
    a2l_text = sym[0] if sym is not None else text_sect[0]
    shift = a2l_text - tab.text_start

    pcs = sample_pcs(tab)
    assert len(pcs) >= 250
    want = addr2line(oracle, Path(img.path), [pc + shift for pc in pcs])
    bad = []
    for pc, (fn, fileline) in zip(pcs, want, strict=True):
        if fileline.startswith(":"):  # no file/line table for this PC: Go prints "?:0"
            fileline = "?:0"
        frames = tab.frames(pc, is_return_address=False)
        got = (frames[-1].function, f"{frames[0].file}:{frames[0].line}") if frames else None
        if got == (fn, "?:0") and no_line_table(tab, pc):
            continue  # as the runtime reads it; debug/gosym decodes whatever is at offset 0
        if got != (fn, fileline):
            bad.append(f"{pc:#x}: got {got}, addr2line {(fn, fileline)}")
    assert not bad, f"{len(bad)}/{len(pcs)} PCs differ, e.g.\n" + "\n".join(bad[:10])


# -- against the ELF symbol table ----------------------------------------------------------------


def test_entries_match_symtab(hello_plain: tuple[ElfImage, Pclntab]) -> None:
    img, tab = hello_plain
    syms = img.symbols()
    compared = 0
    bad = []
    for f in tab.functions():
        # Assembly (ABI0) symbols carry a `.abi0` suffix in .symtab but not in pclntab; ABI
        # wrappers share the body's name in pclntab.
        cands = [syms[n][0] for n in (f.name, f.name + ".abi0") if n in syms]
        if not cands:
            continue
        compared += 1
        if f.entry not in cands:
            bad.append(f"{f.name}: pclntab {f.entry:#x}, symtab {[hex(c) for c in cands]}")
    assert compared > 1000
    assert not bad, "\n".join(bad[:10])


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "stripped"])
def test_layout_facts_match_symbols(go_build: GoBuild, version: str, variant: str) -> None:
    """What pclntab.py finds without symbols equals what the symbol table says."""
    img = ElfImage(str(go_build(version, variant)))
    tab = Pclntab(img)
    assert img.has_symtab
    rt = img.symbol("runtime.text")
    md = img.symbol("runtime.firstmoduledata")
    gofunc = img.symbol("go:func.*") or img.symbol("go.func.*")
    assert rt is not None and md is not None and gofunc is not None
    assert tab.text_start == rt[0]
    assert tab.moduledata_addr == md[0]
    assert tab.gofunc == gofunc[0]
    if variant.startswith("cgo"):
        text_sect = img.section_range(".text")
        assert text_sect is not None
        assert text_sect[0] != tab.text_start, "C code should precede Go text"


def test_lookup_prefers_body_over_abi_wrapper(hello_plain: tuple[ElfImage, Pclntab]) -> None:
    img, tab = hello_plain
    dups = [f for f in tab.functions() if f.name == "runtime.newproc"]
    assert len(dups) == 2  # ABIInternal body + ABI0 wrapper
    body = tab.lookup("runtime.newproc")
    assert body is not None
    assert body.size == max(f.size for f in dups)
    sym = img.symbol("runtime.newproc")
    assert sym is not None and body.entry == sym[0]
    assert tab.lookup("no.such.function") is None


def test_func_at_bounds(hello: tuple[ElfImage, Pclntab]) -> None:
    _, tab = hello
    funcs = tab.functions()
    assert funcs == sorted(funcs, key=lambda f: f.entry)
    assert all(isinstance(f, Func) and f.end > f.entry for f in funcs)
    for f in random.Random(7).sample(funcs, 50):
        # Duplicated names exist, so compare the records, not lookup(name).
        assert tab.func_at(f.entry) == f
        assert tab.func_at(f.end - 1) == f
    assert tab.func_at(funcs[0].entry - 1) is None
    assert tab.func_at(funcs[-1].end) is None
    assert tab.func_at(0) is None
    assert tab.frames(0, is_return_address=True) == []
    assert tab.frames(funcs[-1].end + 0x1000, is_return_address=False) == []
    assert tab.frames(-5, is_return_address=False) == []


# -- inlining ------------------------------------------------------------------------------------


def test_inlined_calls_expand(hello: tuple[ElfImage, Pclntab]) -> None:
    _, tab = hello
    work = tab.lookup("main.work")
    assert work is not None
    want = [
        Frame("main.scale", hello_file(), marker_line("scale-body")),
        Frame("main.(*counter).add", hello_file(), marker_line("add-calls-scale")),
        Frame("main.work", hello_file(), marker_line("work-calls-add")),
    ]
    seen_two = False
    seen_three = False
    for pc in range(work.entry, work.end):
        frames = tab.frames(pc, is_return_address=False)
        assert frames, f"no frames at {pc:#x}"
        assert frames[-1].function == "main.work"
        if len(frames) == 3:
            seen_three = True
            assert frames == want
        elif len(frames) == 2:
            seen_two = True
            assert frames == want[1:]
    assert seen_three, "scale() inlined into add() inlined into work() never seen"
    assert seen_two, "add()'s own code inlined into work() never seen"


def test_return_address_uses_call_instruction(hello: tuple[ElfImage, Pclntab]) -> None:
    _, tab = hello
    f = tab.lookup("main.spawn")
    assert f is not None
    for pc in range(f.entry + 1, f.end):
        assert tab.frames(pc, is_return_address=True) == tab.frames(pc - 1, is_return_address=False)
    # At the entry there is no call instruction before: nothing to step back to.
    assert tab.frames(f.entry, is_return_address=True) == tab.frames(
        f.entry, is_return_address=False
    )


def test_closures_and_go_statement_names(hello: tuple[ElfImage, Pclntab], version: str) -> None:
    _, tab = hello
    assert tab.lookup("main.spawn.func1") is not None
    assert tab.lookup("main.main") is not None
    if version_key(version) >= (1, 22):
        assert tab.lookup("main.spawn.gowrap1") is not None  # `go f(x)` wrapper, 1.22+
    line = marker_line("go-stmt")
    closure = tab.lookup("main.spawn.func1")
    assert closure is not None
    frames = tab.frames(closure.entry, is_return_address=False)
    assert frames[-1].file == hello_file()
    assert frames[-1].line == line


def test_goroot(hello: tuple[ElfImage, Pclntab], version: str) -> None:
    _, tab = hello
    got = tab.goroot()
    assert got is not None
    assert os.path.realpath(got) == os.path.realpath(goroot(version))


# -- malformed input -----------------------------------------------------------------------------


def test_non_go_elf_is_bad_input() -> None:
    true = shutil.which("true") or "/bin/true"
    with ElfImage(true) as img, pytest.raises(BadInput, match="Go"):
        Pclntab(img)


def test_text_file_is_bad_input(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("this is not a program\n" * 20)
    with pytest.raises(BadInput):
        ElfImage(str(p))


def _corrupted_copy(src: Path, dst: Path, patch: dict[int, bytes]) -> Path:
    data = bytearray(src.read_bytes())
    for off, b in patch.items():
        data[off : off + len(b)] = b
    dst.write_bytes(bytes(data))
    return dst


def test_truncated_binary_is_bad_input(go_build: GoBuild, tmp_path: Path) -> None:
    src = go_build(NEWEST, "stripped")
    data = src.read_bytes()
    for cut in (100, 4096, len(data) // 3, len(data) // 2):
        p = tmp_path / f"cut{cut}"
        p.write_bytes(data[:cut])
        with pytest.raises(BadInput, match=r"truncated|not a readable ELF"):
            img = ElfImage(str(p))
            try:
                Pclntab(img).functions()
            finally:
                img.close()
    # Losing only the section headers at the end of the file is survivable: the table is found
    # by scanning the segments.
    p = tmp_path / "noshdr"
    p.write_bytes(data[: len(data) - 4096])
    with ElfImage(str(p)) as img:
        tab = Pclntab(img)
        assert tab.lookup("main.main") is not None


def test_old_magic_says_too_old(go_build: GoBuild, tmp_path: Path) -> None:
    src = go_build(NEWEST, "plain")
    with ElfImage(str(src)) as img:
        fr = img.section_file_range(".gopclntab")
    assert fr is not None
    p = _corrupted_copy(src, tmp_path / "old", {fr[0]: (0xFFFFFFFA).to_bytes(4, "little")})
    with ElfImage(str(p)) as img, pytest.raises(BadInput, match=r"too old.*1\.19"):
        Pclntab(img)


def test_garbled_header_is_bad_input(go_build: GoBuild, tmp_path: Path) -> None:
    src = go_build(NEWEST, "plain")
    with ElfImage(str(src)) as img:
        fr = img.section_file_range(".gopclntab")
    assert fr is not None
    # ptrSize 4 and an nfunc far beyond the table
    p = _corrupted_copy(src, tmp_path / "hdr", {fr[0] + 7: b"\x04", fr[0] + 8: b"\xff" * 8})
    with ElfImage(str(p)) as img, pytest.raises(BadInput, match="pclntab"):
        Pclntab(img)


@pytest.mark.parametrize("seed", range(6))
def test_corrupt_tables_never_crash(go_build: GoBuild, tmp_path: Path, seed: int) -> None:
    """Random damage inside the table: BadInput or wrong answers, never another exception."""
    src = go_build(NEWEST, "plain")
    with ElfImage(str(src)) as img:
        fr = img.section_file_range(".gopclntab")
        tab = Pclntab(img)
        pcs = sample_pcs(tab, 100)
    assert fr is not None
    rnd = random.Random(seed)
    patch = {rnd.randrange(fr[0], fr[0] + fr[1]): bytes([rnd.randrange(256)]) for _ in range(400)}
    if seed == 0:  # and once right inside the header's offsets
        patch[fr[0] + 8 * 4 + 1] = b"\x7f"
    p = _corrupted_copy(src, tmp_path / f"fuzz{seed}", patch)
    with ElfImage(str(p)) as img:
        try:
            bad = Pclntab(img)
            bad.functions()
            bad.lookup("main.main")
            bad.goroot()
        except BadInput:
            return
        for pc in pcs:
            bad.func_at(pc)
            for fr_ in bad.frames(pc, is_return_address=bool(pc & 1)):
                assert isinstance(fr_.function, str) and isinstance(fr_.line, int)


def test_go118_is_too_old(go_build: GoBuild, tmp_path: Path) -> None:
    """1.18 shares 1.19's pclntab magic, so the build info version must reject it."""
    src = go_build("1.19", "plain")
    data = bytearray(src.read_bytes())
    with ElfImage(str(src)) as img:
        fr = img.section_file_range(".go.buildinfo")
    assert fr is not None
    at = data.find(b"go1.19", fr[0], fr[0] + fr[1])
    assert at > 0
    data[at : at + 6] = b"go1.18"
    p = tmp_path / "go118"
    p.write_bytes(bytes(data))
    with ElfImage(str(p)) as img, pytest.raises(BadInput, match=r"Go 1\.18, which is too old"):
        Pclntab(img)
