"""`gotrace dump` output: Go-style grouped text and the JSON contract, from synthetic dumps."""

from __future__ import annotations

import io
import json

import pytest

from gotrace.binary.pclntab import Frame
from gotrace.model import DumpedGoroutine, GoroutineDump
from gotrace.render.dump import (
    DumpJsonRenderer,
    DumpTextRenderer,
    exported_runtime,
    group,
    visible_frames,
)

GOROOT = "/usr/lib/go/src"
GOPARK = Frame("runtime.gopark", f"{GOROOT}/runtime/proc.go", 425)
CHANRECV = Frame("runtime.chanrecv", f"{GOROOT}/runtime/chan.go", 583)
CONSUME = Frame("main.consume", "/app/main.go", 20)
WRAP = Frame("main.spawn.gowrap1", "/app/main.go", 31)
SPAWN = Frame("main.spawn", "/app/main.go", 31)


def g(goid: int, *, reason: str | None = "chan receive", stack: list[Frame] | None = None,
      parent: int | None = 1, wait_s: float | None = None, status: str = "waiting",
      note: str | None = None) -> DumpedGoroutine:
    return DumpedGoroutine(goid=goid, parent_goid=parent, status=status, wait_reason=reason,
                           wait_s=wait_s, created_at=SPAWN, start_function="main.spawn.gowrap1",
                           stack=[GOPARK, CHANRECV, CONSUME, WRAP] if stack is None else stack,
                           stack_note=note)


def text(d: GoroutineDump) -> str:
    out = io.StringIO()
    DumpTextRenderer(out).render(d)
    return out.getvalue()


def test_go_hides_unexported_runtime_frames_and_wrappers() -> None:
    assert not exported_runtime("runtime.gopark")
    assert exported_runtime("runtime.Gosched")
    assert exported_runtime("runtime.(*Func).Name")
    assert not exported_runtime("runtime.(*mheap).alloc")
    assert not exported_runtime("sync.Mutex")
    frames = visible_frames([GOPARK, CHANRECV, CONSUME, WRAP], frozenset({WRAP.function}))
    assert frames == (CONSUME,)
    assert visible_frames([Frame("runtime.gopanic", "x", 1), CONSUME]) == (CONSUME,)
    assert visible_frames([CONSUME, Frame("runtime.gopanic", "x", 1)])[1].function == \
        "runtime.gopanic"


def test_identical_goroutines_are_printed_once_with_their_count() -> None:
    d = GoroutineDump(4242, "go1.27.3", [g(7), g(9), g(8, wait_s=185.0),
                                         g(1, reason="select", stack=[GOPARK], parent=0)],
                      system_hidden=4, wrappers=frozenset({WRAP.function}))
    groups = group(d.goroutines, d.wrappers)
    assert [len(gr.members) for gr in groups] == [3, 1]
    out = text(d)
    assert "3 goroutines [chan receive, 3 minutes]: 7, 9, 8\n" \
           "main.consume(...)\n\t/app/main.go:20\n" \
           "created by main.spawn in goroutine 1\n\t/app/main.go:31\n" in out
    assert "gowrap" not in out and "runtime.gopark" not in out
    # Goroutine 1 has no "created by", as in Go.
    assert "goroutine 1 [select]:\n" in out and out.rstrip().endswith("goroutine 1 [select]:")
    assert "4 runtime goroutines hidden" in out and "skipped 0" in out


def test_running_goroutines_say_why_there_is_no_stack() -> None:
    note = "goroutine running on other thread; stack unavailable"
    out = text(GoroutineDump(1, "go1.19.8", [g(5, reason=None, status="running", stack=[],
                                                note=note, parent=None)]))
    assert f"goroutine 5 [running]:\n\t{note}\ncreated by main.spawn\n" in out


