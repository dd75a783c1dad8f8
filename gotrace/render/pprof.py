"""pprof export: attach's suspects and dump's goroutines as a goroutine profile.

The file is what Go's own goroutine profile (/debug/pprof/goroutine) is: a gzipped
profile.proto with sample type goroutine/count, one sample per group, leaf-first stacks. So
every pprof tool reads it, and `go tool pprof -diff_base` can compare gotrace's files with each
other. Two differences: the locations carry function, file and line already, with the mapping
marked symbolized, so pprof never looks for the binary (gotrace read the symbols from the live
process, whose binary may be gone or elsewhere); and each sample has labels for what a leak
hunt filters on: `wait_reason` and `go_site` (the creating go statement, "function file:line")
as strings, `parked` (seconds, a number) for `-tagfocus=parked=5s:`.

The schema is built at run time from descriptor_pb2 (the messages and field numbers of
github.com/google/pprof's proto/profile.proto that this file writes), so there is no generated
code to keep in step with the protobuf runtime, and the encoding is protobuf's own.
"""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from gotrace.binary.pclntab import Frame
from gotrace.model import DumpedGoroutine, GoroutineDump, LeakReport

PARKED_KEY = "parked"
PARKED_UNIT = "seconds"

# -- the schema: perftools.profiles, the fields this file writes -----------------------------

_INT64 = descriptor_pb2.FieldDescriptorProto.TYPE_INT64
_UINT64 = descriptor_pb2.FieldDescriptorProto.TYPE_UINT64
_BOOL = descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
# message -> (field, number, scalar type or message name, repeated?)
_Scalar: TypeAlias = descriptor_pb2.FieldDescriptorProto.Type.ValueType
_SCHEMA: dict[str, list[tuple[str, int, _Scalar | str, bool]]] = {
    "Profile": [
        ("sample_type", 1, "ValueType", True),
        ("sample", 2, "Sample", True),
        ("mapping", 3, "Mapping", True),
        ("location", 4, "Location", True),
        ("function", 5, "Function", True),
        ("string_table", 6, _STRING, True),
        ("drop_frames", 7, _INT64, False),
        ("keep_frames", 8, _INT64, False),
        ("time_nanos", 9, _INT64, False),
        ("duration_nanos", 10, _INT64, False),
        ("period_type", 11, "ValueType", False),
        ("period", 12, _INT64, False),
        ("comment", 13, _INT64, True),
        ("default_sample_type", 14, _INT64, False),
    ],
    "ValueType": [("type", 1, _INT64, False), ("unit", 2, _INT64, False)],
    "Sample": [
        ("location_id", 1, _UINT64, True),
        ("value", 2, _INT64, True),
        ("label", 3, "Label", True),
    ],
    "Label": [
        ("key", 1, _INT64, False),
        ("str", 2, _INT64, False),
        ("num", 3, _INT64, False),
        ("num_unit", 4, _INT64, False),
    ],
    "Mapping": [
        ("id", 1, _UINT64, False),
        ("memory_start", 2, _UINT64, False),
        ("memory_limit", 3, _UINT64, False),
        ("file_offset", 4, _UINT64, False),
        ("filename", 5, _INT64, False),
        ("build_id", 6, _INT64, False),
        ("has_functions", 7, _BOOL, False),
        ("has_filenames", 8, _BOOL, False),
        ("has_line_numbers", 9, _BOOL, False),
        ("has_inline_frames", 10, _BOOL, False),
    ],
    "Location": [
        ("id", 1, _UINT64, False),
        ("mapping_id", 2, _UINT64, False),
        ("address", 3, _UINT64, False),
        ("line", 4, "Line", True),
        ("is_folded", 5, _BOOL, False),
    ],
    "Line": [("function_id", 1, _UINT64, False), ("line", 2, _INT64, False)],
    "Function": [
        ("id", 1, _UINT64, False),
        ("name", 2, _INT64, False),
        ("system_name", 3, _INT64, False),
        ("filename", 4, _INT64, False),
        ("start_line", 5, _INT64, False),
    ],
}
_PACKAGE = "perftools.profiles"


