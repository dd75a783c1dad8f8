"""`gotrace run`'s process tree: start a command, stop every program exec'd in its tree before
the program's first instruction, let a handler trace the Go programs it selects, and hold
those at runtime.exit so their goroutines can be read, stopped, at the very end.

The stops are made in the kernel (RunTracer: sched tracepoints and bpf_send_signal, see
bpf/gotrace.bpf.c, section "gotrace run"); this module decides and releases with SIGCONT.
A parent that waits for its children with waitid/wait4 without WUNTRACED (go test, make,
shells without job control, Python's subprocess) never sees these stops.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from gotrace.binary import disasm
from gotrace.binary.buildinfo import read_build_info
from gotrace.binary.elf import ElfImage
from gotrace.binary.gobinary import GoBinary
from gotrace.errors import BadInput, GotraceError
from gotrace.live.bpfdefs import const
from gotrace.live.process import Target
from gotrace.live.tracer import RunStop, RunTracer

POLL_S = 0.1  # how often liveness is checked when no stop rings the doorbell
STARTING_POLL_S = 0.01  # the same while a program is being attached
# BCC work (compile, attach, detach) is done by one thread at a time: libbcc's messages are
# caught by swapping sys.stderr and file descriptor 2 (tracer.capture_stderr), process-wide.
BCC_LOCK = threading.Lock()
STOPPED_WAIT_S = 2.0  # how long a held program's threads may take to all stop


@dataclass(frozen=True)
class ProgramInfo:
    """What an exec'd program is, from its build info (read once per executable file)."""

    exe: str  # as the process sees it (readlink /proc/PID/exe)
    go_version: str | None  # None: not a Go program
    path: str = ""  # main package path, e.g. cmd/compile, example.com/m/pkg.test
    toolchain: bool = False


def goroot_of(exe: str) -> str | None:
    """The GOROOT holding exe (GOROOT/bin/go, GOROOT/pkg/tool/GOOS_GOARCH/compile), or None."""
    parts = exe.split("/")
    for i in range(len(parts) - 1, 0, -1):
        root = "/".join(parts[:i])
        rest = parts[i:]
        in_root = (len(rest) == 2 and rest[0] == "bin") or \
            (len(rest) == 4 and rest[:2] == ["pkg", "tool"])
        if in_root and os.path.isfile(os.path.join(root or "/", "src", "runtime", "proc.go")):
            return root
    return None


def is_toolchain(path: str, exe: str) -> bool:
    """The go command and its tools: main package under cmd/, or an executable in a GOROOT."""
    return path.startswith("cmd/") or goroot_of(exe) is not None


class Selector:
    """Which Go programs count: --match REGEX against the executable and the main package
    path; without it, every Go program except the toolchain's."""

    def __init__(self, match: str | None) -> None:
        try:
            self.rx = re.compile(match) if match is not None else None
        except re.error as e:
            raise BadInput(f"--match {match!r}: not a valid regular expression ({e})") from None

    def __call__(self, info: ProgramInfo) -> bool:
        if info.go_version is None:
            return False
        if self.rx is None:
            return not info.toolchain
        return bool(self.rx.search(info.exe) or self.rx.search(info.path))


