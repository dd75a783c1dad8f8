"""Can this machine trace? Each check says what is wrong and how to fix it, in one line."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass

from gotrace.errors import CannotTrace

CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
TRACEFS = "/sys/kernel/tracing"
YAMA = "/proc/sys/kernel/yama/ptrace_scope"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def check_privileges() -> Check:
    if os.geteuid() == 0 or _effective_caps() & (1 << CAP_SYS_ADMIN):
        return Check("privileges", True, "root / CAP_SYS_ADMIN")
    return Check("privileges", False, "not root and no CAP_SYS_ADMIN",
                 "run as root: sudo gotrace ... (creating uprobes needs CAP_SYS_ADMIN)")


def check_lockdown() -> Check:
    try:
        with open("/sys/kernel/security/lockdown") as f:
            mode = f.read()
    except OSError:
        return Check("lockdown", True, "no lockdown")
    if "[confidentiality]" in mode:
        return Check("lockdown", False, "kernel lockdown is 'confidentiality'",
                     "boot with lockdown=integrity or none (e.g. disable Secure Boot lockdown)")
    return Check("lockdown", True, mode.strip())


def kernel_has(*functions: str) -> set[str]:
    """Which of these kernel functions /proc/kallsyms lists (features with no other sign)."""
    wanted = {f" {f}\n" for f in functions}
    found: set[str] = set()
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                tail = line[line.rfind(" "):]
                if tail in wanted:
                    found.add(tail.strip())
    except OSError:
        pass
    return found


def check_uprobes() -> Check:
    if not os.path.isdir("/sys/bus/event_source/devices/uprobe"):
        return Check("uprobes", False, "this kernel has no uprobe PMU",
                     "use a kernel built with CONFIG_UPROBE_EVENTS=y (Linux 4.17+)")
    has = kernel_has("arch_uprobe_optimize", "bpf_uprobe_multi_link_attach")
    # Optimized uprobes: no trap on a 5-byte nop (docs/go-runtime.md#why-emulated-instructions).
    # uprobe_multi links: attach takes its go statement probes off in one grace period
    # (docs/go-runtime.md#creation-stacks-at-the-go-statement).
    return Check("uprobes", True, "uprobe PMU present" + (
        "; optimized uprobes (no trap on a 5-byte nop)"
        if "arch_uprobe_optimize" in has else "") + (
        "; uprobe_multi links" if "bpf_uprobe_multi_link_attach" in has else
        "; no uprobe_multi links (Linux < 6.6): attach's go statement probes come off one "
        "by one, ~0.1 s each"))


def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401
    except ImportError:
        return Check("bcc", False, "the BCC Python module is not importable here",
                     "run sudo scripts/setup, or apt-get install python3-bpfcc and use "
                     "/usr/bin/python3 (or a venv made with --system-site-packages)")
    except Exception as e:  # a broken libbcc raises at import time
        return Check("bcc", False, f"BCC fails to load: {e}", "reinstall python3-bpfcc")
    return Check("bcc", True, "python3-bpfcc importable")


def check_headers() -> Check:
    release = platform.release()
    build = f"/lib/modules/{release}/build"
    if os.path.isdir(os.path.join(build, "include")):
        return Check("kernel headers", True, f"{build} -> {os.path.realpath(build)}")
    return Check("kernel headers", False, f"no kernel headers at {build}",
                 f"apt-get install linux-headers-{release}, or link {build} to "
                 "/usr/src/linux-headers-<ver>-amd64 (sudo scripts/setup does this)")


def check_tracefs(fix_it: bool) -> Check:
    if os.path.exists(f"{TRACEFS}/uprobe_events"):
        return Check("tracefs", True, f"mounted at {TRACEFS}")
    if fix_it and os.geteuid() == 0 and os.path.isdir(TRACEFS):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS],
                       capture_output=True, check=False)
        if os.path.exists(f"{TRACEFS}/uprobe_events"):
            return Check("tracefs", True, f"mounted at {TRACEFS} (by gotrace)")
    return Check("tracefs", False, "tracefs not mounted (BCC complains when detaching)",
                 f"mount -t tracefs nodev {TRACEFS}")


def check_memory_access() -> Check:
    """Reading another process's memory (attach's memory reads, --no-bpf, dump) needs ptrace
    rights: root or CAP_SYS_PTRACE, and a Yama ptrace scope below 3."""
    try:
        with open(YAMA) as f:
            scope = int(f.read().strip() or 0)
    except (OSError, ValueError):
        scope = 0
    if scope >= 3:
        return Check("memory reads", False, "kernel.yama.ptrace_scope is 3: no process may read "
                     "another's memory", "sysctl kernel.yama.ptrace_scope=1 (3 needs a reboot)")
    if os.geteuid() == 0 or _effective_caps() & (1 << CAP_SYS_PTRACE):
        return Check("memory reads", True, f"root / CAP_SYS_PTRACE (ptrace scope {scope})")
    return Check("memory reads", False, "not root and no CAP_SYS_PTRACE",
                 "run as root, or grant CAP_SYS_PTRACE (containers: securityContext "
                 "capabilities add SYS_PTRACE)")


def tracing_checks(fix_tracefs: bool = True) -> list[Check]:
    return [check_privileges(), check_lockdown(), check_uprobes(), check_bcc(),
            check_headers(), check_tracefs(fix_tracefs)]


def require_tracing() -> None:
    """Raise the first blocking problem as CannotTrace (exit 3). tracefs is only a nuisance."""
    for c in tracing_checks():
        if not c.ok and c.name != "tracefs":
            raise CannotTrace(f"{c.detail}: {c.fix}")
