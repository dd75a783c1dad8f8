"""The live, kernel-dependent half: builds of the one BPF program (bpf/gotrace.bpf.c), its
uprobes on the target, and its maps.

One base class compiles, attaches, counts and detaches; each command's build adds its -D
flags and what it reads: `LeakTracer` (attach: the goroutine table), `EventTracer` (tail: the
event stream) and `HistTracer` (hist: log2 histograms in the kernel).

Uprobes are created through perf_event_open, so they vanish with our file descriptors even
if gotrace is killed; `close()` detaches them explicitly on every normal path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import mmap
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from gotrace.binary import codemap
from gotrace.binary.gobinary import GoBinary, Hook
from gotrace.binary.offsets import M_CURG
from gotrace.errors import CannotTrace
from gotrace.live import uprobe_multi
from gotrace.live.bpfdefs import DEFAULT_MAX_GOROUTINES, bpf_dir, const
from gotrace.live.process import Target
from gotrace.live.ringbuf import RingReader
from gotrace.model import Counters, GoroutineRecord, Kind, Lost

BPF_NOEXIST = 1  # bpf_map_update_elem flag: create only
BPF_PROG_TYPE_KPROBE = 2  # uprobes too
STACK_ENTRIES = 16384
DEFAULT_HIST_ENTRIES = 16384
# How often attach looks for go statements whose probe can come off: at most this long of
# probe hits on a hot go statement, then none.
DISARM_POLL_S = 0.02


# This machine's architecture, in Go's words (GoBinary.arch names the program's): the BPF
# handlers read its registers (bpf/gotrace.bpf.c, -DARCH_ARM64 on arm64).
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())

@contextlib.contextmanager
def capture_stderr(into: io.StringIO) -> Iterator[None]:
    """Catch what libbcc and clang write to file descriptor 2, which Python's own
    redirect_stderr cannot see, so the user gets gotrace's one line instead of BCC's."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with contextlib.redirect_stderr(into):
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            into.write(tmp.read().decode(errors="replace"))


def load_bpf(cflags: list[str]) -> Any:
    """Compile and load one build of bpf/gotrace.bpf.c; what BCC or clang said becomes
    gotrace's one line (exit 3)."""
    try:
        from bcc import BPF
    except ImportError:
        raise CannotTrace("BCC is not importable: run sudo scripts/setup") from None
    src = str(bpf_dir() / "gotrace.bpf.c")
    err = io.StringIO()
    try:
        with capture_stderr(err):
            return BPF(src_file=src.encode(), cflags=cflags)
    except Exception as e:
        detail = (err.getvalue().strip().splitlines() or [str(e)])[-1]
        raise CannotTrace(f"the BPF program did not load: {detail} (see gotrace doctor)") \
            from None


def _items(table: Any) -> list[tuple[Any, Any]]:
    """Every entry of a BPF hash map, in one syscall where the kernel has batch operations."""
    try:
        return list(table.items_lookup_batch())
    except Exception:  # kernels without batch ops: one syscall per key
        return list(table.items())