def exit_probe(gb: GoBinary) -> disasm.ProbePoint:
    """Where to hold a Go program at its exit: an instruction of runtime.exit before its
    syscall (exit_group), decoded, never guessed; an emulated one if there is one.

    Every normal end of a Go program calls runtime.exit: main returning (runtime.main),
    os.Exit (syscall.Exit -> runtime.syscall_Exit), testing's exit, fatal errors. It is a
    4-instruction assembly function (load the code, load 231, SYSCALL, RET) with nothing the
    kernel emulates, so its first instruction is single-stepped: once per program. The hold
    must land before the SYSCALL itself: a signal raised at a single-stepped probe is taken
    after the stepped instruction.
    """
    f = gb.func("runtime.exit")
    if gb.arch == "arm64":
        return _exit_probe_arm64(gb, f.entry, f.end)
    insns = disasm.decode(gb.img, f.entry, f.end)
    before = []
    for ins in insns:
        if ins.mnemonic == "syscall":
            break
        before.append(ins)
    else:
        raise BadInput(f"{gb.img.name}: no SYSCALL in runtime.exit; cannot hold it at exit")
    if not before:
        raise BadInput(f"{gb.img.name}: runtime.exit starts with its SYSCALL; cannot hold it")
    for ins in before:
        if disasm.is_emulated(ins):
            return disasm.ProbePoint(ins.addr, True, "emulated, before exit_group")
    return disasm.ProbePoint(before[0].addr, False,
                             "runtime.exit's first instruction, before exit_group: "
                             "single-stepped, once per program")


def _exit_probe_arm64(gb: GoBinary, start: int, end: int) -> disasm.ProbePoint:
    """exit_probe on arm64: runtime.exit is `ldrsw x0, [sp, #8]; mov x8, #94; svc #0` (the code
    read as ABI0 at SP+8, as on amd64). The probe goes on the first instruction before the svc
    that the kernel takes (simulated, else single-stepped; the svc itself is refused)."""
    before = []
    for ins in disasm.decode_arm64(gb.img, start, end, regs=False):
        if ins.mnemonic == "svc":
            break
        before.append((ins, disasm.uprobe_arm64(int.from_bytes(gb.img.read(ins.addr, 4),
                                                                "little"))))
    else:
        raise BadInput(f"{gb.img.name}: no SVC in runtime.exit; cannot hold it at exit")
    for ins, kind in before:
        if kind == disasm.SIMULATED:
            return disasm.ProbePoint(ins.addr, True, "simulated, before exit_group")
    for ins, kind in before:
        if kind == disasm.STEPPED:
            return disasm.ProbePoint(ins.addr, False, f"`{ins.mnemonic}` before exit_group: "
                                     "single-stepped, once per program")
    raise BadInput(f"{gb.img.name}: nothing before runtime.exit's SVC can be probed; cannot "
                   "hold it at exit")


class ProgramHandler(Protocol):
    """What run does with the programs of the tree (commands/run.py)."""

    def started(self, pid: int, info: ProgramInfo) -> int | None:
        """A selected Go program, stopped before its first instruction: trace it; return the
        link-time address to hold it at (exit_probe), or None when it could not be traced."""

    def skipped(self, pid: int, info: ProgramInfo) -> None:
        """A Go program left out (toolchain or --match): released at once."""

    def held(self, pid: int, code: int) -> None:
        """A traced program at runtime.exit(code), all its threads stopped: read it now."""

    def ended(self, pid: int, how: str) -> None:
        """A traced program ended without being held ("exited", "exec") or still runs when
        the command ended ("running")."""


