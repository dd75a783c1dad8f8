"""scripts/vmtest: run pytest as root inside a qemu VM on a second kernel (Debian's, by default).

The guest sees the host's whole filesystem read-only over 9p, under an overlay whose upper layer
is guest RAM: the venv, the Go toolchains, the build cache and this checkout are used as they
are, anything the tests write stays in the guest. Test output streams from the guest's second
serial port; its exit code comes back through a small read-write 9p share (the job directory).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import initramfs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STAGE2 = HERE / "init"
VM_CACHE = Path(os.environ.get("GOTRACE_TOOLS", "/var/cache/gotrace")) / "vm"
KERNEL_META = "linux-image-amd64"  # Debian 12: 6.1
STAGE1_MARK = b"[vmtest-guest] stage1"
PASSED_ENV = ("CI", "PYTEST_ADDOPTS")  # and every GOTRACE_* variable
USAGE = """\
usage: scripts/vmtest [OPTIONS] [--] [PYTEST ARGS...]

Boots a Linux kernel in qemu with the host's filesystem visible (read-only, with a writable
overlay in guest RAM), runs `pytest PYTEST ARGS` as root in this checkout inside it, streams its
output and exits with pytest's exit code.

options (before the pytest arguments):
  --timeout SECONDS   stop the VM and fail after this long, boot included (default 1800)
  --accel auto|kvm|tcg
                      auto (default): KVM when /dev/kvm works and the guest boots under it
                      within --kvm-probe seconds, else TCG (software emulation)
  --kvm-probe SECONDS how long KVM gets to reach the guest's init (default 20)
  --kernel RELEASE    guest kernel /boot/vmlinuz-RELEASE (default: the one of Debian's
                      linux-image-amd64, installed with its headers when missing)
  --memory MIB        guest memory (default 4096)
  --cpus N            guest vCPUs (default 2)
  --keep              keep the job directory (console log, output) for inspection
  --command CMD       run `bash -c CMD` in the guest instead of pytest (venv first on PATH),
                      e.g. --command 'gotrace doctor'
  --arch amd64|arm64  amd64 (default): the kernel above with the host's userland; arm64:
                      Debian's arm64 kernel under qemu-system-aarch64 (TCG) on an arm64
                      Debian root filesystem built once under $GOTRACE_TOOLS/vm/arm64
                      (see scripts/vm/arm64.py)

