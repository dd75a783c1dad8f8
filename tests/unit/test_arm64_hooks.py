"""Probe placement on linux/arm64 Go binaries of every release, plain, stripped and PIE, checked
against the Go toolchain's own `go tool objdump`.

Every hook address must be an instruction that objdump lists in the named function, and the one
gotrace means: the `BLS` of the stack check for park, exit and wake, and the `bl runqput` of
newproc's closure for create (Go's assembler syntax prints `bl` as `CALL`). objdump refuses a
stripped binary ("no symbol section"), so the stripped build is checked against the listing of
the plain build of the same toolchain, word for word.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from gotrace.binary import disasm
from gotrace.binary.gobinary import GoBinary, choose_hooks
from gotrace.errors import BadInput
from gotrace.live.launcher import exit_probe
from tests.gobuild import ARM64_VARIANTS, GO_VERSIONS, GoBuild, go_command, go_env, version_key

NEWEST = max(GO_VERSIONS, key=version_key)
HOOKED = ("runtime.gopark", "runtime.goexit1", "runtime.execute", "runtime.newproc.func1",
          "runtime.newproc1")
# "  proc.go:457\t\t0x88878\t\t\t54000689\t\tBLS 52(PC)\t\t\t" (1.19 PIE: ":0" for file:line)
LINE = re.compile(r"\s0x([0-9a-f]+)\s+([0-9a-f]{8})\s+(\S.*?)\s*$")
MORESTACK_CALL = re.compile(r"CALL runtime\.morestack(_noctxt)?(\.abi0)?\(SB\)")


@pytest.fixture(params=GO_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=tuple(ARM64_VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@cache
def objdump(version: str, binary: str) -> dict[str, dict[int, tuple[str, str]]]:
    """function -> {address: (instruction word in hex, Go assembler text)} of the hooked
    functions, as that toolchain's `go tool objdump` lists them."""
    pattern = "^(" + "|".join(re.escape(f) for f in HOOKED) + ")$"
    out = subprocess.run([str(go_command(version)), "tool", "objdump", "-s", pattern, binary],
                         env=go_env(version), capture_output=True, text=True, check=True).stdout
    funcs: dict[str, dict[int, tuple[str, str]]] = {}
    listing: dict[int, tuple[str, str]] | None = None
    for line in out.splitlines():
        if line.startswith("TEXT "):
            listing = funcs.setdefault(line.split()[1].removesuffix("(SB)"), {})
        elif listing is not None and (m := LINE.search(line)):
            listing[int(m[1], 16)] = (m[2], m[3])
    assert set(funcs) == set(HOOKED), out[:2000]
    return funcs


def listed(go_build: GoBuild, version: str, variant: str) -> dict[str, dict[int, tuple[str, str]]]:
    plain = variant.replace("stripped", "plain")  # same text, and symbols for objdump
    return objdump(version, str(go_build(version, plain)))


def word(gb: GoBinary, addr: int) -> str:
    """The instruction word at addr as objdump prints it."""
    return gb.img.read(addr, 4)[::-1].hex()


def test_hooks_are_the_instructions_objdump_shows(go_build: GoBuild, version: str,
                                                  variant: str) -> None:
    gb = GoBinary.open(str(go_build(version, variant)), use_cache=False)
    try:
        assert gb.arch == "arm64"
        funcs = listed(go_build, version, variant)
        got = {}
        for h in gb.hooks:
            code, asm = funcs[h.func][h.addr]
            assert word(gb, h.addr) == code
            index = sorted(funcs[h.func]).index(h.addr)
            got[h.event] = (h.func, h.bpf_fn, asm if h.event == "create" else asm.split()[0],
                            index if h.event != "create" else None, h.emulated, h.stack_check)
    finally:
        gb.img.close()
    assert len(gb.hooks) == 4
    assert got == {
        "park": ("runtime.gopark", "on_park", "BLS", 2, True, True),
        "exit": ("runtime.goexit1", "on_exit", "BLS", 2, True, True),
        "wake": ("runtime.execute", "on_wake", "BLS", 2, True, True),
        "create": ("runtime.newproc.func1", "on_create_rbx", "CALL runtime.runqput(SB)", None,
                   True, False),
    }
    (create,) = [h for h in gb.hooks if h.event == "create"]
    assert create.why == "bl runqput after newproc1 returned: R1 = new g"


def test_stack_check_target_calls_morestack(go_build: GoBuild, version: str,
                                            variant: str) -> None:
    """The BLS of each entry probe goes to the block that calls runtime.morestack_noctxt."""
    gb = GoBinary.open(str(go_build(version, variant)), use_cache=False)
    try:
        funcs = listed(go_build, version, variant)
        for h in gb.hooks:
            if h.event == "create":
                continue
            listing = funcs[h.func]
            target = h.addr + 4 * int(funcs[h.func][h.addr][1].split()[1].removesuffix("(PC)"))
            block = [listing[a][1] for a in sorted(listing) if a >= target][:40]
            call = next(i for i, asm in enumerate(block) if asm.startswith("CALL"))
            assert MORESTACK_CALL.fullmatch(block[call]), (h.event, block[: call + 1])
            assert not [asm for asm in block[:call] if asm.startswith(("JMP", "RET"))]
    finally:
        gb.img.close()