def test_json_is_one_object_with_every_goroutine_and_every_frame() -> None:
    d = GoroutineDump(4242, "go1.27.3", [g(7, wait_s=61.25)], skipped=2, system_hidden=3)
    out = io.StringIO()
    DumpJsonRenderer(out).render(d)
    assert out.getvalue().count("\n") == 1
    obj = json.loads(out.getvalue())
    assert {"pid", "go_version", "skipped", "goroutines"} <= set(obj)
    assert (obj["pid"], obj["go_version"], obj["skipped"], obj["system_hidden"]) == \
        (4242, "go1.27.3", 2, 3)
    (one,) = obj["goroutines"]
    assert one == {
        "goid": 7, "parent_goid": 1, "status": "waiting", "wait_reason": "chan receive",
        "wait_s": 61.25,
        "created_at": {"function": "main.spawn", "file": "/app/main.go", "line": 31},
        "start_function": "main.spawn.gowrap1",
        "stack": [{"function": f.function, "file": f.file, "line": f.line}
                  for f in (GOPARK, CHANRECV, CONSUME, WRAP)],
        "stack_note": None,
    }


def test_min_wait_title_says_the_wait_is_approximate() -> None:
    out = text(GoroutineDump(1, "go1.27.3", [g(7, wait_s=400.0)], min_wait_s=300.0,
                             below_min_wait=12, wait_unknown=3, skipped=1))
    assert "1 goroutines waiting ≥ 5.0m (approximate, from the GC)" in out
    assert "12 others" in out and "3 waiting for a time not known yet" in out
    assert "skipped 1 (changing or unreadable)" in out


def test_streamed_json_equals_the_plain_encoding() -> None:
    shared = [GOPARK, CHANRECV, CONSUME, WRAP]
    d = GoroutineDump(1, "go1.19.8", [g(7, stack=shared), g(8, stack=shared), g(9, stack=[]),
                                      g(1, reason=None, status="running", parent=None)],
                      skipped=1, min_wait_s=2.5, below_min_wait=4)
    out = io.StringIO()
    DumpJsonRenderer(out).render(d)
    assert json.loads(out.getvalue()) == json.loads(json.dumps(d.to_json()))


def test_all_shows_runtime_frames_as_gotraceback_system() -> None:
    sweeper = g(3, reason="GC sweep wait", parent=1,
                stack=[GOPARK, Frame("runtime.bgsweep", f"{GOROOT}/runtime/mgcsweep.go", 279)])
    out = io.StringIO()
    DumpTextRenderer(out, all_frames=True).render(GoroutineDump(1, "go1.27.3", [sweeper]))
    assert "goroutine 3 [GC sweep wait]:\nruntime.gopark(...)\n" in out.getvalue()
    assert "runtime.bgsweep(...)" in out.getvalue()
    assert "runtime.gopark" not in text(GoroutineDump(1, "go1.27.3", [sweeper]))


def test_fast_json_is_byte_for_byte_json_dumps_and_falls_back_when_the_model_grows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    shared = [GOPARK, CHANRECV, CONSUME, WRAP]
    odd = Frame('main.q"uote\\d', "/app/ünï.go", 7)
    gs = [g(7, stack=shared, wait_s=1 / 3), g(8, stack=shared, wait_s=1e-7), g(9, stack=[odd]),
          g(1, reason=None, status="running", parent=None, note="why \"not\"")]
    d = GoroutineDump(1, "go1.27.3", gs)
    out = io.StringIO()
    DumpJsonRenderer(out).render(d)
    assert out.getvalue() == json.dumps(d.to_json(), separators=(",", ":")) + "\n"
    # A field added to to_json: the fast form differs, every goroutine takes json.dumps.
    plain = DumpedGoroutine.to_json
    monkeypatch.setattr(DumpedGoroutine, "to_json",
                        lambda self, **kw: {**plain(self, **kw), "new": 1})
    out = io.StringIO()
    DumpJsonRenderer(out).render(d)
    assert [x["new"] for x in json.loads(out.getvalue())["goroutines"]] == [1, 1, 1, 1]


def test_groups_of_shared_and_equal_stacks_are_the_same_group() -> None:
    shared = [GOPARK, CHANRECV, CONSUME, WRAP]
    gs = [g(i, stack=shared) for i in range(2, 6)] + [g(9, stack=list(shared))]
    gs += [g(10, stack=[GOPARK, CONSUME])]  # the same shown frames: Go groups them too
    (grp,) = group(gs, frozenset({WRAP.function}))
    assert [m.goid for m in grp.members] == [2, 3, 4, 5, 9, 10]
    assert grp.frames == (CONSUME,) and grp.created_by == SPAWN
    assert len(group([*gs, g(11, reason="select")], frozenset({WRAP.function}))) == 2
