"""Ignore rules: goroutines meant to live forever, hidden from reports but always counted.

A rule is `[FIELD:]PATTERN`. PATTERN is a glob (`*`, `?`, `[...]`, matched whole) or, between
slashes, a regular expression (`/^net\\/http\\./`, searched). FIELD says what it is matched
against; without one, a rule matches any of them:

    go:       the creating go statement (its function, or file:line)
    start:    the goroutine's start function
    parked:   any frame of the parked stack (function, or file:line)
    created:  any frame of the creation stack (function, or file:line)
    reason:   the wait reason (`IO wait`, `chan receive`, ...)

Frames are matched by function name, by `path/file.go:line` and by `file.go:line`. Examples:
`start:net/http.(*conn).serve`, `parked:database/sql.*`, `reason:IO wait`,
`go:main.go:42`, `created:/^github\\.com\\/nats-io\\//`. An ignore file holds one rule per
line; blank lines and lines starting with # are skipped.

--baseline (goleak's IgnoreCurrent) hides every goroutine that already existed at attach.
Every report lists each rule with the number of goroutines it hid, zero included.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from gotrace.binary.pclntab import Frame
from gotrace.errors import BadInput

FIELDS = ("go", "start", "parked", "created", "reason")
BASELINE = "--baseline"


def _matcher(pattern: str, rule: str) -> Callable[[str], bool]:
    if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
        try:
            rx = re.compile(pattern[1:-1])
        except re.error as e:
            raise BadInput(f"ignore rule {rule!r}: not a valid regular expression ({e})") \
                from None
        return lambda s: rx.search(s) is not None
    return lambda s: fnmatchcase(s, pattern)


def _frame_texts(f: Frame) -> tuple[str, str, str]:
    return f.function, f"{f.file}:{f.line}", f"{os.path.basename(f.file)}:{f.line}"


@dataclass(frozen=True)
class Rule:
    text: str
    on: str | None  # one of FIELDS; None: any
    match: Callable[[str], bool] = field(compare=False)

    def _frames(self, frames: Iterable[Frame]) -> bool:
        return any(self.match(t) for f in frames for t in _frame_texts(f))

    def hides(self, *, go: Frame, start: str, parked: Sequence[Frame],
              created: Sequence[Frame], reason: str) -> bool:
        f = self.on
        return ((f in (None, "go") and self._frames((go,)))
                or (f in (None, "start") and self.match(start))
                or (f in (None, "parked") and self._frames(parked))
                or (f in (None, "created") and self._frames(created))
                or (f in (None, "reason") and self.match(reason)))


def parse_rule(text: str) -> Rule:
    rule = text.strip()
    if not rule:
        raise BadInput("an ignore rule is empty")
    head, sep, rest = rule.partition(":")
    if sep and head in FIELDS:
        if not rest:
            raise BadInput(f"ignore rule {rule!r}: nothing to match after {head}:")
        return Rule(rule, head, _matcher(rest, rule))
    return Rule(rule, None, _matcher(rule, rule))


def load_rules(rules: Iterable[str], files: Iterable[str]) -> list[Rule]:
    """--ignore rules, then those of each --ignore-file, in order."""
    out = [parse_rule(r) for r in rules]
    for path in files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise BadInput(f"--ignore-file {path}: {e.strerror}") from None
        out += [parse_rule(line) for line in lines
                if line.strip() and not line.lstrip().startswith("#")]
    return out


@dataclass
class Ignorer:
    """The rules of one report and what each one hid."""

    rules: list[Rule] = field(default_factory=list)
    baseline: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Counts start again for each report."""
        self.counts = {r.text: 0 for r in self.rules}
        if self.baseline:
            self.counts[BASELINE] = 0

    def hidden(self, *, existed_at_attach: bool, go: Frame, start: str,
               parked: Sequence[Frame], created: Sequence[Frame], reason: str) -> bool:
        """Whether a goroutine is hidden; the first rule that hides it counts it."""
        if self.baseline and existed_at_attach:
            self.counts[BASELINE] += 1
            return True
        for r in self.rules:
            if r.hides(go=go, start=start, parked=parked, created=created, reason=reason):
                self.counts[r.text] += 1
                return True
        return False
