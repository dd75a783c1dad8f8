"""Machine output: one JSON object per line on stdout, flushed, so `| jq` sees each report."""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol, TextIO


class HasJson(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class JsonLinesRenderer:
    """Leak reports and histograms alike: each is one line, `to_json()` of the model."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def render(self, obj: HasJson) -> None:
        self.out.write(json.dumps(obj.to_json(), separators=(",", ":")) + "\n")
        self.out.flush()