class Tracer:
    """Compile one build of the BPF program, attach its hooks, read its counters, detach."""

    events: frozenset[str] = frozenset({"create", "exit", "park", "wake"})

    def __init__(self, gb: GoBinary, target: Target, *,
                 max_goroutines: int = DEFAULT_MAX_GOROUTINES) -> None:
        if gb.arch != HOST_ARCH:  # an emulated program (qemu-user): not the kernel's registers
            raise CannotTrace(f"{gb.img.name} is a linux/{gb.arch} program on a linux/"
                              f"{HOST_ARCH} machine: gotrace probes programs of the machine's "
                              "own architecture")
        self.gb = gb
        self.target = target
        self.max_goroutines = max_goroutines
        self.bpf: Any = None
        self.attached: list[Hook] = []

    def cflags(self) -> list[str]:
        flags = [
            f"-I{bpf_dir()}",
            *self.gb.offsets.as_cflags(),
            f"-DMAX_GOROUTINES={self.max_goroutines}",
            *(f"-D{h.event.upper()}_AT_STACK_CHECK=1" for h in self.gb.hooks if h.stack_check),
            f"-DARCH_ARM64={int(self.gb.arch == 'arm64')}",
        ]
        if self.gb.offsets.parent_goid is None:
            # Before Go 1.21 the creator's goid comes from g0.m.curg at the create hook.
            flags += [f"-DG_M_OFF={self.gb.offsets.m}", f"-DM_CURG_OFF={M_CURG}"]
        return flags

    def configure(self) -> None:
        """Fill configuration maps once loaded, before any probe fires (subclasses)."""

    def attach(self) -> None:
        self.bpf = load_bpf(self.cflags())
        self.configure()
        for hook in (h for h in self.gb.hooks if h.event in self.events):
            err = io.StringIO()
            try:
                with capture_stderr(err):
                    self.bpf.attach_uprobe(name=self.target.exe.encode(), addr=hook.addr,
                                           fn_name=hook.bpf_fn.encode(), pid=self.target.pid)
            except Exception as e:
                self.close()
                said = err.getvalue().strip().splitlines()
                raise CannotTrace(f"cannot attach a uprobe to {hook.func} ({hook.addr:#x}): "
                                  f"{said[-1] if said else e}") from None
            self.attached.append(hook)

    def counter(self, name: str) -> int:
        """One kernel counter (CTR_* in bpf/gotrace.h), summed over CPUs."""
        return int(self.bpf["counters"].sum(ctypes.c_int(const(name))).value)

    def counters(self) -> Counters:
        c = self.counter
        return Counters(
            created=c("CTR_CREATED"),
            exited=c("CTR_EXITED"),
            parks=c("CTR_PARKS") if "park" in self.events else None,
            wakes=c("CTR_WAKES") if "wake" in self.events else None,
            lost=Lost(
                table_full=c("CTR_LOST_TABLE_FULL"),
                stacks=c("CTR_LOST_STACK"),
                memory_reads=c("CTR_LOST_READ"),
                ring_buffer=c("CTR_LOST_RINGBUF"),
                hist_full=c("CTR_LOST_HIST"),
            ),
        )

    def close(self) -> None:
        if self.bpf is None:
            return
        bpf, self.bpf = self.bpf, None
        # BCC prints to stderr when the target is already gone; that is not the user's problem.
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), \
                contextlib.suppress(Exception):
            bpf.cleanup()


# -- attach ------------------------------------------------------------------------------------


@dataclass
class SeedResult:
    inserted: int = 0
    already_known: int = 0  # a probe saw it first (created, parked or exited since attach)
    table_full: int = 0


