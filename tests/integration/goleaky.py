"""Drive examples/go-leaky and gotrace as a user would: real processes, real probes."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GO_LEAKY_SRC = ROOT / "examples" / "go-leaky"
MARKER = re.compile(r"^\s*go\s.*//\s*(leak|busy|idle):(\w+)\s*$")


def markers() -> dict[str, dict[str, int]]:
    """{'leak': {'recv': line, ...}, 'busy': {...}, 'idle': {...}} from go-leaky's source."""
    out: dict[str, dict[str, int]] = {"leak": {}, "busy": {}, "idle": {}}
    for n, line in enumerate((GO_LEAKY_SRC / "main.go").read_text().splitlines(), 1):
        m = MARKER.match(line)
        if m:
            out[m[1]][m[2]] = n
    return out


class Lines:
    """A pipe read by a thread, so tests can wait for a line without blocking forever."""

    def __init__(self, pipe: Any) -> None:
        self.q: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: Any) -> None:
        for line in pipe:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line matching {pattern!r}; saw {self.seen[-10:]}")
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError(f"stream ended before {pattern!r}; saw {self.seen[-10:]}")
            self.seen.append(line)
            if rx.search(line):
                return line


class GoLeaky:
    def __init__(self, binary: str, *args: str) -> None:
        self.proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.out = Lines(self.proc.stdout)
        self.out.wait_for(r"^go-leaky pid=")
        self.out.wait_for(r"^ready")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def ticks(self, n: int, timeout: float = 10.0) -> list[dict[str, int]]:
        got = []
        for _ in range(n):
            line = self.out.wait_for(r"^tick ", timeout)
            got.append({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
                       | {"tick": int(line.split()[1])})
        return got

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def gotrace(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gotrace", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1, cwd=ROOT)


def json_reports(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
