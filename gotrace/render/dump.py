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
    for g in gs:
        frames = tuple(g.stack) if all_frames else visible_frames(g.stack, wrappers)
        created = g.created_at if g.goid != 1 and (
            all_frames or shown(g.created_at.function, False)) else None
        key = (state(g), frames, created, g.stack_note)
        grp = groups.get(key)
        if grp is None:
            grp = groups[key] = Group(state(g), frames, created, g.stack_note)
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

        Goroutines of one leak share their stack (one list object): it is encoded once, so
        100k goroutines cost one pass, not 100k dictionaries per frame.
        """
        head = d.to_json(with_goroutines=False)
        del head["goroutines"]
        w = self.out.write
        w(json.dumps(head, separators=(",", ":"))[:-1] + ',"goroutines":[')
        encoded: dict[int, tuple[list[Frame], str]] = {}
        for i, g in enumerate(d.goroutines):
            cached = encoded.get(id(g.stack))
            if cached is None:
                cached = (g.stack, json.dumps([frame_json(f) for f in g.stack],
                                              separators=(",", ":")))
                encoded[id(g.stack)] = cached
            text = json.dumps(g.to_json(with_stack=False), separators=(",", ":"))
            w(("," if i else "") + text.replace('"stack":null', '"stack":' + cached[1], 1))
        w("]}\n")
        self.out.flush()