def test_creation_fallback_is_every_ret_of_newproc1(go_build: GoBuild, version: str, variant: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a single `bl runqput` (runqput inlined: a PGO build) the create probes go on the
    RETs of newproc1, simulated on arm64 like every branch, with the new g in R0."""
    gb = GoBinary.open(str(go_build(version, variant)), use_cache=False)
    try:
        funcs = listed(go_build, version, variant)
        closure = gb.func("runtime.newproc.func1")
        runqput = gb.func("runtime.runqput").entry
        calls = [a for a, (_, asm) in funcs[closure.name].items()
                 if asm == "CALL runtime.runqput(SB)"]
        assert disasm.call_sites_arm64(gb.img, closure.entry, closure.end, runqput) == calls
        monkeypatch.setattr(disasm, "call_sites_arm64", lambda *_: [])
        creates = [h for h in choose_hooks(gb) if h.event == "create"]
    finally:
        gb.img.close()
    rets = sorted(a for a, (_, asm) in funcs["runtime.newproc1"].items() if asm == "RET")
    assert rets and [h.addr for h in creates] == rets
    assert {(h.func, h.bpf_fn, h.emulated) for h in creates} == {
        ("runtime.newproc1", "on_create_rax", True)}
    assert creates[0].why == ("RET of newproc1: R0 = new g "
                              "(no single runqput call in newproc's closure)")


def test_amd64_binaries_keep_their_arch_and_hooks(go_build: GoBuild, version: str) -> None:
    gb = GoBinary.open(str(go_build(version, "amd64-plain")), use_cache=False)
    try:
        assert gb.arch == "amd64"
        entries = {h.event: (h.addr - gb.func(h.func).entry, h.emulated, h.stack_check, h.why)
                   for h in gb.hooks if h.event != "create"}
        (create,) = [h for h in gb.hooks if h.event == "create"]
    finally:
        gb.img.close()
    assert entries == dict.fromkeys(("park", "exit", "wake"),
                                    (4, True, True, "stack-check branch at +4"))
    assert (create.func, create.bpf_fn, create.emulated) == (
        "runtime.newproc.func1", "on_create_rbx", True)
    assert "RBX = new g" in create.why


def test_other_machines_are_refused_in_one_line(go_build: GoBuild, tmp_path: Path) -> None:
    riscv = tmp_path / "prog"
    shutil.copy(go_build(NEWEST, "arm64-plain"), riscv)
    data = bytearray(riscv.read_bytes())
    data[18:20] = (243).to_bytes(2, "little")  # e_machine = EM_RISCV
    riscv.write_bytes(bytes(data))
    with pytest.raises(BadInput) as e:
        GoBinary.open(str(riscv), display_name="prog")
    assert str(e.value) == ("prog: EM_RISCV binaries are not supported "
                            "(gotrace probes x86-64 and arm64)")


@pytest.mark.parametrize("build", ["arm64-plain", "arm64-stripped"])
def test_cached_arm64_facts_equal_fresh_ones(go_build: GoBuild, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, build: str) -> None:
    monkeypatch.setenv("GOTRACE_BINARY_CACHE", str(tmp_path))
    path = str(go_build(NEWEST, build))
    opened = [GoBinary.open(path, use_cache=False), GoBinary.open(path), GoBinary.open(path)]
    for gb in opened:
        gb.img.close()
    fresh, first, second = opened
    assert [gb.from_cache for gb in opened] == [False, False, True]
    assert {gb.arch for gb in opened} == {"arm64"}
    assert second.hooks == first.hooks == fresh.hooks
    assert second.wait_reasons == fresh.wait_reasons and second.offsets == fresh.offsets
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_probes_refuse_programs_of_another_architecture(go_build: GoBuild) -> None:
    """The BPF handlers read the machine's own registers: an arm64 program on this x86-64
    machine (emulated, say) gets gotrace's one line, never a probe reading the wrong ones."""
    from gotrace.errors import CannotTrace
    from gotrace.live.tracer import HOST_ARCH, LeakTracer

    variant = "amd64-plain" if HOST_ARCH == "arm64" else "arm64-plain"
    gb = GoBinary.open(str(go_build(max(GO_VERSIONS, key=version_key), variant)),
                       use_cache=False)
    with pytest.raises(CannotTrace, match=rf"is a linux/{gb.arch} program on a "
                                          rf"linux/{HOST_ARCH} machine"):
        LeakTracer(gb, None)  # type: ignore[arg-type]


def test_exit_probe_is_before_the_exit_syscall(go_build: GoBuild, version: str,
                                               variant: str) -> None:
    """gotrace run holds a program at runtime.exit's first instruction, `MOVW code+0(FP), R0`
    (the code at SP+8, where on_run_exit reads it, as on amd64), before its SVC."""
    gb = GoBinary.open(str(go_build(version, variant)))
    p = exit_probe(gb)
    f = gb.func("runtime.exit")
    assert (p.addr, p.emulated) == (f.entry, False)
    assert gb.img.read(p.addr, 4) == (0xB9800BE0).to_bytes(4, "little")  # ldrsw x0, [sp, #8]
    word = int.from_bytes(gb.img.read(p.addr, 4), "little")
    assert disasm.uprobe_arm64(word) == disasm.STEPPED
