"""Which processes of this host are Go programs, and which container each one runs in.

`gotrace agent` polls /proc about once a second. A process is a Go program when its
executable carries Go build info (the check every command makes when it opens a binary), never
because of its name. The verdict is cached per file, (st_dev, st_ino, mtime) of
/proc/PID/exe, so the many non-Go processes of a host are not read again at each poll, and a
process that exec's a Go program (a shell's `exec`, a container's init) is seen at the next
poll. Kernel threads and zombies have no executable and cost one failed stat.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass

from gotrace.binary.buildinfo import read_build_info
from gotrace.binary.elf import ElfImage

ExeKey = tuple[int, int, int]  # st_dev, st_ino, st_mtime_ns of the executable

# One path component naming a container: docker (cgroupfs: /docker/ID; systemd:
# docker-ID.scope), containerd (cri-containerd-ID.scope; cgroupfs: /kubepods/.../podUID/ID),
# cri-o (crio-ID.scope), podman (libpod-ID.scope, /libpod_parent/libpod-ID). conmon's own
# scope (crio-conmon-ID.scope, libpod-conmon-ID.scope) is not the container.
_CONTAINER = re.compile(
    r"^(?:(?:docker|cri-containerd|containerd|crio|libpod)-)?([0-9a-f]{64})(?:\.scope)?$")
# Kubernetes pod cgroups: kubepods-burstable-pod<uid with _>.slice (systemd driver) or
# /kubepods/burstable/pod<uid> (cgroupfs driver).
_POD = re.compile(r"pod([0-9a-f]{8}(?:[-_][0-9a-f]{4}){3}[-_][0-9a-f]{12})(?:\.slice)?$")
VERDICTS = 4096  # executables whose verdict is remembered (least recently seen dropped)


@dataclass(frozen=True)
class Container:
    """Labels of the container a process runs in; empty outside containers."""

    container_id: str = ""
    pod_uid: str = ""


def _parse_path(path: str) -> Container:
    cid = pod = ""
    for part in reversed(path.split("/")):  # innermost first: nested runtimes, podman's
        if not cid:                        # libpod-ID.scope/container
            m = _CONTAINER.match(part)
            if m:
                cid = m[1]
        if not pod:
            m = _POD.search(part)
            if m:
                pod = m[1].replace("_", "-")
    return Container(cid, pod)


def parse_cgroup(text: str) -> Container:
    """The container id and pod UID in /proc/PID/cgroup, cgroup v2's line first, then v1's
    (hybrid hosts). Paths outside the reader's cgroup namespace start with /.. : harmless."""
    paths = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths.append((parts[0] != "0", parts[2]))
    paths.sort(key=lambda p: p[0])  # stable: v2 first, v1 hierarchies in the kernel's order
    pod = ""
    for _, path in paths:
        found = _parse_path(path)
        if found.container_id:
            return Container(found.container_id, found.pod_uid or pod)
        pod = pod or found.pod_uid
    return Container("", pod)


def container_of(pid: int) -> Container:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return parse_cgroup(f.read())
    except OSError:
        return Container()


def exe_name(display: str) -> str:
    """The `exe` label: the binary's base name, as the process sees its path."""
    return os.path.basename(display.removesuffix(" (deleted)")) or display


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _exe_key(pid: int) -> ExeKey | None:
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:  # a kernel thread, a zombie, gone, or not ours to see
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def _is_go(fd: int, name: str) -> bool:
    """Go build info in the file open at fd. Anything unreadable as a Go ELF is not Go."""
    try:
        img = ElfImage(f"/proc/self/fd/{fd}", name)
    except Exception:
        return False
    try:
        read_build_info(img)
        return True
    except Exception:
        return False
    finally:
        img.close()


@dataclass(frozen=True)
class GoProcess:
    """A Go process selected for tracing (the same one while pid and start_time hold)."""

    pid: int
    start_time: int
    exe_key: ExeKey


class Discovery:
    """Polls /proc for Go processes whose exe path or command line match a regex."""

    def __init__(self, match: re.Pattern[str] | None = None, *,
                 proc: str = "/proc", verdicts: int = VERDICTS) -> None:
        self.match = match
        self.proc = proc
        self.max_verdicts = verdicts
        self.verdicts: OrderedDict[ExeKey, bool] = OrderedDict()
        self.files_read = 0  # executables read for their build info (cache misses)
        # pid -> (start time, exe key, selected): the last poll's decision, kept while both hold
        self._known: dict[int, tuple[int, ExeKey, bool]] = {}
        self._self = os.getpid()

    def poll(self) -> dict[int, GoProcess]:
        """Every selected Go process now running, by PID."""
        out: dict[int, GoProcess] = {}
        known: dict[int, tuple[int, ExeKey, bool]] = {}
        try:
            names = os.listdir(self.proc)
        except OSError:
            return out
        for name in names:
            if not name.isdigit():
                continue
            pid = int(name)
            if pid == self._self:
                continue
            key = _exe_key(pid)
            if key is None:
                continue
            start = _start_time(pid)
            if start is None:
                continue
            old = self._known.get(pid)
            if old is not None and old[0] == start and old[1] == key:
                selected = old[2]
                if key in self.verdicts:  # still in use: not the next one dropped
                    self.verdicts.move_to_end(key)
            else:
                got = self._verdict(pid, key)
                if got is None:
                    continue
                key, go = got
                selected = go and self._matches(pid)
            known[pid] = (start, key, selected)
            if selected:
                out[pid] = GoProcess(pid, start, key)
        self._known = known
        return out

    def _verdict(self, pid: int, key: ExeKey) -> tuple[ExeKey, bool] | None:
        """(key, is Go) of the file that /proc/PID/exe names now: on a cache miss the key is
        taken again from the very file read, so an exec in between cannot mislabel a file."""
        cached = self.verdicts.get(key)
        if cached is not None:
            self.verdicts.move_to_end(key)
            return key, cached
        exe = f"{self.proc}/{pid}/exe"
        try:
            fd = os.open(exe, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns)
            go = self.verdicts.get(key)
            if go is None:
                go = _is_go(fd, exe)
                self.files_read += 1
        finally:
            os.close(fd)
        self.verdicts[key] = go
        self.verdicts.move_to_end(key)
        while len(self.verdicts) > self.max_verdicts:
            self.verdicts.popitem(last=False)
        return key, go

    def _matches(self, pid: int) -> bool:
        if self.match is None:
            return True
        try:
            exe = os.readlink(f"{self.proc}/{pid}/exe")
            with open(f"{self.proc}/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return False
        return bool(self.match.search(exe) or self.match.search(cmdline))
