"""The live, kernel-dependent half: compile bpf/gotrace.bpf.c, attach its uprobes, read its maps.

Uprobes are created through perf_event_open, so they vanish with our file descriptors even
if gotrace is killed; `close()` detaches them explicitly on every normal path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gotrace.binary.gobinary import GoBinary, Hook
from gotrace.errors import CannotTrace
from gotrace.live.bpfdefs import bpf_dir, const
from gotrace.live.process import Target
from gotrace.model import Counters, GoroutineRecord

DEFAULT_MAX_GOROUTINES = 131072
BPF_NOEXIST = 1  # bpf_map_update_elem flag: create only
ALL_EVENTS = frozenset({"create", "exit", "park", "run"})
# attach does not probe `execute`: the memory check at report time already tells a parked
# goroutine from a woken one, and every goroutine lifecycle then costs two probe hits, not three.
ATTACH_EVENTS = frozenset({"create", "exit", "park"})
STACK_ENTRIES = 16384


@dataclass
class SeedResult:
    inserted: int = 0
    already_known: int = 0  # a probe saw it first (created, parked or exited since attach)
    table_full: int = 0


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


class Tracer:
    def __init__(self, gb: GoBinary, target: Target, *,
                 max_goroutines: int = DEFAULT_MAX_GOROUTINES, park_stacks: bool = False,
                 events: frozenset[str] = ALL_EVENTS, create_stack_every: int = 1) -> None:
        """park_stacks: capture each park's stack in BPF (costly) instead of from memory.

        create_stack_every: walk the creation stack of one goroutine in N per go statement
        (a power of two); the others reuse that go statement's last walked stack.
        """
        if create_stack_every < 1 or create_stack_every & (create_stack_every - 1):
            raise ValueError("create_stack_every must be a power of two")
        self.create_stack_every = create_stack_every
        self.gb = gb
        self.target = target
        self.max_goroutines = max_goroutines
        self.park_stacks = park_stacks
        self.events = events
        self.bpf: Any = None
        self.attached: list[Hook] = []
        self._stack_cache: dict[int, list[int]] = {}
        self.seed_table_full = 0  # goroutines found at attach that did not fit in the table

    def cflags(self) -> list[str]:
        return [
            f"-I{bpf_dir()}",
            *self.gb.offsets.as_cflags(),
            f"-DMAX_GOROUTINES={self.max_goroutines}",
            f"-DSTACK_ENTRIES={STACK_ENTRIES}",
            f"-DPARK_STACKS={int(self.park_stacks)}",
            f"-DCREATE_STACK_EVERY={self.create_stack_every}",
        ]

    def configure(self) -> None:
        """Fill configuration maps once loaded, before any probe fires (subclasses)."""

    def attach(self) -> None:
        try:
            from bcc import BPF
        except ImportError:
            raise CannotTrace("BCC is not importable: run sudo scripts/setup") from None
        src = str(bpf_dir() / "gotrace.bpf.c")
        err = io.StringIO()
        try:
            with capture_stderr(err):
                self.bpf = BPF(src_file=src.encode(), cflags=self.cflags())
        except Exception as e:
            detail = (err.getvalue().strip().splitlines() or [str(e)])[-1]
            raise CannotTrace(f"the BPF program did not load: {detail} (see gotrace doctor)") \
                from None
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

    # -- reading the maps ----------------------------------------------------------------

    def counters(self) -> Counters:
        table = self.bpf["counters"]

        def total(name: str) -> int:
            return int(table.sum(ctypes.c_int(const(name))).value)

        return Counters(
            created=total("CTR_CREATED"),
            exited=total("CTR_EXITED"),
            parked=total("CTR_PARKED"),
            woken=total("CTR_RUN") if "run" in self.events else None,
            lost_table_full=total("CTR_LOST_TABLE_FULL") + self.seed_table_full,
            lost_stacks=total("CTR_LOST_STACK"),
            lost_reads=total("CTR_LOST_READ"),
        )

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

    def records(self) -> list[GoroutineRecord]:
        table = self.bpf["goroutines"]
        try:
            items = list(table.items_lookup_batch())
        except Exception:  # kernels without batch ops: one syscall per key
            items = list(table.items())
        out = []
        for k, v in items:
            out.append(GoroutineRecord(
                goid=int(getattr(k, "value", k)), gaddr=v.gaddr, created_ns=v.created_ns,
                parked_ns=v.parked_ns, gopc=v.gopc, startpc=v.startpc, parent_goid=v.parent_goid,
                wait_reason=v.wait_reason, flags=v.flags, park_caller=v.park_caller,
                create_stack=self._stack(v.create_stack), park_stack=self._stack(v.park_stack),
            ))
        return out

    # -- goroutines that existed before the attach -----------------------------------------

    def seed(self, records: Iterable[GoroutineRecord]) -> SeedResult:
        """Insert goroutines read from memory after the probes went live, unless a probe
        already inserted them: BPF_NOEXIST, so an event seen after attach always wins over
        the older memory read (go-runtime.md §8, step 6)."""
        from bcc.libbcc import lib

        table = self.bpf["goroutines"]
        out = SeedResult()
        key, leaf = table.Key(), table.Leaf()  # reused: the kernel copies them
        leaf.create_stack = leaf.park_stack = const("NO_STACK")
        fd, key_p, leaf_p, update = table.map_fd, ctypes.byref(key), ctypes.byref(leaf), \
            lib.bpf_update_elem
        for rec in records:
            key.value = rec.goid
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

    def close(self) -> None:
        if self.bpf is None:
            return
        bpf, self.bpf = self.bpf, None
        # BCC prints to stderr when the target is already gone; that is not the user's problem.
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), \
                contextlib.suppress(Exception):
            bpf.cleanup()