class LeakTracer(Tracer):
    """attach's build: creation stacks, and with park_probe the goroutine table.

    By default (create_stack_every=None) each `go` statement of the program gets its own probe,
    on its call to runtime.newproc, which copies that statement's creation stack (go_stacks)
    and is removed once the stack is in: the target pays a probe hit or two per go statement,
    then nothing. With create_stack_every=N one probe on every creation (in newproc's closure)
    counts them and walks one stack in N per go statement. Park state comes from the target's
    memory (analysis/parks.py). With park_probe (--park-times exact) creation, park and exit
    are probed too, into a table keyed by goid (the creation probe walks no stack unless
    create_stack_every says so); wake-ups are never probed (memory tells a parked goroutine
    from a woken one at report time).
    """

    def __init__(self, gb: GoBinary, target: Target, *,
                 max_goroutines: int = DEFAULT_MAX_GOROUTINES, park_probe: bool = False,
                 park_stacks: bool = False, create_stack_every: int | None = None) -> None:
        """park_probe: probe creation, gopark and goexit1 for exact park times.

        park_stacks: capture each park's stack in BPF (costly) instead of from memory.

        create_stack_every: None, a probe on each go statement until its first stack; or walk
        the creation stack of one goroutine in N per go statement (a power of two) from a
        probe on every creation, the others reusing that go statement's last walked stack.
        """
        if create_stack_every is not None and (
                create_stack_every < 1 or create_stack_every & (create_stack_every - 1)):
            raise ValueError("create_stack_every must be a power of two")
        super().__init__(gb, target, max_goroutines=max_goroutines)
        self.park_probe = park_probe
        self.per_go_statement = create_stack_every is None  # creation stacks from go statements
        self.events = frozenset({"create", "exit", "park"} if park_probe
                                else set() if self.per_go_statement else {"create"})
        self.park_stacks = park_stacks and park_probe
        self.create_stack_every = create_stack_every or 1
        self._stack_cache: dict[int, list[int]] = {}
        self.seed_table_full = 0  # goroutines found at attach that did not fit in the table
        # go statement (runtime gopc) -> the link-time address of its probed call, while armed
        self.armed: dict[int, int] = {}
        self.go_statements = 0  # go statements found in the binary
        self._disarming = threading.Lock()
        self._stop = threading.Event()
        self._disarmer: threading.Thread | None = None
        self._link: int | None = None  # the uprobe_multi link holding the armed probes

    def cflags(self) -> list[str]:
        return [
            *super().cflags(),
            f"-DSTACK_ENTRIES={STACK_ENTRIES}",
            f"-DPARK_STACKS={int(self.park_stacks)}",
            f"-DCREATE_STACK_EVERY={self.create_stack_every}",
            f"-DCREATIONS_ONLY={int(not self.park_probe)}",
            f"-DGO_STATEMENTS={int(self.per_go_statement)}",
            *(["-DCREATE_STACKS=0"] if self.per_go_statement else []),
        ]

    def attach(self) -> None:
        super().attach()
        if self.per_go_statement:
            self._arm_go_statements()
            self._disarmer = threading.Thread(target=self._disarm_loop, daemon=True,
                                              name="gotrace-disarm")
            self._disarmer.start()

    def _disarm_loop(self) -> None:
        """A hot go statement costs a trap per goroutine until its probe is off: check every
        DISARM_POLL_S (one counter read) and take off the probes whose stack is in."""
        seen = 0
        while not self._stop.wait(DISARM_POLL_S):
            hits = self.counter("CTR_GO_STATEMENT")
            if hits != seen:
                seen = hits
                if not self.disarm():
                    return  # every probe is off

    def _arm_go_statements(self) -> None:
        """One probe on each go statement's call, all in one uprobe_multi link where the
        kernel has them (live/uprobe_multi.py), else one perf-event uprobe each
        (docs/go-runtime.md#creation-stacks-at-the-go-statement)."""
        gopcs = codemap.go_statements(self.gb.pcln, self.gb.img, self.gb.arch)
        self.go_statements = len(gopcs)
        bias = self.target.load_bias(self.gb.img)
        size = codemap.CALL_SIZE[self.gb.arch]
        self.armed = {gopc + bias: gopc - size for gopc in gopcs}
        if not self.armed:
            return
        said = io.StringIO()  # what BCC prints: a line per failure (the target may be exiting)
        with contextlib.suppress(Exception), capture_stderr(said):  # BCC raises Exception
            self.bpf.load_func(b"on_go", BPF_PROG_TYPE_KPROBE,
                               attach_type=uprobe_multi.BPF_TRACE_UPROBE_MULTI)
            self._link = self._new_link(self.armed.values())
            return
        exe = self.target.exe.encode()
        with capture_stderr(said):
            for gopc, addr in list(self.armed.items()):  # no uprobe_multi: one by one
                try:
                    self.bpf.attach_uprobe(name=exe, addr=addr, fn_name=b"on_go_perf",
                                           pid=self.target.pid)
                except Exception:
                    del self.armed[gopc]  # its goroutines show their go statement alone
        if not self.armed:
            self.close()
            last = said.getvalue().strip().splitlines()[-1:]
            raise CannotTrace(f"cannot attach a uprobe to any of the {len(gopcs)} go "
                              f"statements of {self.gb.img.name}"
                              + (f": {last[0]}" if last else ""))

    def _new_link(self, addrs: Iterable[int]) -> int:
        """A uprobe_multi link running on_go (loaded for it) at these link-time addresses."""
        offsets = []
        for a in addrs:
            off = self.gb.img.vaddr_to_offset(a)
            if off is None:
                raise CannotTrace(f"{a:#x} is in no segment of {self.gb.img.name}")
            offsets.append(off)
        return uprobe_multi.attach(self.bpf.funcs[b"on_go"].fd, self.target.exe, offsets,
                                   self.target.pid)

    def disarm(self) -> int:
        """Take off the probes of the go statements whose creation stack is in; returns how
        many remain. With a uprobe_multi link the rest move to a new link first (a go
        statement may fire in both meanwhile: harmless), then the old one closes; if no new
        link can be made (the target is gone), the old one stays."""
        with self._disarming:
            if not self.armed or self.bpf is None:
                return len(self.armed)
            done = {k for k in (int(getattr(k, "value", k)) for k in self.bpf["go_stacks"])
                    if k in self.armed}
            if not done:
                return len(self.armed)
            rest = {k: v for k, v in self.armed.items() if k not in done}
            if self._link is not None:
                new = None
                if rest:
                    try:
                        new = self._new_link(rest.values())
                    except (OSError, CannotTrace):
                        return len(self.armed)
                os.close(self._link)
                self._link = new
            else:
                for gopc in done:  # no redirect of stderr: other threads print there
                    with contextlib.suppress(Exception):
                        self.bpf.detach_uprobe(name=self.target.exe.encode(),
                                               addr=self.armed[gopc], pid=self.target.pid)
            self.armed = rest
            return len(rest)

    @property
    def probes_off_one_by_one(self) -> int:
        """go statement probes that close() takes off one at a time: perf-event uprobes, on
        kernels without uprobe_multi links, each costs Linux an RCU grace period (~0.1 s)."""
        return len(self.armed) if self._link is None else 0

    def counters(self) -> Counters:
        out = super().counters()
        out.lost.table_full += self.seed_table_full
        if self.per_go_statement:
            out.go_statement_hits = self.counter("CTR_GO_STATEMENT")
        return out

    def close(self) -> None:
        self._stop.set()
        if self._disarmer is not None and self._disarmer is not threading.current_thread():
            self._disarmer.join()
        with self._disarming:
            if self._link is not None:
                os.close(self._link)
                self._link = None
            super().close()

    def _stack(self, stack_id: int) -> list[int]:
        if stack_id < 0:
            return []
        pcs = self._stack_cache.get(stack_id)
        if pcs is None:
            try:
                pcs = [int(a) for a in self.bpf["stacks"].walk(stack_id)]
            except KeyError:
                pcs = []
            self._stack_cache[stack_id] = pcs
        return pcs

    def site_stacks(self) -> dict[int, list[int]]:
        """go statement (runtime gopc) -> the creation stack last walked there (its PCs).

        A go statement's own probe walked from its call instruction: that leaf becomes the
        return address gopc, as a walk from inside newproc finds it."""
        if not self.per_go_statement:
            return {int(getattr(k, "value", k)): self._stack(v.stack_id)
                    for k, v in _items(self.bpf["site_stacks"])}
        return {int(getattr(k, "value", k)): [int(getattr(k, "value", k)), *v.ips[1:v.n]]
                for k, v in _items(self.bpf["go_stacks"])}

    def records(self) -> list[GoroutineRecord]:
        """The live goroutines in the table (park_probe builds). Without a stack walk on every
        creation, one created since the attach has its go statement's creation stack, one from
        before (created_ns 0: seeded) none, as in the memory modes."""
        sites = self.site_stacks() if self.per_go_statement else {}
        none: list[int] = []

        def creation(v: Any) -> list[int]:
            if not self.per_go_statement:
                return self._stack(v.create_stack)
            return sites.get(v.gopc, none) if v.created_ns else none

        return [GoroutineRecord(
            goid=v.goid, gaddr=v.gaddr, created_ns=v.created_ns,
            parked_ns=v.parked_ns, gopc=v.gopc, startpc=v.startpc, parent_goid=v.parent_goid,
            wait_reason=v.wait_reason, flags=v.flags, park_caller=v.park_caller,
            create_stack=creation(v), park_stack=self._stack(v.park_stack),
        ) for k, v in _items(self.bpf["goroutines"])]

    def seed(self, records: Iterable[GoroutineRecord]) -> SeedResult:
        """Insert goroutines read from memory after the probes went live, unless a probe
        already inserted them: BPF_NOEXIST, so an event seen after attach always wins over
        the older memory read (docs/go-runtime.md#goroutines-that-existed-before)."""
        from bcc.libbcc import lib

        table = self.bpf["goroutines"]
        out = SeedResult()
        key, leaf = table.Key(), table.Leaf()  # reused: the kernel copies them
        leaf.create_stack = leaf.park_stack = const("NO_STACK")
        fd, key_p, leaf_p, update = table.map_fd, ctypes.byref(key), ctypes.byref(leaf), \
            lib.bpf_update_elem
        for rec in records:
            key.value = rec.goid
            leaf.goid = rec.goid
            leaf.gaddr = rec.gaddr
            leaf.created_ns = rec.created_ns
            leaf.parked_ns = rec.parked_ns
            leaf.gopc = rec.gopc
            leaf.startpc = rec.startpc
            leaf.parent_goid = rec.parent_goid
            leaf.park_caller = rec.park_caller
            leaf.wait_reason = rec.wait_reason
            leaf.flags = rec.flags
            if update(fd, key_p, leaf_p, BPF_NOEXIST) == 0:
                out.inserted += 1
            elif ctypes.get_errno() == errno.EEXIST:
                out.already_known += 1
            else:
                out.table_full += 1
        self.seed_table_full += out.table_full
        return out

    def forget(self, goids: Iterable[int]) -> int:
        """Remove goroutines known to have exited; returns how many were in the table."""
        table = self.bpf["goroutines"]
        gone = 0
        for goid in goids:
            with contextlib.suppress(KeyError):
                del table[table.Key(goid)]
                gone += 1
        return gone