exit codes: pytest's; 3 the VM could not be set up or booted; 124 timeout.
"""


class Failure(Exception):
    """A problem with the VM itself (not the tests): one line for the user, and an exit code."""

    def __init__(self, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Options:
    timeout: float = 1800.0
    accel: str = "auto"
    kvm_probe: float = 20.0
    kernel: str | None = None
    memory: int = 4096
    cpus: int = 2
    keep: bool = False
    command: str | None = None
    arch: str = "amd64"
    pytest_args: list[str] = field(default_factory=list)


def parse(argv: list[str]) -> Options:
    """vmtest's own options come first; everything from the first other word goes to pytest."""
    opts = Options()
    valued = {"--timeout", "--accel", "--kvm-probe", "--kernel", "--memory", "--cpus", "--command",
              "--arch"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if arg in ("-h", "--help"):
            print(USAGE, end="")
            sys.exit(0)
        if arg == "--":
            i += 1
            break
        if arg == "--keep":
            opts.keep = True
            i += 1
            continue
        if name not in valued:
            break
        if eq:
            value = inline
            i += 1
        elif i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
        else:
            raise Failure(f"{name} needs a value (see scripts/vmtest --help)", 2)
        try:
            if name == "--timeout":
                opts.timeout = float(value)
            elif name == "--kvm-probe":
                opts.kvm_probe = float(value)
            elif name == "--memory":
                opts.memory = int(value)
            elif name == "--cpus":
                opts.cpus = int(value)
            elif name == "--kernel":
                opts.kernel = value
            elif name == "--command":
                opts.command = value
            elif name == "--arch":
                if value not in ("amd64", "arm64"):
                    raise ValueError(value)
                opts.arch = value
            elif value in ("auto", "kvm", "tcg"):
                opts.accel = value
            else:
                raise ValueError(value)
        except ValueError:
            raise Failure(f"bad value for {name}: {value!r} (see scripts/vmtest --help)",
                          2) from None
    opts.pytest_args = argv[i:]
    if opts.command is not None and opts.pytest_args:
        raise Failure("--command replaces pytest: give no pytest arguments with it", 2)
    return opts


def say(message: str) -> None:
    print(f"\033[1;35m[vmtest]\033[0m {message}" if sys.stderr.isatty() else f"[vmtest] {message}",
          file=sys.stderr, flush=True)


def installed(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                         capture_output=True, text=True, check=False)
    return "install ok installed" in out.stdout


def ensure_packages(packages: list[str]) -> None:
    need = [p for p in packages if not installed(p)]
    if not need:
        return
    say(f"installing {' '.join(need)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need],
                          env=env, stdout=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise Failure(f"apt-get install {' '.join(need)} failed")


def default_release() -> str:
    """The kernel release linux-image-amd64 depends on, e.g. 6.1.0-56-amd64."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", KERNEL_META],
                         capture_output=True, text=True, check=False).stdout
    for dep in out.split(","):
        name = dep.strip().split()[0] if dep.strip() else ""
        if name.startswith("linux-image-") and name != KERNEL_META:
            return name.removeprefix("linux-image-")
    raise Failure(f"cannot tell which kernel {KERNEL_META} installs (dpkg says {out!r})")


def prepare_kernel(opts: Options) -> tuple[str, Path]:
    """(release, vmlinuz): installs qemu, busybox, the kernel and its headers when missing."""
    ensure_packages(["qemu-system-x86", "busybox-static", *([] if opts.kernel else [KERNEL_META])])
    release = opts.kernel or default_release()
    vmlinuz = Path(f"/boot/vmlinuz-{release}")
    image = [] if vmlinuz.exists() else [f"linux-image-{release}"]
    ensure_packages([f"linux-headers-{release}", *image])
    if not vmlinuz.exists():
        raise Failure(f"no guest kernel {vmlinuz} (apt-get install linux-image-{release})")
    build = Path("/lib/modules") / release / "build"
    if not (build / "include" / "generated" / "autoconf.h").exists():
        raise Failure(f"{build} has no headers for the guest kernel: BCC could not compile in the "
                      f"guest (apt-get install linux-headers-{release})")
    return release, vmlinuz


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def command_script(opts: Options, accel: str) -> str:
    """The guest's job: pytest (or --command) in this checkout with the venv scripts/setup made.

    When our stdout is not a terminal (CI), the guest's output goes through a pipe too, so that
    pytest does not redraw lines as it does on a terminal. GOTRACE_VM_ACCEL (kvm or tcg) lets
    tests widen their waits under software emulation, where everything is 10-20x slower.
    """
    venv = Path(os.environ.get("GOTRACE_VENV", ROOT / ".venv"))
    tty = sys.stdout.isatty()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TERM": os.environ.get("TERM", "xterm") if tty else "dumb",
        "PY_COLORS": "1" if tty else "0",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": str(shutil.get_terminal_size((100, 24)).columns),
        "GOTRACE_VM_ACCEL": accel,
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("GOTRACE_") or k in PASSED_ENV})
    if opts.command is not None:
        argv = ["bash", "-c", opts.command]
    else:
        argv = [str(venv / "bin" / "python"), "-m", "pytest", *opts.pytest_args]
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines += [
        f"cd {shlex.quote(str(ROOT))} || exit 3",
        f"echo {shlex.quote('[vmtest-guest] $ ' + shlex.join(argv))}",
        f"exec {shlex.join(argv)}" if tty else f"set -o pipefail; {shlex.join(argv)} 2>&1 | cat",
    ]
    return "\n".join(lines) + "\n"


def qemu_argv(opts: Options, accel: str, vmlinuz: Path, initrd: Path, job: Path) -> list[str]:
    cmdline = "console=ttyS0 panic=-1 mitigations=off rdinit=/init"
    return [
        "qemu-system-x86_64",
        "-accel", "kvm" if accel == "kvm" else "tcg,thread=multi",
        "-cpu", "max",  # `-cpu host` aborts on these machines
        "-smp", str(opts.cpus), "-m", str(opts.memory),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", cmdline,
        "-chardev", f"file,id=console,path={job / 'console.log'}", "-serial", "chardev:console",
        "-chardev", f"file,id=out,path={job / 'out.log'}", "-serial", "chardev:out",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=job,path={job},security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=job,mount_tag=vmtestjob",
    ]


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_bytes().decode(errors="replace").replace("\r", "")
    except OSError:
        return "(none)"
    return "\n".join(text.splitlines()[-lines:])


class Boot:
    """One qemu run: streams the guest's test output to stdout until qemu exits or time is up."""

    def __init__(self, opts: Options, accel: str, argv: list[str], job: Path,
                 script: str | None = None) -> None:
        self.job = job
        for name in ("console.log", "out.log", "rc"):
            (job / name).unlink(missing_ok=True)
        (job / "command.sh").write_text(script if script is not None
                                        else command_script(opts, accel))
        (job / "out.log").touch()
        self.qemu_log = (job / "qemu.log").open("wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.qemu_log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.out = (job / "out.log").open("rb")
        self.started = time.monotonic()
        self.seen = b""  # output before stage 1 announced itself

    @property
    def reached_init(self) -> bool:
        return STAGE1_MARK in self.seen

    def pump(self) -> None:
        data = self.out.read()
        if data:
            if not self.reached_init:
                self.seen += data
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def run(self, deadline: float, probe: float | None = None) -> str:
        """"exited", "timeout", or "probe" when init was not reached within `probe` seconds."""
        while True:
            self.pump()
            if self.proc.poll() is not None:
                self.pump()
                return "exited"
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if probe is not None and not self.reached_init and now - self.started >= probe:
                return "probe"
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.out.close()
        self.qemu_log.close()


def host_setup() -> None:
    """scripts/setup on the host: the guest runs the venv, toolchains and binaries it makes."""
    if subprocess.run([str(ROOT / "scripts" / "setup")], check=False).returncode != 0:
        raise Failure("scripts/setup failed on the host (see above)")


def run(opts: Options) -> int:
    if os.geteuid() != 0:
        raise Failure("must run as root (it installs packages, boots qemu): "
                      "sudo scripts/vmtest")
    if opts.arch == "arm64":
        sys.modules.setdefault("vmtest", sys.modules[__name__])  # one Failure class for both
        import arm64  # its own root filesystem: no host setup needed

        return arm64.run(opts)
    host_setup()
    release, vmlinuz = prepare_kernel(opts)
    initrd = initramfs.cached(release, VM_CACHE)
    job = Path(tempfile.mkdtemp(prefix="gotrace-vmtest.", dir="/var/tmp"))
    started = time.monotonic()
    deadline = started + opts.timeout
    boot: Boot | None = None
    try:
        shutil.copy(STAGE2, job / "init")
        accel = opts.accel
        if accel == "auto":
            accel = "kvm" if kvm_usable() else "tcg"
            if accel == "tcg":
                say("no usable /dev/kvm: using TCG (software emulation)")
        say(f"booting {vmlinuz} under {accel.upper()}: {opts.cpus} vCPUs, {opts.memory} MiB, "
            f"time limit {opts.timeout:g}s")
        boot = Boot(opts, accel, qemu_argv(opts, accel, vmlinuz, initrd, job), job)
        probe = opts.kvm_probe if accel == "kvm" and opts.accel == "auto" else None
        outcome = boot.run(deadline, probe)
        if accel == "kvm" and opts.accel == "auto" and not boot.reached_init:
            boot.kill()
            why = (f"did not reach the guest's init within {opts.kvm_probe:g}s"
                   if outcome == "probe" else f"stopped during boot: {tail(job / 'qemu.log', 3)}")
            say(f"KVM {why} (KVM hangs at boot on some nested hosts): "
                "falling back to TCG (software emulation, slower)")
            accel = "tcg"
            boot = Boot(opts, accel, qemu_argv(opts, accel, vmlinuz, initrd, job), job)
            outcome = boot.run(deadline)
        return guest_rc(opts, boot, outcome, job, time.monotonic() - started,
                        f"{release} ({accel.upper()})")
    finally:
        clean_up(opts, boot, job)


def guest_rc(opts: Options, boot: Boot, outcome: str, job: Path, elapsed: float,
             kernel: str) -> int:
    """The exit code of a finished boot (both architectures): the guest's, 124 on timeout, 3
    when the guest stopped without one; one line says which."""
    if outcome == "timeout":
        boot.kill()
        say(f"timed out after {elapsed:.0f}s (--timeout {opts.timeout:g}): killed the VM; "
            f"last kernel messages:\n{tail(job / 'console.log')}")
        return 124
    rc_file = job / "rc"
    if not rc_file.exists():
        say(f"the guest stopped without an exit code after {elapsed:.0f}s (qemu status "
            f"{boot.proc.returncode}); qemu said:\n{tail(job / 'qemu.log', 5)}\n"
            f"last kernel messages:\n{tail(job / 'console.log')}")
        return 3
    rc = int(rc_file.read_text().strip() or "1")
    what = "the command" if opts.command is not None else "pytest"
    say(f"guest kernel {kernel}: {what} exited with {rc} after {elapsed:.0f}s")
    return rc


def clean_up(opts: Options, boot: Boot | None, job: Path) -> None:
    """Stop qemu and remove the job directory unless --keep."""
    if boot is not None:
        boot.kill()
    if opts.keep:
        say(f"job directory kept: {job}")
    else:
        shutil.rmtree(job, ignore_errors=True)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        opts = parse(sys.argv[1:])
        sys.exit(run(opts))
    except Failure as e:
        say(f"error: {e}")
        sys.exit(e.code)
    except KeyboardInterrupt:
        say("interrupted: VM stopped")
        sys.exit(130)


if __name__ == "__main__":
    main()
