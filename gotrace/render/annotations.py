"""GitHub Actions annotations for `gotrace run --annotations github`: one `::error` per leak
group, on its go statement, so the leak shows on the pull request's diff.

Format: https://docs.github.com/actions/reference/workflow-commands-for-github-actions
(`::error file=F,line=N,title=T::message`; data escapes %, CR and LF, properties also `:`
and `,`). Files are named relative to the root of the git work tree, as the diff names them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gotrace.durations import format_duration
from gotrace.model import ProgramRun, Suspect


def _data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(s: str) -> str:
    return _data(s).replace(":", "%3A").replace(",", "%2C")


def leak_message(s: Suspect, program: str) -> str:
    """One sentence about one leak group, shared by annotations and JUnit."""
    noun = "goroutine" if s.count == 1 else "goroutines"
    by = f" by {s.test}" if s.test else ""
    msg = (f"{s.count} {noun} leaked{by} in {program}: parked {format_duration(s.parked_s_max)} "
           f"[{s.wait_reason}] at program exit, started by this go statement "
           f"({s.created_at.function})")
    if s.blame:
        msg += f"; line last changed in {s.blame.commit[:12]} by {s.blame.author}: " \
               f"{s.blame.summary}"
    return msg


def annotation(s: Suspect, program: str, relative: Callable[[str], str]) -> str:
    """`::error file=…,line=…,title=…::message` for one leak group."""
    f = s.created_at
    title = f"goroutine leak in {s.test}" if s.test else "goroutine leak"
    return (f"::error file={_prop(relative(f.file))},line={f.line},title={_prop(title)}::"
            f"{_data(leak_message(s, program))}")


def github_annotations(programs: Iterable[ProgramRun],
                       relative: Callable[[str], str]) -> list[str]:
    """Every leak group of every program, as annotation lines."""
    return [annotation(s, p.path or p.exe, relative)
            for p in programs if p.report for s in p.report.suspects]