# -- tail --------------------------------------------------------------------------------------


class EventTracer(Tracer):
    """tail's build (-DEMIT_EVENTS=1): the goroutine table plus a stream of events.

    No stacks are captured in BPF; parks carry only their parked-at frame (a walk of at most
    PARK_WALK frame pointers over runtime and standard-library code).
    """

    def __init__(self, gb: GoBinary, target: Target, *, bias: int, kinds: Iterable[Kind],
                 selection: codemap.Selection | None = None, ring_pages: int = 4096,
                 max_goroutines: int = DEFAULT_MAX_GOROUTINES, park_walk: int = 12) -> None:
        super().__init__(gb, target, max_goroutines=max_goroutines)
        self.bias = bias
        self.kinds = frozenset(kinds)
        self.selection = selection
        self.ring_pages = ring_pages
        self.park_walk = park_walk
        self.ranges = codemap.code_ranges(gb.pcln)
        self.reader: RingReader | None = None
        self.ready_ns = 0

    def cflags(self) -> list[str]:
        lo, hi = codemap.text_range(self.gb.pcln)
        mask = sum(1 << k for k in self.kinds)
        sel = self.selection
        entries = max(len(sel.gopcs), len(sel.starts), 1) if sel is not None else 1
        return [
            *super().cflags(),
            "-DCREATE_STACKS=0",
            "-DPARK_STACKS=0",
            "-DEMIT_EVENTS=1",
            f"-DRINGBUF_PAGES={self.ring_pages}",
            f"-DEVENT_MASK={mask}",
            f"-DMATCH={int(sel is not None)}",
            f"-DMATCH_ENTRIES={entries}",
            f"-DNR_STD_RANGES={len(self.ranges)}",
            f"-DTEXT_LO={lo + self.bias:#x}ULL",
            f"-DTEXT_HI={hi + self.bias:#x}ULL",
            f"-DPARK_WALK={self.park_walk}",
        ]

    def configure(self) -> None:
        self.ready_ns = time.monotonic_ns()  # "attach" time: loaded, probes about to fire
        bpf = self.bpf
        if self.ranges:
            table = bpf["std_ranges"]
            for i, r in enumerate(self.ranges):
                table[ctypes.c_uint32(i)] = table.Leaf(r.lo + self.bias, r.hi + self.bias, r.kind)
        if self.selection is not None:
            for name, pcs in (("match_gopc", self.selection.gopcs),
                              ("match_start", self.selection.starts)):
                table = bpf[name]
                for pc in pcs:
                    table[table.Key(pc + self.bias)] = table.Leaf(1)
        self.reader = RingReader(bpf["events"].map_fd, self.ring_pages * mmap.PAGESIZE)

    def counters(self) -> Counters:
        out = super().counters()
        if self.reader is not None:
            out.lost.unreadable_records = self.reader.malformed
        return out

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        super().close()


