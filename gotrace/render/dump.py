"""`gotrace dump` output: Go's goroutine-dump text (debug=2 frames, grouped as debug=1), or JSON.

The text follows Go's own tracebacks so that it reads like `runtime.Stack` or
`/debug/pprof/goroutine?debug=2`: runtime-internal frames hidden (runtime.gopark and friends),
"created by F in goroutine N" with the `go` statement's file:line, and identical goroutines
(same state, same stack, same go statement) printed once with their count, as debug=1 does.
The JSON keeps every frame, runtime ones included.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from gotrace.binary.pclntab import Frame
from gotrace.durations import format_duration
from gotrace.model import DumpedGoroutine, GoroutineDump, frame_json

MAX_GOIDS = 20


def exported_runtime(name: str) -> bool:
    """Go's isExportedRuntime: runtime.Gosched, runtime.(*Func).Name, not runtime.gopark."""
    if not name.startswith("runtime."):
        return False
    rest = name[len("runtime.") :]
    rcvr, _, fn = rest.rpartition(".")
    if rcvr.startswith("(*") and rcvr.endswith(")"):
        rcvr = rcvr[2:-1]
    return fn[:1].isupper() and fn[:1].isascii() and (not rcvr or rcvr[:1].isupper())


def shown(name: str, first: bool) -> bool:
    """Go's showfuncinfo at GOTRACEBACK=1, the level runtime.Stack uses."""
    if name in ("runtime.runFinalizers", "runtime.runCleanups"):
        return True
    if name == "runtime.gopanic" and not first:
        return True
    return "." in name and (not name.startswith("runtime.") or exported_runtime(name))


def visible_frames(stack: list[Frame], wrappers: frozenset[str] = frozenset()
                   ) -> tuple[Frame, ...]:
    return tuple(f for i, f in enumerate(stack)
                 if f.function not in wrappers and shown(f.function, i == 0))


def state(g: DumpedGoroutine) -> str:
    return g.wait_reason or g.status


