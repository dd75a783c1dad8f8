"""docs/go-runtime.md and the code agree: its offset tables are the code's tables, cell by cell.

The document's `runtime.g field` table has one row per field gotrace reads and one column per
supported release; its `runtime.m field` table holds M_CURG where the code uses it (releases
without g.parentGoid). Code comments cite the document's sections by their GitHub anchors, so
every anchor of it cited in gotrace/, bpf/, tests/ or scripts/ must name one of its headings.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from gotrace.binary.offsets import M_CURG, SUPPORTED_MINORS, GOffsets, table_offsets

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "go-runtime.md"
ABSENT = "—"

# Row label in the document (the Go field) -> GOffsets attribute.
G_ROWS = {
    "atomicstatus": "status",
    "goid": "goid",
    "waitreason": "waitreason",
    "gopc": "gopc",
    "startpc": "startpc",
    "parentGoid": "parent_goid",
    "sched.sp": "sched_sp",
    "sched.pc": "sched_pc",
    "sched.bp": "sched_bp",
    "stack.lo": "stack_lo",
    "stack.hi": "stack_hi",
    "m": "m",
    "syscallsp": "syscallsp",
    "syscallpc": "syscallpc",
    "syscallbp": "syscallbp",
    "waitsince": "waitsince",
    "trackingSeq": "tracking_seq",
}

Table = dict[str, dict[int, int | None]]  # row label -> minor -> offset (None: absent)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_table(text: str, title: str) -> Table:
    """The Markdown table whose first header cell is `title`: row label -> minor -> value."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines)
              if line.startswith("|") and _cells(line)[0] == title]
    assert len(starts) == 1, f"{DOC.name}: want exactly one table headed {title!r}"
    head = _cells(lines[starts[0]])
    minors = []
    for h in head[1:]:
        m = re.fullmatch(r"1\.(\d+)", h)
        assert m, f"{title}: column {h!r} is not a Go release"
        minors.append(int(m.group(1)))
    assert set(_cells(lines[starts[0] + 1])) <= {"---", "---:", ":---", ":---:"}, title
    table: Table = {}
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) == len(head), f"{title}: row {line!r} has the wrong number of cells"
        label = cells[0].strip("`")
        assert label not in table, f"{title}: row {label} appears twice"
        row: dict[int, int | None] = {}
        for minor, cell in zip(minors, cells[1:], strict=True):
            if cell == ABSENT:
                row[minor] = None
            else:
                assert re.fullmatch(r"\d+", cell), f"{title}, {label}, 1.{minor}: {cell!r}"
                row[minor] = int(cell)
        table[label] = row
    return table


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_g_table_covers_every_release_and_every_field(doc: str) -> None:
    table = parse_table(doc, "runtime.g field")
    assert set(table) == set(G_ROWS)
    for label, row in table.items():
        assert sorted(row) == list(SUPPORTED_MINORS), label
    offset_fields = {f.name for f in fields(GOffsets) if f.name != "source"}
    assert set(G_ROWS.values()) == offset_fields, "a GOffsets field has no row in the doc"


@pytest.mark.parametrize("minor", SUPPORTED_MINORS)
def test_g_table_equals_the_code(doc: str, minor: int) -> None:
    table = parse_table(doc, "runtime.g field")
    code = table_offsets(minor)
    differ = {label: (row[minor], getattr(code, G_ROWS[label]))
              for label, row in table.items() if row[minor] != getattr(code, G_ROWS[label])}
    assert not differ, f"go1.{minor}: doc vs code {differ}"


def test_m_table_equals_the_code(doc: str) -> None:
    table = parse_table(doc, "runtime.m field")
    assert set(table) == {"curg"}
    row = table["curg"]
    assert sorted(row) == list(SUPPORTED_MINORS)
    for minor in SUPPORTED_MINORS:
        used = table_offsets(minor).parent_goid is None  # M_CURG is read only then
        assert row[minor] == (M_CURG if used else None), f"go1.{minor}"


# -- anchors ---------------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """GitHub's rule: lowercase, drop punctuation (keep letters, digits, '_', '-', spaces),
    spaces to hyphens."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def doc_anchors(text: str) -> set[str]:
    anchors: set[str] = set()
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = re.match(r"(#{1,6}) (.+)$", line)
        if m and not in_code:
            base = github_anchor(m.group(2))
            anchor, n = base, 0
            while anchor in anchors:
                n += 1
                anchor = f"{base}-{n}"
            anchors.add(anchor)
    return anchors


def test_anchor_rule() -> None:
    assert github_anchor("runtime.g offsets") == "runtimeg-offsets"
    assert github_anchor("Finding the tables in stripped, PIE and cgo binaries") == \
        "finding-the-tables-in-stripped-pie-and-cgo-binaries"


def test_cited_anchors_exist(doc: str) -> None:
    anchors = doc_anchors(doc)
    cited: dict[str, list[str]] = {}
    for top in ("gotrace", "bpf", "tests", "scripts"):
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or path.suffix in (".pyc", ".json", ".o", ".png"):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for m in re.finditer(r"docs/go-runtime\.md#([\w-]+)", text):
                cited.setdefault(m.group(1), []).append(str(path.relative_to(ROOT)))
    missing = {a: where for a, where in cited.items() if a not in anchors}
    assert not missing, f"cited anchors with no heading in docs/go-runtime.md: {missing}"