# -- hist --------------------------------------------------------------------------------------


class HistSample(NamedTuple):
    """One entry of the BPF map "hist" (struct hist_key -> count)."""

    kind: int  # HK_LIFETIME or HK_PARK
    site: int  # gopc (runtime address) with --by site, else 0
    reason: int  # waitReason value for HK_PARK
    slot: int
    n: int  # samples
    sum_ns: int


class HistTracer(Tracer):
    """hist's build (-DHIST=1): the goroutine table, no stacks, histograms in a map."""

    def __init__(self, gb: GoBinary, target: Target, *, by_site: bool,
                 max_goroutines: int = DEFAULT_MAX_GOROUTINES,
                 entries: int = DEFAULT_HIST_ENTRIES) -> None:
        super().__init__(gb, target, max_goroutines=max_goroutines)
        self.by_site = by_site
        self.entries = entries

    def cflags(self) -> list[str]:
        return [*super().cflags(), "-DCREATE_STACKS=0", "-DPARK_STACKS=0", "-DHIST=1",
                f"-DHIST_BY_SITE={int(self.by_site)}", f"-DHIST_ENTRIES={self.entries}"]

    def samples(self) -> list[HistSample]:
        return [HistSample(k.kind, k.site, k.reason, k.slot, v.count, v.sum_ns)
                for k, v in _items(self.bpf["hist"])]

    def still_open(self) -> tuple[int, int]:
        """(created while attached and alive, parked and not woken) in the goroutine table."""
        values = [v for _, v in _items(self.bpf["goroutines"])]
        return (sum(1 for v in values if v.created_ns), sum(1 for v in values if v.parked_ns))


