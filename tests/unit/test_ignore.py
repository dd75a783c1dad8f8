"""Ignore rules: what each field matches, globs and regexes, files, and the counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gotrace.analysis.ignore import BASELINE, Ignorer, load_rules, parse_rule
from gotrace.binary.pclntab import Frame
from gotrace.errors import BadInput

GO = Frame("main.spawn", "/src/app/main.go", 42)
PARKED = [Frame("runtime.gopark", "/go/src/runtime/proc.go", 1),
          Frame("database/sql.(*DB).connectionOpener", "/go/src/database/sql/sql.go", 9)]
CREATED = [GO, Frame("github.com/nats-io/nats.go.Connect", "/mod/nats.go", 7)]


def hides(rule: str, **kw: object) -> bool:
    args: dict[str, object] = dict(go=GO, start="main.spawn.func1", parked=PARKED,
                                   created=CREATED, reason="chan receive")
    args.update(kw)
    return parse_rule(rule).hides(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("rule, hidden", [
    ("go:main.spawn", True), ("go:main.go:42", True), ("go:/src/app/main.go:42", True),
    ("go:main.go:43", False), ("start:main.spawn.func1", True), ("start:main.spawn", False),
    ("parked:database/sql.*", True), ("parked:net/http.*", False),
    ("created:/^github\\.com\\/nats-io\\//", True), ("reason:chan receive", True),
    ("reason:chan*", True), ("reason:IO wait", False), ("*connectionOpener", True),
    ("/nats/", True), ("main.nothing", False),
])
def test_rule_fields(rule: str, hidden: bool) -> None:
    assert hides(rule) is hidden


def test_bad_rules_are_bad_input() -> None:
    with pytest.raises(BadInput, match="regular expression"):
        parse_rule("/(/")
    with pytest.raises(BadInput, match="nothing to match"):
        parse_rule("reason:")
    with pytest.raises(BadInput, match="--ignore-file"):
        load_rules([], ["/nonexistent/rules"])


def test_files_skip_comments_and_keep_order(tmp_path: Path) -> None:
    f = tmp_path / "rules"
    f.write_text("# ours\n\nreason:IO wait\n  # indented comment\nstart:main.*\n")
    assert [r.text for r in load_rules(["go:x"], [str(f)])] == [
        "go:x", "reason:IO wait", "start:main.*"]


def test_counts_per_rule_zero_included_and_baseline_first() -> None:
    ig = Ignorer(load_rules(["reason:chan receive", "go:never"], []), baseline=True)
    kw: dict[str, object] = dict(go=GO, start="s", parked=PARKED, created=CREATED,
                                 reason="chan receive")
    assert ig.hidden(existed_at_attach=True, **kw)  # type: ignore[arg-type]
    assert ig.hidden(existed_at_attach=False, **kw)  # type: ignore[arg-type]
    assert ig.counts == {"reason:chan receive": 1, "go:never": 0, BASELINE: 1}
    ig.reset()
    assert set(ig.counts.values()) == {0}
