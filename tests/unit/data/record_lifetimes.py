"""Record what `gotrace tail` receives from the lifetimes scenario, for tests without BPF.

    cd /work/main && sudo .venv/bin/python tests/unit/data/record_lifetimes.py 1.27.3 \
        > tests/unit/data/tail_lifetimes.json

Writes the raw events (struct event fields), the frames of every PC they carry (so no binary is
needed to replay them), the wait-reason names and the attach time.
"""

from __future__ import annotations

import json
import sys
import time

from gotrace.commands.common import open_target
from gotrace.commands.tail import TailOptions, TailSession
from gotrace.model import Kind
from tests.gobuild import build_go
from tests.integration.lifetimes import LIFETIMES_SRC, Lifetimes


def main() -> None:
    binary = build_go(sys.argv[1] if len(sys.argv) > 1 else "1.27.3", LIFETIMES_SRC, "plain")
    target = Lifetimes(binary)
    try:
        tgt, gb = open_target(target.pid)
        session = TailSession(TailOptions(target.pid), tgt, gb)
        session.tracer.attach()
        start = session.tracer.ready_ns
        target.release()
        target.out.wait_for(r"^done ", timeout=60)
        time.sleep(0.2)
        events = session.poll()
        session.tracer.close()
    finally:
        target.stop()
    frames = {}
    for e in events:
        for pc in (e.gopc, e.pc):
            if pc and pc not in frames:
                frames[pc] = [[f.function, f.file, f.line]
                              for f in session.symbols.frames(pc, is_return_address=True)]
    reasons = sorted({e.wait_reason for e in events if e.kind in (Kind.PARK, Kind.WAKE)})
    json.dump({
        "pid": target.pid, "go_version": gb.go_version, "start_ns": start,
        "goroot": session.symbols.goroot,
        "reasons": {str(r): gb.wait_reason(r) for r in reasons},
        "frames": {str(pc): fr for pc, fr in sorted(frames.items())},
        "events": [list(e) for e in events],
    }, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