# -- run ---------------------------------------------------------------------------------------


class RunStop(NamedTuple):
    """One entry of the BPF map "run_stops": a process of the followed tree, stopped."""

    pid: int
    kind: int  # RUN_STOP_EXEC or RUN_STOP_EXIT
    ts_ns: int  # bpf_ktime_get_ns() (CLOCK_MONOTONIC) when it was stopped
    code: int  # RUN_STOP_EXIT: the exit code passed to runtime.exit


class RunTracer:
    """run's own build (-DRUN=1): follows a process tree, stops each exec'd program before its
    first instruction and holds traced Go programs at runtime.exit.

    Tracepoints only (sched fork/exec/exit: kprobes may be missing), plus one uprobe per traced
    program on runtime.exit. No runtime offsets: the per-program goroutine tables are
    LeakTracer builds of their own.
    """

    def __init__(self) -> None:
        self.bpf: Any = None
        self._holds: dict[int, bytes] = {}  # pid -> BCC's event name of its exit uprobe
        self._bell = False

    def attach(self) -> None:
        self.bpf = load_bpf([f"-I{bpf_dir()}", "-DRUN=1"])
        self.bpf["run_bell"].open_ring_buffer(self._ring)

    def _ring(self, ctx: Any, data: Any, size: int) -> None:
        self._bell = True

    def follow(self, pid: int) -> None:
        """Add a process to the tree: its forks, and theirs, are followed from now on."""
        table = self.bpf["run_tree"]
        table[table.Key(pid)] = table.Leaf(1)

    def wait(self, timeout_s: float) -> None:
        """Sleep until a stop rings the doorbell or timeout_s passes."""
        self._bell = False
        self.bpf.ring_buffer_poll(max(0, int(timeout_s * 1000)))

    def stops(self) -> list[RunStop]:
        """Every process stopped and not yet released, oldest first."""
        out = [RunStop(k if isinstance(k, int) else int(k.value), int(v.kind), int(v.ts_ns),
                       int(v.code))
               for k, v in _items(self.bpf["run_stops"])]
        return sorted(out, key=lambda s: s.ts_ns)

    def release(self, pid: int) -> None:
        """Forget a stop; the caller sends SIGCONT after this (the process cannot stop again
        while it is stopped, so nothing is lost in between)."""
        table = self.bpf["run_stops"]
        with contextlib.suppress(KeyError):
            del table[table.Key(pid)]

    def hold_at_exit(self, pid: int, exe: str, addr: int) -> None:
        """The uprobe on runtime.exit of one traced program (addr: link-time address)."""
        before = set(self.bpf.uprobe_fds)
        err = io.StringIO()
        try:
            with capture_stderr(err):
                self.bpf.attach_uprobe(name=exe.encode(), addr=addr, fn_name=b"on_run_exit",
                                       pid=pid)
        except Exception as e:
            said = err.getvalue().strip().splitlines()
            raise CannotTrace(f"cannot attach a uprobe to runtime.exit ({addr:#x}) of PID "
                              f"{pid}: {said[-1] if said else e}") from None
        new = set(self.bpf.uprobe_fds) - before
        if new:
            self._holds[pid] = new.pop()

    def unhold(self, pid: int) -> None:
        ev = self._holds.pop(pid, None)
        if ev is not None and self.bpf is not None:
            with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), \
                    contextlib.suppress(Exception):
                self.bpf.detach_uprobe_event(ev)

    def detach_tree(self) -> None:
        """Stop following: no exec stops from now on (the maps stay readable)."""
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
            for tp in (b"sched:sched_process_fork", b"sched:sched_process_exec"):
                with contextlib.suppress(Exception):
                    self.bpf.detach_tracepoint(tp)

    def lost(self) -> tuple[int, int]:
        """(forks not followed, stops not made)."""
        table = self.bpf["run_counters"]
        return (int(table[ctypes.c_int(const("RUN_CTR_LOST_TASK"))].value),
                int(table[ctypes.c_int(const("RUN_CTR_LOST_STOP"))].value))

    def close(self) -> None:
        """Detach everything: nothing new is stopped afterwards (stops already made remain
        in run_stops: read them with stops() before closing)."""
        if self.bpf is None:
            return
        bpf, self.bpf = self.bpf, None
        self._holds.clear()
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), \
                contextlib.suppress(Exception):
            bpf.cleanup()
