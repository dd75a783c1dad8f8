"""Inlined copies of runtime functions, found in pclntab's inline trees, for every Go release.

The probes sit on out-of-line functions; a copy the compiler inlined elsewhere (profile-guided
builds inline even gopark at hot call sites) never reaches them. DWARF's
DW_TAG_inlined_subroutine entries are an independent record of the same inlining decisions.
"""

from __future__ import annotations

from collections import Counter

import pytest

from gotrace.binary.elf import ElfImage
from gotrace.binary.gobinary import GoBinary
from gotrace.binary.pclntab import Pclntab
from gotrace.errors import BadInput
from tests.gobuild import GO_VERSIONS, PGO_RUNQPUT_VARIANT, PGO_VARIANT, GoBuild, version_key

# Always inlined somewhere in the runtime (docs/go-runtime.md#inlining-and-pgo-builds);
# goready from Go 1.21.
NAMES = {"runtime.goparkunlock", "runtime.acquirem", "runtime.goready"}
NEWEST = max(GO_VERSIONS, key=version_key)


def dwarf_inlined(img: ElfImage, names: set[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    dwarf = img.elf.get_dwarf_info(relocate_dwarf_sections=False)
    for cu in dwarf.iter_CUs():
        for die in cu.iter_DIEs():
            if die.tag != "DW_TAG_inlined_subroutine":
                continue
            origin = die.get_DIE_from_attribute("DW_AT_abstract_origin")
            name = origin.attributes["DW_AT_name"].value.decode()
            if name in names:
                counts[name] += 1
    return counts


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_inline_sites_equal_dwarf(go_build: GoBuild, version: str) -> None:
    with ElfImage(str(go_build(version, "plain"))) as img:
        sites = Pclntab(img).inline_sites(NAMES)
        want = dwarf_inlined(img, NAMES)
    assert sites is not None
    assert Counter(s.callee for s in sites) == want
    assert want["runtime.goparkunlock"] > 0 and want["runtime.acquirem"] > 0
    for s in sites:
        assert s.caller.entry <= s.pc < s.caller.end


@pytest.mark.parametrize("version", GO_VERSIONS)
@pytest.mark.parametrize("variant", ["plain", "stripped"])
def test_standard_builds_have_no_inlined_hook(go_build: GoBuild, version: str,
                                              variant: str) -> None:
    gb = GoBinary.open(str(go_build(version, variant)), use_cache=False)
    assert gb.inlined == {}
    assert gb.warnings() == []


def test_pgo_inlined_gopark_is_found(go_build: GoBuild) -> None:
    """A profile that makes the channel code's gopark calls hot gets gopark inlined there."""
    gb = GoBinary.open(str(go_build(NEWEST, PGO_VARIANT)), use_cache=False)
    assert gb.inlined is not None
    assert {s.caller.name for s in gb.inlined["runtime.gopark"]} == {
        "runtime.chanrecv", "runtime.chansend"}
    assert set(gb.inlined) == {"runtime.gopark"}
    # The out-of-line gopark is still there (other callers) and still hooked ...
    assert [h.func for h in gb.hooks if h.event == "park"] == ["runtime.gopark"]
    # ... and the user is told which parks it cannot see.
    (warning,) = gb.warnings()
    assert warning.startswith("runtime.gopark is also inlined at 2 call sites "
                              "(runtime.chanrecv, runtime.chansend; a PGO build?)")
    # Each site is a real call site inside the caller: its frames end in the caller at the
    # line of the gopark call.
    for s in gb.inlined["runtime.gopark"]:
        frames = gb.pcln.frames(s.pc, is_return_address=False)
        assert frames[-1].function == s.caller.name
        assert frames[-1].file.endswith("runtime/chan.go")


def test_missing_hook_function_fails_clearly(go_build: GoBuild,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    gb = GoBinary.open(str(go_build(NEWEST, PGO_VARIANT)), use_cache=False)
    real = gb.pcln.lookup
    monkeypatch.setattr(gb.pcln, "lookup",
                        lambda name: None if name == "runtime.gopark" else real(name))
    with pytest.raises(BadInput, match=r"runtime\.gopark is missing \(go1\.\d+\.\d+\): the "
                       r"compiler inlined it into all 2 callers \(a PGO build\?\)"):
        gb.func("runtime.gopark")


def test_inlined_runqput_moves_the_creation_probe(go_build: GoBuild) -> None:
    """With runqput inlined into newproc's closure there is no `call runqput` to probe: the
    creation probes go on every RET of newproc1 instead (never a uretprobe)."""
    gb = GoBinary.open(str(go_build(NEWEST, PGO_RUNQPUT_VARIANT)), use_cache=False)
    create = [h for h in gb.hooks if h.event == "create"]
    newproc1 = gb.pcln.lookup("runtime.newproc1")
    assert newproc1 is not None and create
    assert all(h.func == "runtime.newproc1" and h.bpf_fn == "on_create_rax" for h in create)
    assert all(newproc1.entry < h.addr < newproc1.end for h in create)
    assert {gb.img.read(h.addr, 1) for h in create} == {b"\xc3"}  # RET
    assert create[0].why == ("RET of newproc1: RAX = new g (runqput inlined into newproc's "
                             "closure: a PGO build?)")
    assert gb.warnings() == []  # runqput is not probed: its inlined copy hides nothing
