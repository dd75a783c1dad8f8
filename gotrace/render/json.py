"""Machine output: one JSON object per line on stdout, flushed, so `| jq` sees each report."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from gotrace.model import Report


class JsonRenderer:
    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def emit(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.out.flush()

    def report(self, report: Report) -> None:
        self.emit(report.to_json())