def minutes(wait_s: float | None) -> str:
    """Go's ", N minutes" (only from one minute on: the figure comes from the GC, roughly)."""
    if wait_s is None or wait_s < 60:
        return ""
    n = int(wait_s // 60)
    return f", {n} minute" if n == 1 else f", {n} minutes"


@dataclass
class Group:
    state: str
    frames: tuple[Frame, ...]
    created_by: Frame | None
    note: str | None
    members: list[DumpedGoroutine] = field(default_factory=list)


def group(gs: list[DumpedGoroutine], wrappers: frozenset[str] = frozenset(),
          all_frames: bool = False) -> list[Group]:
    """Goroutines with the same state, shown stack and go statement, largest group first.

    all_frames: every frame and every "created by", as Go prints with GOTRACEBACK=system.
    """
    groups: dict[tuple[object, ...], Group] = {}
    # Goroutines of one leak share their stack list and their go-statement Frame (gotrace
    # dump makes one per distinct value): each is looked at once, then keyed by a small int.
    by_stack: dict[int, int] = {}  # id(stack list) -> index of its shown frames
    by_created: dict[int, int] = {}  # id(created_at) -> index of its shown creator
    frame_ids: dict[tuple[Frame, ...], int] = {}
    creator_ids: dict[Frame | None, int] = {}
    shown_frames: list[tuple[Frame, ...]] = []
    creators: list[Frame | None] = []
    for g in gs:
        fi = by_stack.get(id(g.stack))
        if fi is None:
            frames = tuple(g.stack) if all_frames else visible_frames(g.stack, wrappers)
            fi = frame_ids.get(frames)
            if fi is None:
                fi = frame_ids[frames] = len(shown_frames)
                shown_frames.append(frames)
            by_stack[id(g.stack)] = fi
        if g.goid == 1:
            ci = creator_ids.setdefault(None, len(creators))
            if ci == len(creators):
                creators.append(None)
        else:
            got = by_created.get(id(g.created_at))
            if got is None:
                created = g.created_at if all_frames or shown(g.created_at.function, False) \
                    else None
                got = creator_ids.get(created)
                if got is None:
                    got = creator_ids[created] = len(creators)
                    creators.append(created)
                by_created[id(g.created_at)] = got
            ci = got
        key = (g.wait_reason or g.status, fi, ci, g.stack_note)
        grp = groups.get(key)
        if grp is None:
            grp = groups[key] = Group(state(g), shown_frames[fi], creators[ci], g.stack_note)
        grp.members.append(g)
    return sorted(groups.values(), key=lambda gr: (-len(gr.members), gr.members[0].goid))


class DumpTextRenderer:
    """Plain text with tabs, exactly as Go prints frames, so tools that read Go's goroutine
    dumps (panicparse, editors' stack-trace parsers) read this one too."""

    def __init__(self, out: TextIO | None = None, *, all_frames: bool = False) -> None:
        self.out = out or sys.stdout
        self.all_frames = all_frames

    def title(self, d: GoroutineDump) -> str:
        parts = [f"gotrace dump · pid {d.pid} · {d.go_version}",
                 f"{len(d.goroutines):,} goroutines"]
        if d.min_wait_s is not None:
            parts[-1] += f" waiting ≥ {format_duration(d.min_wait_s)} (approximate, from the GC)"
            parts.append(f"{d.below_min_wait:,} others")
            if d.wait_unknown:
                parts.append(f"{d.wait_unknown:,} waiting for a time not known yet (no GC "
                             "since they parked; Go runs one at least every 2 minutes)")
        if d.system_hidden:
            parts.append(f"{d.system_hidden:,} runtime goroutines hidden (--all shows them)")
        parts += [f"ignored {n:,} by {rule!r}" for rule, n in d.ignored.items()]
        parts.append(f"skipped {d.skipped:,}" + (" (changing or unreadable)" if d.skipped else ""))
        parts.append(f"read in {format_duration(d.elapsed_s)}")
        return " · ".join(parts)

    def render(self, d: GoroutineDump) -> None:
        w = self.out.write
        w(self.title(d) + "\n")
        for grp in group(d.goroutines, d.wrappers, self.all_frames):
            n = len(grp.members)
            longest = max((m.wait_s for m in grp.members if m.wait_s is not None), default=None)
            head = f"[{grp.state}{minutes(longest)}]"
            if n == 1:
                w(f"\ngoroutine {grp.members[0].goid} {head}:\n")
            else:
                ids = ", ".join(str(m.goid) for m in grp.members[:MAX_GOIDS])
                more = f", … ({n - MAX_GOIDS:,} more)" if n > MAX_GOIDS else ""
                w(f"\n{n:,} goroutines {head}: {ids}{more}\n")
            if grp.note:
                w(f"\t{grp.note}\n")
            for f in grp.frames:
                w(f"{f.function}(...)\n\t{f.file}:{f.line}\n")
            if grp.created_by is not None:
                parents = sorted({m.parent_goid for m in grp.members if m.parent_goid})
                where = ""
                if len(parents) == 1:
                    where = f" in goroutine {parents[0]}"
                elif parents:
                    where = " in goroutines " + ", ".join(map(str, parents[:5])) + \
                        (", …" if len(parents) > 5 else "")
                c = grp.created_by
                w(f"created by {c.function}{where}\n\t{c.file}:{c.line}\n")
        self.out.flush()


class DumpJsonRenderer:
    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def render(self, d: GoroutineDump) -> None:
        """The same object as `json.dumps(d.to_json())`, written goroutine by goroutine.

        Goroutines of one leak share their stack (one list object) and their go statement:
        each is encoded once, and each goroutine is one string format of encoded pieces, so
        100k goroutines cost one pass, not 100k dictionaries per frame. The fast form is
        checked against json.dumps on the first goroutine; where they differ (a field added
        to DumpedGoroutine.to_json) every goroutine goes through json.dumps.
        """
        head = d.to_json(with_goroutines=False)
        del head["goroutines"]
        w = self.out.write
        w(json.dumps(head, separators=(",", ":"))[:-1] + ',"goroutines":[')
        gs = d.goroutines
        fast = _FastJson()
        if gs and fast(gs[0]) != _slow_json(gs[0]):
            encode: Callable[[DumpedGoroutine], str] = _slow_json
        else:
            encode = fast
        for i in range(0, len(gs), 4096):
            w(("," if i else "") + ",".join(map(encode, gs[i : i + 4096])))
        w("]}\n")
        self.out.flush()


def _slow_json(g: DumpedGoroutine) -> str:
    return json.dumps(g.to_json(), separators=(",", ":"))


class _FastJson:
    """json.dumps(g.to_json()) for a DumpedGoroutine, from cached pieces."""

    def __init__(self) -> None:
        self.strings: dict[str | None, str] = {}
        self.stacks: dict[int, tuple[list[Frame], str]] = {}  # id(list): list kept alive
        self.frames: dict[Frame, str] = {}
        self.created: dict[int, tuple[Frame, str]] = {}  # id(Frame): the Frame kept alive

    def text(self, s: str | None) -> str:
        got = self.strings.get(s)
        if got is None:
            got = self.strings[s] = json.dumps(s)
        return got

    def frame(self, f: Frame) -> str:
        got = self.frames.get(f)
        if got is None:
            got = self.frames[f] = json.dumps(frame_json(f), separators=(",", ":"))
        return got

    def __call__(self, g: DumpedGoroutine) -> str:
        st = self.stacks.get(id(g.stack))
        if st is None:
            st = self.stacks[id(g.stack)] = (
                g.stack, "[" + ",".join(self.frame(f) for f in g.stack) + "]")
        created = self.created.get(id(g.created_at))
        if created is None:
            created = self.created[id(g.created_at)] = (g.created_at, self.frame(g.created_at))
        strings = self.strings
        status, reason, start, note = g.status, g.wait_reason, g.start_function, g.stack_note
        if status not in strings or reason not in strings or start not in strings \
                or note not in strings:
            for s in (status, reason, start, note):
                self.text(s)
        wait = "null" if g.wait_s is None else repr(round(g.wait_s, 3))
        parent = "null" if g.parent_goid is None else int(g.parent_goid)
        return (f'{{"goid":{int(g.goid)},"parent_goid":{parent},"status":{strings[status]},'
                f'"wait_reason":{strings[reason]},"wait_s":{wait},'
                f'"created_at":{created[1]},'
                f'"start_function":{strings[start]},"stack":{st[1]},'
                f'"stack_note":{strings[note]}}}')
