"""Everything gotrace needs to know about one Go executable, read once from the file.

This is the ELF-derived "spec" (as in libbpf/cilium): version, symbols, struct offsets, wait
reasons and probe placements. It never touches a live process or the kernel, so it is unit
tested on binaries built by the tests. The derived facts are cached per build ID
(gotrace/binary/cache.py); the symbol table itself is read lazily from the file every time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gotrace.binary import cache, disasm
from gotrace.binary.buildinfo import parse_go_version, read_build_info
from gotrace.binary.elf import ElfImage
from gotrace.binary.offsets import SUPPORTED_MINORS, GOffsets, dwarf_offsets, table_offsets
from gotrace.binary.pclntab import Func, InlineSite, Pclntab
from gotrace.binary.waitreasons import wait_reasons
from gotrace.errors import BadInput

# ELF e_machine -> Go's GOARCH: the architectures whose code gotrace decodes and probes.
ARCHES = {"EM_X86_64": "amd64", "EM_AARCH64": "arm64"}


@dataclass(frozen=True)
class Hook:
    """One uprobe: which runtime event, where, and why there."""

    event: str  # create | exit | park | wake
    bpf_fn: str
    func: str
    addr: int  # link-time virtual address of the probed instruction
    emulated: bool
    why: str
    # On the prologue's stack check: the pass where the check fails reruns the prologue, so the
    # handler skips it (docs/go-runtime.md#entry-probes-fire-twice-on-split-stacks).
    stack_check: bool = False


@dataclass
class GoBinary:
    path: str
    img: ElfImage
    go_version: str
    minor: int
    pcln: Pclntab
    offsets: GOffsets
    wait_reasons: list[str]
    wait_reason_source: str
    hooks: list[Hook] = field(default_factory=list)
    # Hooked functions that the compiler also inlined elsewhere (PGO builds): the events of
    # those copies never reach the probe. None: the inline trees could not be read.
    inlined: dict[str, list[InlineSite]] | None = None
    from_cache: bool = False

    @property
    def arch(self) -> str:
        """"amd64" or "arm64", from the ELF machine (GoBinary.open refuses any other)."""
        return ARCHES[self.img.machine]

    @classmethod
    def open(cls, path: str, *, display_name: str | None = None,
             use_cache: bool = True) -> GoBinary:
        """Read a Go executable; errors name it as the user knows it (display_name)."""
        img = ElfImage(path, display_name)
        try:
            return cls._open(path, img, use_cache)
        except BaseException:
            img.close()  # a long-lived caller must not keep a mapping per rejected file
            raise

    @classmethod
    def _open(cls, path: str, img: ElfImage, use_cache: bool) -> GoBinary:
        if img.machine not in ARCHES:
            raise BadInput(f"{img.name}: {img.machine} binaries are not supported "
                           "(gotrace probes x86-64 and arm64)")
        info = read_build_info(img)
        major, minor, _ = parse_go_version(info.go_version)
        if major != 1 or minor not in SUPPORTED_MINORS:
            raise BadInput(f"{img.name} was built with {info.go_version}; gotrace "
                           "supports Go 1.19 to 1.27")
        pcln = Pclntab(img)
        if use_cache:
            facts = cache.load(img)
            if facts is not None:
                gb = _from_facts(path, img, info.go_version, minor, pcln, facts)
                if gb is not None:
                    return gb
        offsets = dwarf_offsets(img) or table_offsets(minor)
        string_method = pcln.lookup("runtime.waitReason.String")
        reasons, source = wait_reasons(
            img, (string_method.entry, string_method.end) if string_method else None
        )
        gb = cls(path, img, info.go_version, minor, pcln, offsets, reasons, source)
        gb.hooks = choose_hooks(gb)
        gb.inlined = inlined_hooks(gb.pcln, gb.hooks)
        if use_cache:
            cache.save(img, _facts(gb), [h.addr for h in gb.hooks] + [pcln.header_addr])
        return gb

    def func(self, name: str) -> Func:
        f = self.pcln.lookup(name)
        if f is None:
            sites = self.pcln.inline_sites([name]) or []
            why = (f": the compiler inlined it into all {len(sites)} callers (a PGO build?)"
                   if sites else "")
            raise BadInput(f"{self.img.name}: the Go runtime function {name} is missing "
                           f"({self.go_version}){why}; cannot trace this binary")
        return f

    def wait_reason(self, value: int) -> str:
        if 0 <= value < len(self.wait_reasons):
            return self.wait_reasons[value] or "running"
        return f"waitReason({value})"

    @property
    def cgo(self) -> bool:
        """runtime/cgo is linked in: C code and threads, external linking."""
        return self.pcln.lookup("runtime.cgocallbackg") is not None

    def warnings(self) -> list[str]:
        """One line per way this binary can hide events from the probes."""
        if self.inlined is None:
            return ["cannot read the inline trees: inlined copies of the hooked runtime "
                    "functions, if any, are not checked"]
        out = []
        for name, sites in sorted(self.inlined.items()):
            callers = sorted({s.caller.name for s in sites})
            shown = ", ".join(callers[:3]) + (f" and {len(callers) - 3} more"
                                              if len(callers) > 3 else "")
            out.append(f"{name} is also inlined at {len(sites)} call site"
                       f"{'s' if len(sites) != 1 else ''} ({shown}; a PGO build?): events "
                       "there are not seen")
        return out


def choose_hooks(gb: GoBinary) -> list[Hook]:
    """Pick probe sites from what this binary really contains (inlining varies per build)."""
    hooks = []
    morestack = frozenset(f.entry for f in map(gb.pcln.lookup, (
        "runtime.morestack", "runtime.morestack_noctxt")) if f is not None)
    entry_probe = disasm.entry_probe_arm64 if gb.arch == "arm64" else disasm.entry_probe
    for event, bpf_fn, name in (
        ("park", "on_park", "runtime.gopark"),
        ("exit", "on_exit", "runtime.goexit1"),
        ("wake", "on_wake", "runtime.execute"),
    ):
        f = gb.func(name)
        p = entry_probe(gb.img, f.entry, f.end, morestack=morestack)
        hooks.append(Hook(event, bpf_fn, name, p.addr, p.emulated, p.why, p.stack_check))
    hooks.extend(_creation_hooks_arm64(gb) if gb.arch == "arm64" else _creation_hooks(gb))
    return hooks


def _creation_hooks(gb: GoBinary) -> list[Hook]:
    """The new g is complete (goid assigned) only after newproc1 returns.

    Preferred: the `call runqput` in newproc's closure, an emulated instruction with the new g
    in RBX, or the 5-byte nop Go often pads it with, cheaper still
    (docs/go-runtime.md#why-emulated-instructions). Fallback: every RET of newproc1 (g in RAX),
    single-stepped but never a uretprobe.
    """
    closure = gb.pcln.lookup("runtime.newproc.func1")
    runqput = gb.pcln.lookup("runtime.runqput")
    if closure and runqput:
        sites = disasm.call_sites(gb.img, closure.entry, closure.end, runqput.entry)
        if len(sites) == 1:
            nop = disasm.nop5_before(gb.img, closure.entry, closure.end, sites[0])
            if nop is not None:
                return [Hook("create", "on_create_rbx", closure.name, nop, True,
                             "5-byte nop before call runqput: RBX = new g; kernels with "
                             "optimized uprobes need no trap there")]
            return [Hook("create", "on_create_rbx", closure.name, sites[0], True,
                         "call runqput after newproc1 returned: RBX = new g")]
    return _ret_hooks(gb, closure, disasm.ret_sites, False, "RAX")


def _creation_hooks_arm64(gb: GoBinary) -> list[Hook]:
    """_creation_hooks on arm64: the `bl runqput` of newproc's closure, with the new g in R1
    (runqput's 2nd argument); fallback every `ret` of newproc1 (new g in R0). arm64 uprobes
    simulate both `bl` and `ret` (disasm.uprobe_arm64)."""
    closure = gb.pcln.lookup("runtime.newproc.func1")
    runqput = gb.pcln.lookup("runtime.runqput")
    if closure and runqput:
        sites = disasm.call_sites_arm64(gb.img, closure.entry, closure.end, runqput.entry)
        if len(sites) == 1:
            return [Hook("create", "on_create_rbx", closure.name, sites[0], True,
                         "bl runqput after newproc1 returned: R1 = new g")]
    return _ret_hooks(gb, closure, disasm.ret_sites_arm64, True, "R0")


def _ret_hooks(gb: GoBinary, closure: Func | None,
               ret_sites: Callable[[disasm.Code, int, int], list[int]], emulated: bool,
               result: str) -> list[Hook]:
    """The creation fallback: every RET of newproc1, where `result` holds the new g."""
    newproc1 = gb.func("runtime.newproc1")
    rets = ret_sites(gb.img, newproc1.entry, newproc1.end)
    if not rets:
        raise BadInput(f"{gb.img.name}: no RET found in runtime.newproc1; cannot see creations")
    inlined = closure is not None and any(
        s.caller.entry == closure.entry
        for s in gb.pcln.inline_sites(["runtime.runqput"]) or [])
    why = ("runqput inlined into newproc's closure: a PGO build?" if inlined
           else "no single runqput call in newproc's closure")
    return [Hook("create", "on_create_rax", newproc1.name, r, emulated,
                 f"RET of newproc1: {result} = new g ({why})") for r in rets]


def inlined_hooks(pcln: Pclntab, hooks: list[Hook]) -> dict[str, list[InlineSite]] | None:
    """Hooked functions that also have inlined copies: PGO builds give hot call sites an
    inlining budget that gopark, ready and casgstatus fit in
    (docs/go-runtime.md#inlining-and-pgo-builds)."""
    sites = pcln.inline_sites({h.func for h in hooks})
    if sites is None:
        return None
    out: dict[str, list[InlineSite]] = {}
    for s in sites:
        out.setdefault(s.callee, []).append(s)
    return out


# -- the cache ---------------------------------------------------------------------------------


def _facts(gb: GoBinary) -> dict[str, Any]:
    return {
        "go_version": gb.go_version,
        "offsets": asdict(gb.offsets),
        "wait_reasons": gb.wait_reasons,
        "wait_reason_source": gb.wait_reason_source,
        "hooks": [asdict(h) for h in gb.hooks],
        "inlined": None if gb.inlined is None else [
            [s.callee, s.caller.name, s.caller.entry, s.caller.end, s.pc]
            for sites in gb.inlined.values() for s in sites],
    }


def _from_facts(path: str, img: ElfImage, go_version: str, minor: int, pcln: Pclntab,
                facts: dict[str, Any]) -> GoBinary | None:
    """A GoBinary from a cache entry; None when the entry does not fit (then it is re-derived)."""
    try:
        if facts["go_version"] != go_version:
            return None
        inlined: dict[str, list[InlineSite]] | None = None
        if facts["inlined"] is not None:
            inlined = {}
            for callee, caller, entry, end, pc in facts["inlined"]:
                inlined.setdefault(str(callee), []).append(
                    InlineSite(str(callee), Func(str(caller), int(entry), int(end)), int(pc)))
        return GoBinary(
            path, img, go_version, minor, pcln,
            offsets=GOffsets(**facts["offsets"]),
            wait_reasons=[str(s) for s in facts["wait_reasons"]],
            wait_reason_source=str(facts["wait_reason_source"]),
            hooks=[Hook(**h) for h in facts["hooks"]],
            inlined=inlined,
            from_cache=True,
        )
    except (KeyError, TypeError, ValueError):
        return None
