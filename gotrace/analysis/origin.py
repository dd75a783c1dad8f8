"""Where a leak comes from, in the terms of the people who fix it: which test made it, which
commit last changed its `go` statement, and that file as the repository names it.

`test_of` is a pure function of a creation stack. The git half runs `git` read-only, in the
source file's directory, as the owner of that directory when gotrace runs as root: git
refuses repositories owned by someone else ("dubious ownership"), rightly so, since a
repository's configuration may run commands.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gotrace.analysis.leaks import LeakSession
from gotrace.binary.pclntab import Frame
from gotrace.model import Blame, GoroutineRecord

TRUNNERS = frozenset({"testing.tRunner", "testing.(*B).runN", "testing.(*F).Fuzz.func1",
                      "testing.runExample"})
_CLOSURE = re.compile(r"(?:\.func\d+|\.gowrap\d+|\.\d+)+$")
_INFRA = ("testing.", "runtime.", "internal/")
GIT_TIMEOUT_S = 10.0


def short_name(function: str) -> str:
    """`example.com/m/pkg.TestX.func1.2` -> `TestX`: no package path, no closure suffix.

    A test's closures (subtests, t.Cleanup, go statements inside it) are named after the
    test function that encloses them, so stripping the suffix names the test.
    """
    name = function.rsplit("/", 1)[-1]
    _, dot, rest = name.partition(".")
    return _CLOSURE.sub("", rest if dot else name) or name


def test_of(creation: Sequence[Frame]) -> str | None:
    """The test whose goroutine ran the go statement, from the creation stack (innermost
    first); None when that goroutine was not started by testing's runner.

    The answer is the outermost frame below testing.tRunner that is not testing's own
    (t.Cleanup and t.Run put testing frames in between) nor the runtime's.
    """
    for i, f in enumerate(creation):
        if f.function in TRUNNERS:
            inside = [g for g in creation[:i] if not g.function.startswith(_INFRA)]
            return short_name(inside[-1].function) if inside else None
    return None


def tests_by_goid(records: Iterable[GoroutineRecord],
                  creation: Callable[[GoroutineRecord], Sequence[Frame]]) -> dict[int, str | None]:
    """The test of every goroutine: from its own creation stack, else from its creator's
    (a goroutine started by a goroutine the test started), while the creator is alive."""
    by_goid = {r.goid: r for r in records}
    memo: dict[int, str | None] = {}

    def of(r: GoroutineRecord, depth: int) -> str | None:
        if r.goid not in memo:
            memo[r.goid] = None  # a cycle (goids reused) ends here
            t = test_of(creation(r))
            parent = by_goid.get(r.parent_goid)
            if t is None and parent is not None and depth < 64:
                t = of(parent, depth + 1)
            memo[r.goid] = t
        return memo[r.goid]

    return {goid: of(r, 0) for goid, r in by_goid.items()}


class ExitSession(LeakSession):
    """A LeakSession (exact park times) whose leak groups are split by test: goroutines of
    one go statement in a helper shared by two tests are two groups, each naming its test."""

    def partition(self, records: list[GoroutineRecord]
                  ) -> dict[str | None, list[GoroutineRecord]]:
        tests = tests_by_goid(records, lambda r: self.sym.creation_stack(
            r.gopc, tuple(r.create_stack)))
        parts: dict[str | None, list[GoroutineRecord]] = {}
        for r in records:
            parts.setdefault(tests.get(r.goid), []).append(r)
        return parts


# -- git ---------------------------------------------------------------------------------------


Runner = Callable[[list[str], str], str | None]


def _as_owner(directory: str) -> tuple[Callable[[], None] | None, dict[str, str]]:
    """How to run a command as the owner of directory (only when we are root and they are
    not): a preexec function and an environment with their HOME."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        st = os.stat(directory)
    except OSError:
        return None, env
    if os.geteuid() != 0 or st.st_uid == 0:
        return None, env
    uid, gid = st.st_uid, st.st_gid
    try:
        env["HOME"] = pwd.getpwuid(uid).pw_dir
    except KeyError:
        env["HOME"] = directory

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop, env


def run_git(args: list[str], cwd: str) -> str | None:
    """git's stdout, or None when git is missing, fails, or takes too long."""
    drop, env = _as_owner(cwd)
    try:
        p = subprocess.run(["git", *args], cwd=cwd, env=env, preexec_fn=drop,
                           capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def parse_blame(porcelain: str) -> Blame | None:
    """The commit, author and summary of `git blame --porcelain` output for one line; None for
    a line not committed yet."""
    lines = porcelain.splitlines()
    if not lines:
        return None
    commit = lines[0].split(" ", 1)[0]
    if not re.fullmatch(r"[0-9a-f]{40,64}", commit) or set(commit) == {"0"}:
        return None
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("\t"):
            break
        key, _, value = line.partition(" ")
        fields.setdefault(key, value)
    return Blame(commit=commit, author=fields.get("author", ""),
                 summary=fields.get("summary", ""))


@dataclass
class Git:
    """git facts about source files, asked once per file and line."""

    run: Runner = run_git
    _blames: dict[tuple[str, int], Blame | None] = field(default_factory=dict)
    _tops: dict[str, str | None] = field(default_factory=dict)

    def blame(self, file: str, line: int) -> Blame | None:
        """Who last changed file:line; None outside a work tree or when git knows nothing."""
        key = (file, line)
        if key not in self._blames:
            out = None
            if os.path.isabs(file) and os.path.isfile(file) and line > 0:
                out = self.run(["blame", "--porcelain", "-L", f"{line},{line}", "--",
                                os.path.basename(file)], os.path.dirname(file))
            self._blames[key] = parse_blame(out) if out else None
        return self._blames[key]

    def toplevel(self, file: str) -> str | None:
        """The root of the work tree holding file, or None."""
        d = os.path.dirname(file)
        if d not in self._tops:
            out = self.run(["rev-parse", "--show-toplevel"], d) if os.path.isdir(d) else None
            self._tops[d] = out.strip() or None if out else None
        return self._tops[d]

    def relative(self, file: str) -> str:
        """file as the repository names it (relative to the work tree root); else relative to
        the current directory when below it, else as given."""
        top = self.toplevel(file) if os.path.isabs(file) else None
        base = top or os.getcwd()
        rel = os.path.relpath(file, base) if os.path.isabs(file) else file
        return file if rel.startswith("..") else rel