def _profile_class() -> type[Message]:
    """The Profile message class, from a private pool (no clash with another copy of the
    schema that some other module may have registered in protobuf's default pool)."""
    fd = descriptor_pb2.FileDescriptorProto(
        name="gotrace/profile.proto", package=_PACKAGE, syntax="proto3")
    for name, fields in _SCHEMA.items():
        msg = fd.message_type.add(name=name)
        for fname, number, kind, repeated in fields:
            f = msg.field.add(name=fname, number=number, label=(
                descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated
                else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL))
            if isinstance(kind, str):
                f.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                f.type_name = f".{_PACKAGE}.{kind}"
            else:
                f.type = kind
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Profile"))


_PROFILE = _profile_class()

# -- what gotrace has to say about a group of goroutines -------------------------------------


@dataclass(frozen=True)
class Group:
    """One sample: a number of goroutines with one stack and the same labels."""

    count: int
    stack: Sequence[Sequence[Frame]]  # leaf first; per location, inlined callee first
    labels: dict[str, str] = field(default_factory=dict)
    parked_s: float | None = None  # the `parked` label; None: unknown


def locations(stack: Sequence[Frame]) -> list[tuple[Frame, ...]]:
    """The pprof locations of a stack of frames (innermost first).

    pprof wants the frames of one PC (a call and the calls inlined into it) as the Lines of
    one Location. gotrace's model lists them as consecutive Frames without saying which share
    a PC, so each Frame is its own Location: the same stacks, functions and lines for every
    pprof view; only `-addresses` and `has_inline_frames` consumers see flattened frames. Once
    the model marks inlined frames, group them here.
    """
    return [(f,) for f in stack]


def go_site(f: Frame) -> str:
    """A go statement as the label shows it: "function file:line", as Go's "created by"."""
    return f"{f.function} {f.file}:{f.line}" if f.file else f.function


def whole_seconds(s: float) -> int:
    """The parked label's value: whole seconds, rounded down, so that `parked=5s:` keeps
    exactly the goroutines parked for at least 5 s."""
    return max(0, math.floor(s))


# -- the builder ------------------------------------------------------------------------------


class ProfileBuilder:
    """Interns strings, functions and locations (pprof refers to them by index and id)."""

    def __init__(self) -> None:
        self._strings: dict[str, int] = {"": 0}
        self._functions: dict[tuple[str, str], int] = {}
        self._locations: dict[tuple[Frame, ...], int] = {}
        self._function_list: list[dict[str, Any]] = []
        self._location_list: list[dict[str, Any]] = []
        self._samples: list[dict[str, Any]] = []

    def string(self, s: str) -> int:
        return self._strings.setdefault(s, len(self._strings))

    def _function(self, f: Frame) -> int:
        key = (f.function, f.file)
        if key not in self._functions:
            fid = self._functions[key] = len(self._functions) + 1
            name = self.string(f.function)
            self._function_list.append(
                {"id": fid, "name": name, "system_name": name, "filename": self.string(f.file)})
        return self._functions[key]

    def _location(self, frames: tuple[Frame, ...]) -> int:
        if frames not in self._locations:
            lid = self._locations[frames] = len(self._locations) + 1
            self._location_list.append({
                "id": lid,
                "mapping_id": 1,
                "line": [{"function_id": self._function(f), "line": f.line} for f in frames],
            })
        return self._locations[frames]

    def add(self, g: Group) -> None:
        labels: list[dict[str, Any]] = [
            {"key": self.string(k), "str": self.string(v)} for k, v in g.labels.items()]
        if g.parked_s is not None:
            labels.append({"key": self.string(PARKED_KEY), "num": whole_seconds(g.parked_s),
                           "num_unit": self.string(PARKED_UNIT)})
        self._samples.append({
            "location_id": [self._location(tuple(loc)) for loc in g.stack if loc],
            "value": [g.count],
            "label": labels,
        })

    def profile(self, *, comment: str, duration_s: float, now_ns: int | None = None) -> Message:
        """The Profile message; time_nanos is when collection started (now - duration)."""
        duration_ns = max(0, round(duration_s * 1e9))
        now_ns = time.time_ns() if now_ns is None else now_ns
        goroutine, count = self.string("goroutine"), self.string("count")
        doc = {
            "sample_type": [{"type": goroutine, "unit": count}],
            "sample": self._samples,
            # Marked symbolized: pprof then neither opens nor looks for a binary.
            "mapping": [{"id": 1, "has_functions": True, "has_filenames": True,
                         "has_line_numbers": True, "has_inline_frames": True}],
            "location": self._location_list,
            "function": self._function_list,
            "time_nanos": now_ns - duration_ns,
            "duration_nanos": duration_ns,
            "period_type": {"type": goroutine, "unit": count},
            "period": 1,
            "comment": [self.string(comment)],
        }
        doc["string_table"] = list(self._strings)  # last: every string is interned by now
        return json_format.ParseDict(doc, _PROFILE())