@dataclass
class RunStats:
    """How much the tree was disturbed: every exec stops until we release it."""

    execs: int = 0
    go_programs: int = 0
    traced: int = 0
    held: int = 0
    stop_ms: list[float] = field(default_factory=list)  # exec -> release, untraced programs

    def to_json(self) -> dict[str, object]:
        ms = sorted(self.stop_ms)
        return {"execs": self.execs, "go_programs": self.go_programs, "traced": self.traced,
                "held_at_exit": self.held,
                "untraced_stop_ms_median": round(ms[len(ms) // 2], 3) if ms else None,
                "untraced_stop_ms_max": round(ms[-1], 3) if ms else None}


def _task_states(pid: int) -> list[str]:
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        out.append(stat[stat.rfind(b")") + 2 :].split(b" ", 1)[0].decode())
    return out


def wait_all_stopped(pid: int, timeout_s: float = STOPPED_WAIT_S) -> bool:
    """Whether every thread of pid is stopped (group stop complete) within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = _task_states(pid)
        if not states:
            return False
        if all(s in ("T", "t", "Z", "X") for s in states):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)


@dataclass
class _Starting:
    """A selected program being attached by the worker thread; it stays stopped meanwhile."""

    job: Future[int | None]
    target: Target
    stop: RunStop


class Launcher:
    """One command and its process tree, followed from its first exec to its end.

    Attaching a program's tracer takes a BPF compile (~0.5 s of CPU): it runs on one worker
    thread (clang runs outside the GIL), so that every other program of the tree, the
    compiler and linker of `go test` included, is released at once meanwhile.
    """

    def __init__(self, tracer: RunTracer, handler: ProgramHandler, select: Selector) -> None:
        self.tracer = tracer
        self.handler = handler
        self.select = select
        self.stats = RunStats()
        self.root = 0
        self.traced: dict[int, Target] = {}
        self._starting: dict[int, _Starting] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._infos: dict[tuple[int, int, int, int], ProgramInfo] = {}
        self.lost = (0, 0)  # (forks not followed, stops not made), read at the end
        self._exec = const("RUN_STOP_EXEC")
        self._exit = const("RUN_STOP_EXIT")

    # -- the command ---------------------------------------------------------------------------

    def start(self, argv: Sequence[str], *, stdout_to_stderr: bool = False) -> int:
        """Fork, stop the child before it execs argv, add it to the followed tree, let it go.

        subprocess.Popen cannot do this: it waits for the exec to report success, and the
        child is stopped before it.
        """
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: only async-signal-safe work until exec
            try:
                os.close(r)
                os.set_inheritable(w, False)
                for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
                    signal.signal(s, signal.SIG_DFL)
                if stdout_to_stderr:
                    os.dup2(2, 1)
                os.kill(os.getpid(), signal.SIGSTOP)
                os.execvp(argv[0], list(argv))
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.write(w, (e.strerror or str(e)).encode())
            finally:
                os._exit(127)
        os.close(w)
        _, status = os.waitpid(pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            os.close(r)
            raise BadInput(f"cannot start {argv[0]}: it ended before it could be followed")
        self.root = pid
        self.tracer.follow(pid)
        os.kill(pid, signal.SIGCONT)
        # The pipe closes at the exec (close-on-exec), before the exec stop; or it says why
        # the exec failed.
        said = b""
        while chunk := os.read(r, 4096):
            said += chunk
        os.close(r)
        if said:
            os.waitpid(pid, 0)
            raise BadInput(f"cannot run {argv[0]}: {said.decode(errors='replace')}")
        return pid

    def poll_root(self) -> int | None:
        """The command's exit status once it ended (128+N for signal N), else None."""
        try:
            pid, status = os.waitpid(self.root, os.WNOHANG)
        except ChildProcessError:
            return 255
        if pid == 0:
            return None
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code

    # -- the loop ------------------------------------------------------------------------------

    def run(self, forward: Callable[[], int | None]) -> int:
        """Serve stops until the command ends; returns its exit status. forward() returns a
        signal to pass on to the command (one gotrace received and it did not), or None."""
        status: int | None = None
        forwarded: set[int] = set()
        try:
            while status is None:
                self.serve()
                self.check_traced()
                sig = forward()
                if sig is not None and sig not in forwarded:
                    forwarded.add(sig)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.root, sig)
                status = self.poll_root()
                if status is None:
                    self.tracer.wait(STARTING_POLL_S if self._starting else POLL_S)
            self.finish()
            self.lost = self.tracer.lost()
        finally:
            self.release_all()
        return status

    def serve(self) -> None:
        """Handle every stop recorded so far, and the programs whose attach completed."""
        for stop in self.tracer.stops():
            if stop.pid in self._starting:
                continue
            if stop.kind == self._exec:
                self._on_exec(stop)
            elif stop.kind == self._exit:
                self._on_exit(stop)
            else:
                self._release(stop.pid)
        for pid, st in list(self._starting.items()):
            if st.job.done():
                del self._starting[pid]
                self._started(pid, st)

    def check_traced(self) -> None:
        for pid, target in list(self.traced.items()):
            how = target.gone()
            if how is not None:
                del self.traced[pid]
                self._ended(pid, how)

    def finish(self) -> None:
        """The command ended: stop following, release what is stopped, say what still runs."""
        self.tracer.detach_tree()
        for st in list(self._starting.values()):
            with contextlib.suppress(Exception):
                st.job.result()
        self.serve()
        self.serve()  # a hold hit between the last serve and the detach
        self.check_traced()
        for pid in list(self.traced):
            del self.traced[pid]
            self._ended(pid, "running")

    def release_all(self) -> None:
        """Whatever happens to gotrace, nothing it stopped stays stopped."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for pid in list(self._starting):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(Exception):
            for stop in self.tracer.stops():
                self._release(stop.pid)
        for pid in list(self.traced):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)

    def _ended(self, pid: int, how: str) -> None:
        with BCC_LOCK:
            self.tracer.unhold(pid)
            self.handler.ended(pid, how)

    def _release(self, pid: int) -> None:
        self.tracer.release(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    def _on_exec(self, stop: RunStop) -> None:
        pid = stop.pid
        self.stats.execs += 1
        old = self.traced.pop(pid, None)
        if old is not None:  # a traced program exec'd another one (or its PID was reused)
            self._ended(pid, old.gone() or "exec")
        info = self.inspect(pid)
        if info is not None and info.go_version is not None:
            self.stats.go_programs += 1
            if self.select(info):
                with contextlib.suppress(GotraceError):
                    target = Target.find(pid)
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gotrace-attach")
                    job = self._pool.submit(self._attach, pid, info)
                    self._starting[pid] = _Starting(job, target, stop)
                    return  # released once attached (serve)
            else:
                self.handler.skipped(pid, info)
        self.stats.stop_ms.append((time.monotonic_ns() - stop.ts_ns) / 1e6)
        self._release(pid)

    def _attach(self, pid: int, info: ProgramInfo) -> int | None:
        with BCC_LOCK:
            return self.handler.started(pid, info)

    def _started(self, pid: int, st: _Starting) -> None:
        """The worker attached (or failed to attach) pid's tracer: hold it at exit, let it go."""
        try:
            addr = st.job.result()
        except Exception:
            addr = None  # the handler reports its own failures; this is a bug's safety net
        if addr is not None:
            try:
                with BCC_LOCK:
                    self.tracer.hold_at_exit(pid, st.target.exe, addr)
            except GotraceError as e:
                self._ended(pid, f"not held at exit: {e}")
            else:
                self.traced[pid] = st.target
                self.stats.traced += 1
        self._release(pid)

    def _on_exit(self, stop: RunStop) -> None:
        pid = stop.pid
        if pid in self.traced:
            del self.traced[pid]
            self.stats.held += 1
            wait_all_stopped(pid)
            try:
                with BCC_LOCK:
                    self.tracer.unhold(pid)
                    self.handler.held(pid, stop.code)
            finally:
                self._release(pid)
        else:
            self._release(pid)

    def inspect(self, pid: int) -> ProgramInfo | None:
        """What pid runs now, from its executable's build info; cached per file."""
        exe = f"/proc/{pid}/exe"
        try:
            st = os.stat(exe)
            shown = os.readlink(exe)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        info = self._infos.get(key)
        if info is None:
            try:
                img = ElfImage(exe, shown)
            except (GotraceError, OSError, ValueError):
                info = ProgramInfo(shown, None)
            else:
                try:
                    bi = read_build_info(img)
                    info = ProgramInfo(shown, bi.go_version, bi.path,
                                       is_toolchain(bi.path, shown))
                except (GotraceError, ValueError, IndexError):
                    info = ProgramInfo(shown, None)
                finally:
                    img.close()
            self._infos[key] = info
        return info if info.exe == shown else ProgramInfo(shown, info.go_version, info.path,
                                                          is_toolchain(info.path, shown))
