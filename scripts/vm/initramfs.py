"""The vmtest guest's initramfs: busybox, the modules that mount the host's root, stage 1.

Debian's kernel has virtio, 9p and overlayfs as modules, so the guest cannot mount the host's
filesystem without them; Debian's own initrd cannot mount a 9p root. This one is a few MB,
written directly in the cpio "newc" format (no cpio binary needed) and cached per kernel.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import stat
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGE1 = HERE / "initramfs-init"
BUSYBOX = Path("/bin/busybox")  # busybox-static: one statically linked binary
# virtio-pci for the 9p devices, 9p over virtio for the host's root and the job directory,
# overlay for the writable layer. Their dependencies are added in load order.
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")


def module_paths(release: str) -> list[Path]:
    """The .ko files of MODULES and their dependencies, in the order to load them."""
    seen: list[Path] = []
    for name in MODULES:
        out = subprocess.run(
            ["modprobe", "-S", release, "--show-depends", name],
            capture_output=True, text=True, check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"module {name} not found for kernel {release}: "
                               f"{out.stderr.strip()}")
        for line in out.stdout.splitlines():
            words = line.split()
            if words[:1] == ["insmod"]:
                path = Path(words[1])
                if path not in seen:
                    seen.append(path)
            # "builtin NAME": compiled into the kernel, nothing to load
    return seen


def module_bytes(path: Path) -> tuple[str, bytes]:
    """(file name to store, uncompressed contents): busybox insmod wants plain .ko files."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return path.stem, lzma.decompress(data)
    if path.suffix == ".zst":
        zstd = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True)
        return path.stem, zstd.stdout
    return path.name, data


class Newc:
    """A cpio archive in the "newc" format the kernel unpacks into its rootfs."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"",
               rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out += name.encode() + b"\0"
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


def build(release: str) -> bytes:
    return archive(BUSYBOX.read_bytes(), module_paths(release), STAGE1.read_bytes())


def archive(busybox: bytes, modules: list[Path], stage1: bytes) -> bytes:
    """The initramfs of either guest (x86-64 here, arm64 in arm64.py): a static busybox, the
    kernel modules in load order (listed in /modules) and stage 1 as /init."""
    out = Newc()
    for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules"):
        out.dir(d)
    # The kernel opens /dev/console for init before anything mounts devtmpfs.
    out.chardev("dev/console", 5, 1)
    out.file("bin/busybox", busybox, 0o755)
    out.symlink("bin/sh", "busybox")
    order = []
    for path in modules:
        name, data = module_bytes(path)
        out.file(f"lib/modules/{name}", data)
        order.append(name)
    out.file("modules", "".join(f"{n}\n" for n in order).encode())
    out.file("init", stage1, 0o755)
    return out.finish()


def cached(release: str, cache_dir: Path) -> Path:
    """Path of the initramfs for `release`, rebuilt when stage 1, busybox or a module changes."""
    key = hashlib.sha256()
    for p in (STAGE1, BUSYBOX, Path(__file__)):
        st = p.stat()
        key.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    key.update(STAGE1.read_bytes())
    modules_dep = Path("/lib/modules") / release / "modules.dep"
    if modules_dep.exists():
        key.update(str(modules_dep.stat().st_mtime_ns).encode())
    out = cache_dir / f"initramfs-{release}-{key.hexdigest()[:12]}.cpio"
    if not out.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        for old in cache_dir.glob(f"initramfs-{release}-*.cpio"):
            old.unlink()
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(build(release))
        tmp.rename(out)
    return out