def write_profile(msg: Message, path: str) -> None:
    """Gzipped, as profile.proto files on disk must be (mtime 0: same input, same bytes)."""
    with open(path, "wb") as out:
        out.write(gzip.compress(msg.SerializeToString(), mtime=0))


# -- attach -----------------------------------------------------------------------------------


def leak_groups(report: LeakReport) -> list[Group]:
    """One sample per suspect: its count, its parked stack, the longest park time."""
    groups = []
    for s in report.suspects:
        labels = {"wait_reason": s.wait_reason, "go_site": go_site(s.created_at)}
        groups.append(Group(s.count, locations(s.parked_stack), labels, s.parked_s_max))
    return groups


def leaks_profile(report: LeakReport, now_ns: int | None = None) -> Message:
    b = ProfileBuilder()
    for g in leak_groups(report):
        b.add(g)
    comment = (f"gotrace attach: pid {report.pid}, {report.go_version}, goroutines parked "
               f">= {report.threshold_s:g}s after {report.elapsed_s:.1f}s"
               f"{' (final report)' if report.final else ''}")
    return b.profile(comment=comment, duration_s=report.elapsed_s, now_ns=now_ns)


def write_leaks_profile(report: LeakReport, path: str) -> None:
    """`gotrace attach --pprof FILE`: the suspects of the report as a goroutine profile."""
    write_profile(leaks_profile(report), path)


# -- dump -------------------------------------------------------------------------------------


def dump_groups(dump: GoroutineDump) -> list[Group]:
    """Goroutines with the same state, stack and go statement, as Go's debug=1 groups them,
    and the same whole seconds of waiting: Go's profile keeps samples with different labels
    apart too, and so `-tagfocus=parked=...` selects exactly the goroutines it should."""
    members: dict[tuple[Any, ...], list[DumpedGoroutine]] = {}
    for g in dump.goroutines:
        waited = None if g.wait_s is None else whole_seconds(g.wait_s)
        key = (g.status, g.wait_reason, tuple(g.stack), g.created_at, waited)
        members.setdefault(key, []).append(g)
    groups = []
    for gs in members.values():
        first = gs[0]
        labels = {"status": first.status, "go_site": go_site(first.created_at)}
        if first.wait_reason:
            labels["wait_reason"] = first.wait_reason
        groups.append(Group(len(gs), locations(first.stack), labels, first.wait_s))
    return groups


def dump_profile(dump: GoroutineDump, now_ns: int | None = None) -> Message:
    b = ProfileBuilder()
    for g in dump_groups(dump):
        b.add(g)
    comment = (f"gotrace dump: pid {dump.pid}, {dump.go_version}, "
               f"{len(dump.goroutines)} goroutines ({dump.skipped} skipped, "
               f"{dump.system_hidden} runtime goroutines left out)")
    return b.profile(comment=comment, duration_s=dump.elapsed_s, now_ns=now_ns)


def write_dump_profile(dump: GoroutineDump, path: str) -> None:
    """`gotrace dump --pprof FILE`: every goroutine of the dump as a goroutine profile."""
    write_profile(dump_profile(dump), path)
