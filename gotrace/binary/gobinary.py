"""Everything gotrace needs to know about one Go executable, read once from the file.

This is the ELF-derived "spec" (as in libbpf/cilium): version, symbols, struct offsets, wait
reasons and probe placements. It never touches a live process or the kernel, so it is unit
tested on binaries built by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gotrace.binary import disasm
from gotrace.binary.buildinfo import parse_go_version, read_build_info
from gotrace.binary.elf import ElfImage
from gotrace.binary.offsets import SUPPORTED_MINORS, GOffsets, dwarf_offsets, table_offsets
from gotrace.binary.pclntab import Func, Pclntab
from gotrace.binary.waitreasons import wait_reasons
from gotrace.errors import BadInput


@dataclass(frozen=True)
class Hook:
    """One uprobe: which runtime event, where, and why there."""

    event: str  # create | exit | park | run
    bpf_fn: str
    func: str
    addr: int  # link-time virtual address of the probed instruction
    emulated: bool
    why: str


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

    @classmethod
    def open(cls, path: str, *, display_name: str | None = None) -> GoBinary:
        """Read a Go executable; errors name it as the user knows it (display_name)."""
        try:
            return cls._open(path, display_name)
        except BadInput as e:
            if display_name and path in e.message:
                raise BadInput(e.message.replace(path, display_name)) from None
            raise

    @classmethod
    def _open(cls, path: str, display_name: str | None) -> GoBinary:
        img = ElfImage(path)
        if img.machine != "EM_X86_64":
            raise BadInput(f"{display_name or path}: {img.machine} binaries are not supported yet "
                           "(gotrace probes x86-64)")
        info = read_build_info(img)
        major, minor, _ = parse_go_version(info.go_version)
        if major != 1 or minor not in SUPPORTED_MINORS:
            raise BadInput(f"{display_name or path} was built with {info.go_version}; gotrace "
                           "supports Go 1.19 to 1.27")
        pcln = Pclntab(img)
        offsets = dwarf_offsets(img) or table_offsets(minor)
        string_method = pcln.lookup("runtime.waitReason.String")
        reasons, source = wait_reasons(
            img, (string_method.entry, string_method.end) if string_method else None
        )
        gb = cls(path, img, info.go_version, minor, pcln, offsets, reasons, source)
        gb.hooks = choose_hooks(gb)
        return gb

    def func(self, name: str) -> Func:
        f = self.pcln.lookup(name)
        if f is None:
            raise BadInput(f"{self.path}: the Go runtime function {name} is missing "
                           f"({self.go_version}); cannot trace this binary")
        return f

    def wait_reason(self, value: int) -> str:
        if 0 <= value < len(self.wait_reasons):
            return self.wait_reasons[value] or "running"
        return f"waitReason({value})"


def choose_hooks(gb: GoBinary) -> list[Hook]:
    """Pick probe sites from what this binary really contains (inlining varies per build)."""
    hooks = []
    for event, bpf_fn, name in (
        ("park", "on_park", "runtime.gopark"),
        ("exit", "on_exit", "runtime.goexit1"),
        ("run", "on_run", "runtime.execute"),
    ):
        f = gb.func(name)
        p = disasm.entry_probe(gb.img, f.entry, f.end)
        hooks.append(Hook(event, bpf_fn, name, p.addr, p.emulated, p.why))
    hooks.extend(_creation_hooks(gb))
    return hooks


def _creation_hooks(gb: GoBinary) -> list[Hook]:
    """The new g is complete (goid assigned) only after newproc1 returns.

    Preferred: the `call runqput` in newproc's closure, an emulated instruction with the new g
    in RBX. Fallback: every RET of newproc1 (g in RAX), single-stepped but never a uretprobe.
    """
    closure = gb.pcln.lookup("runtime.newproc.func1")
    runqput = gb.pcln.lookup("runtime.runqput")
    if closure and runqput:
        sites = disasm.call_sites(gb.img, closure.entry, closure.end, runqput.entry)
        if len(sites) == 1:
            return [Hook("create", "on_create_rbx", closure.name, sites[0], True,
                         "call runqput after newproc1 returned: RBX = new g")]
    newproc1 = gb.func("runtime.newproc1")
    rets = disasm.ret_sites(gb.img, newproc1.entry, newproc1.end)
    if not rets:
        raise BadInput(f"{gb.path}: no RET found in runtime.newproc1; cannot see creations")
    return [Hook("create", "on_create_rax", newproc1.name, r, False,
                 "RET of newproc1: RAX = new g (runqput call not found)") for r in rets]
