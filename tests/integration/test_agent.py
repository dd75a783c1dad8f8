"""gotrace agent end to end: real Go processes, real probes, a real Prometheus server scraping
the agent every second, and its HTTP API queried as Grafana would.

One module-wide scene (Prometheus, an agent, go-leaky and parkers) serves the exact-count, label,
exit/appear, container and dashboard tests; the churn test runs its own agent. Every agent only
traces binaries copied into this run's temporary directory (--match), never the processes other
people run on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.gobuild import GO_VERSIONS, TARGETS, build_go, version_key
from tests.integration.goleaky import (
    GO_LEAKY_SRC,
    LEAKS,
    ROOT,
    SLOW,
    GoLeaky,
    Lines,
    expected_reason,
    leak_flags,
    markers,
)
from tests.integration.test_matrix import NamespacedGoLeaky

VERSION = max(GO_VERSIONS, key=version_key)
DASHBOARD = ROOT / "deploy" / "grafana" / "gotrace.json"
Vector = list[dict[str, Any]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0,
               every: float = 0.5) -> Any:
    """check() until it returns something true; its last value names the failure."""
    deadline = time.monotonic() + timeout * SLOW
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout * SLOW:g}s (last: {last!r})")


class Prometheus:
    """Debian's prometheus on a free port, scraping the given targets every second."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.port = free_port()
        workdir.mkdir(exist_ok=True)
        config = workdir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed.
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "gotrace",
                                "static_configs": [{"targets": targets}]}],
        }))
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "/usr/bin/prometheus",
             f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("prometheus ready", self._ready, timeout=60)

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{params}: {e.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> Vector:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Log:
    """Every line of a pipe, kept: wait_for finds a line whether it came already or comes
    later (the agent logs in its own order, tests look in theirs)."""

    def __init__(self, pipe: Any) -> None:
        self.lines: list[str] = []
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe: Any) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))
        self.ended.set()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout * SLOW
        seen = 0
        while True:
            ended = self.ended.is_set()
            lines = self.lines[:]
            for line in lines[seen:]:
                if rx.search(line):
                    return line
            seen = len(lines)
            if ended:
                raise EOFError(f"no line matching {pattern!r}; saw {lines[-10:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no line matching {pattern!r}; saw {lines[-10:]}")
            time.sleep(0.05)

    def __str__(self) -> str:
        return "\n".join(self.lines)


class Agent:
    """`gotrace agent` limited to one directory's binaries, its stderr kept line by line."""

    def __init__(self, match: str, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gotrace", "agent", "--listen", f"127.0.0.1:{self.port}",
             "--match", match, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1, cwd=ROOT)
        self.err = Log(self.proc.stderr)
        self.wait_for(r"metrics on http://")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        return self.err.wait_for(pattern, timeout)

    def traced(self, pid: int, timeout: float = 60.0) -> str:
        return self.wait_for(rf"tracing PID {pid} \(", timeout)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.err.ended.wait(10)
        return rc

    @property
    def log(self) -> str:
        return str(self.err)


def copy_binary(src: Path, into: Path) -> str:
    """A private copy (same base name, so the same exe label) that --match can select."""
    dst = into / src.name
    if not dst.exists():
        shutil.copy2(src, dst)
    return str(dst)


def run_parkers(binary: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([binary], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         bufsize=1)
    Lines(p.stdout).wait_for(r"^ready")
    return p


def stop_process(p: subprocess.Popen[str]) -> int:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def parkers_leak_go_line() -> int:
    src = (TARGETS / "parkers" / "main.go").read_text().splitlines()
    park = next(n for n, t in enumerate(src, 1) if t.rstrip().endswith("// park: leak"))
    go = next(n for n in range(park, 0, -1) if src[n - 1].strip().startswith("go "))
    return go


def by_line(vector: Vector, file: str = "main.go") -> dict[int, float]:
    """{line: value} of series whose go_site is in file (`function file:line`)."""
    out: dict[int, float] = {}
    for s in vector:
        m = re.fullmatch(rf".* {re.escape(file)}:(\d+)", s["metric"].get("go_site", ""))
        if m:
            out[int(m[1])] = out.get(int(m[1]), 0) + float(s["value"][1])
    return out


@dataclass
class Scene:
    prom: Prometheus
    agent: Agent
    bindir: Path
    leaky: GoLeaky
    leaky_exe: str
    parkers: subprocess.Popen[str]
    parkers_exe: str
    exits: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """Prometheus scraping an agent (threshold 3s, read every 1s, probe after 2s) that traces
    go-leaky and parkers; go-leaky makes its batch of leaks once its probe is attached."""
    work = tmp_path_factory.mktemp("agent")
    bindir = work / "bin"
    bindir.mkdir()
    leaky_bin = copy_binary(build_go(VERSION, GO_LEAKY_SRC, "plain"), bindir)
    parkers_bin = copy_binary(build_go(VERSION, TARGETS / "parkers", "plain"), bindir)
    agent = Agent(f"^{re.escape(str(bindir))}/", "--threshold", "3s", "--interval", "1s",
                  "--probe-after", "2s")
    prom = None
    leaky = parkers = None
    try:
        prom = Prometheus(work / "prometheus", [f"127.0.0.1:{agent.port}"])
        leaky = GoLeaky(leaky_bin, "-on-usr1", *leak_flags())
        parkers = run_parkers(parkers_bin)
        agent.traced(leaky.pid)
        agent.traced(parkers.pid)
        agent.wait_for(rf"PID {leaky.pid} \(.*\): go statement probes attached", timeout=90)
        leaky.signal(signal.SIGUSR1)  # the leaks are born under the probe
        leaky.out.wait_for(r"^batch 1 made")
        scene = Scene(prom, agent, bindir, leaky, Path(leaky_bin).name, parkers,
                      Path(parkers_bin).name)
        yield scene
    finally:
        rcs = {}
        if leaky is not None:
            rcs["go-leaky"] = leaky.stop()
        if parkers is not None:
            rcs["parkers"] = stop_process(parkers)
        rcs["agent"] = agent.stop()
        if prom is not None:
            prom.stop()
    assert "Traceback" not in agent.log, agent.log
    assert rcs == dict.fromkeys(rcs, 0), (rcs, agent.log)
    assert re.search(r"stopped; detached from \d+ process", agent.log), agent.log


def leak_sites(scene: Scene) -> dict[int, float]:
    """go-leaky's suspects per go line, the idle goroutines (parked by design) left out."""
    idle = set(markers()["idle"].values())
    got = by_line(scene.prom.query(
        f'sum by (go_site) (gotrace_leak_suspects{{exe="{scene.leaky_exe}"}})'))
    return {line: n for line, n in got.items() if line not in idle}


def test_prometheus_shows_exactly_the_leaks(scene: Scene) -> None:
    lines = markers()["leak"]
    want = {lines[k]: float(n) for k, n in LEAKS.items()}
    wait_until("the leaks in Prometheus", lambda: leak_sites(scene) == want or leak_sites(scene))
    assert leak_sites(scene) == want
    # Grouped as attach groups them: each leak under its own wait reason.
    reasons = scene.prom.query(
        f'sum by (go_site, wait_reason) (gotrace_leak_suspects{{exe="{scene.leaky_exe}"}})')
    for kind, line in lines.items():
        got = [s["metric"]["wait_reason"] for s in reasons
               if s["metric"]["go_site"].endswith(f" main.go:{line}")]
        assert got == [expected_reason(kind, VERSION)], (kind, got)
    # Live goroutines per go statement: at least the leaks, and they add up to the total.
    live = by_line(scene.prom.query(
        f'gotrace_site_goroutines{{exe="{scene.leaky_exe}"}}'))
    assert all(live[line] >= n for line, n in want.items())
    pid = str(scene.leaky.pid)
    total = scene.prom.query(f'gotrace_goroutines{{pid="{pid}"}}')
    summed = scene.prom.query(f'sum(gotrace_site_goroutines{{pid="{pid}"}})')
    assert float(total[0]["value"][1]) == float(summed[0]["value"][1])
    # Creations counted from the goids: the batch at least.
    created = scene.prom.query(f'gotrace_goroutines_created_total{{pid="{pid}"}}')
    assert float(created[0]["value"][1]) >= sum(LEAKS.values())
    lost = scene.prom.query(f'gotrace_events_lost_total{{pid="{pid}"}}')
    assert len(lost) == 7 and all(float(s["value"][1]) == 0 for s in lost), lost


def test_each_process_carries_its_own_pid_and_exe(scene: Scene) -> None:
    leak_go = parkers_leak_go_line()
    pid = str(scene.parkers.pid)

    def parkers_leak() -> dict[int, float]:
        return by_line(scene.prom.query(
            f'sum by (go_site) (gotrace_leak_suspects{{exe="{scene.parkers_exe}"}})'))

    wait_until("parkers' leak", lambda: parkers_leak().get(leak_go) == 3 or parkers_leak())
    for metric in ("gotrace_goroutines", "gotrace_site_goroutines", "gotrace_leak_suspects",
                   "gotrace_goroutines_created_total", "gotrace_goroutines_exited_total",
                   "gotrace_events_lost_total"):
        pairs = {(s["metric"]["pid"], s["metric"]["exe"])
                 for s in scene.prom.query(f'{metric}{{job="gotrace"}}')}
        assert pairs == {(pid, scene.parkers_exe), (str(scene.leaky.pid), scene.leaky_exe)}, \
            (metric, pairs)
    assert not scene.prom.query('{__name__=~"go_.*", job="gotrace"}')
    targets = scene.prom.query("gotrace_targets")
    assert len(targets) == 1 and "pid" not in targets[0]["metric"]
    info = scene.prom.query("gotrace_build_info")
    assert info[0]["metric"]["version"] and float(info[0]["value"][1]) == 1


def test_an_exited_process_disappears_and_a_new_one_appears(scene: Scene) -> None:
    binary = str(scene.bindir / scene.parkers_exe)
    started = time.monotonic()
    p = run_parkers(binary)
    try:
        pid = str(p.pid)
        expr = f'gotrace_goroutines{{pid="{pid}"}}'
        wait_until("the new process in Prometheus", lambda: scene.prom.query(expr),
                   timeout=15, every=0.2)
        # Traced within ~1 s of its start (one poll), in Prometheus at the next scrape.
        assert time.monotonic() - started < 5 * SLOW
        assert scene.prom.query('gotrace_targets')[0]["value"][1] == "3"
    finally:
        assert stop_process(p) == 0
    gone = time.monotonic()
    wait_until("the exited process gone from Prometheus", lambda: not scene.prom.query(expr),
               timeout=15, every=0.2)
    assert time.monotonic() - gone < 5 * SLOW
    assert not scene.prom.query(f'{{pid="{pid}"}}')  # no stale series of any metric
    scene.agent.wait_for(rf"PID {pid} \(parkers-.*\) exited")


def cgroup2_root() -> Path:
    with open("/proc/mounts") as f:
        for line in f:
            _dev, mnt, fstype, *_ = line.split()
            if fstype == "cgroup2":
                return Path(mnt)
    pytest.fail("no cgroup2 hierarchy mounted: cannot place a process in a container's cgroup",
                pytrace=False)


class ContainedGoLeaky(NamespacedGoLeaky):
    """NamespacedGoLeaky born in a cgroup (the preexec writes its PID into cgroup.procs before
    unshare runs): what /proc/PID/cgroup shows for a process of a docker container."""

    def __init__(self, binary: str, mountpoint: Path, cgroup: Path, *args: str) -> None:
        self.inside = mountpoint / "app" / "go-leaky"
        script = (f'mount -t tmpfs gotrace-test "{mountpoint}" && mkdir "{mountpoint}/app" && '
                  f'cp "{binary}" "{self.inside}" && exec "{self.inside}" "$@"')
        procs = cgroup / "cgroup.procs"

        def enter() -> None:
            procs.write_text(str(os.getpid()))

        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c", script, "sh",
             *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
            preexec_fn=enter)
        self.out = Lines(self.proc.stdout)
        self.inner_pid = int(self.out.wait_for(r"^go-leaky pid=").split()[1].split("=")[1])
        self.out.wait_for(r"^ready")
        self.host_pid = self._child(self.proc.pid)


def test_a_container_process_is_found_and_labelled(scene: Scene) -> None:
    """Own PID and mount namespaces, its binary on a tmpfs the host cannot see, in a cgroup
    shaped as docker's (systemd driver): labelled with the container id and the host PID."""
    cid = secrets.token_hex(32)
    root = cgroup2_root()
    scope = root / "system.slice" / f"docker-{cid}.scope"
    made = [d for d in (scope.parent, scope) if not d.exists()]
    for d in made:
        d.mkdir()
    mnt = Path(tempfile.mkdtemp(dir=scene.bindir))  # matched by the agent's --match
    target = None
    try:
        target = ContainedGoLeaky(str(scene.bindir / scene.leaky_exe), mnt, scope, "-busy=false")
        with open(f"/proc/{target.host_pid}/cgroup") as f:
            cgroup = f.read().splitlines()
        assert f"0::/system.slice/docker-{cid}.scope" in cgroup, cgroup
        assert target.inner_pid == 1
        line = scene.agent.traced(target.host_pid)
        assert f"container {cid[:12]}" in line, line
        series = wait_until("the container's series", lambda: scene.prom.query(
            f'gotrace_goroutines{{container_id="{cid}"}}'), timeout=15, every=0.2)
        assert [s["metric"]["pid"] for s in series] == [str(target.host_pid)]
        assert series[0]["metric"]["exe"] == "go-leaky"  # the path it runs from, inside
        assert "pod_uid" not in series[0]["metric"]  # not on Kubernetes: empty label
    finally:
        if target is not None:
            assert target.stop() == 0
        for d in reversed(made):
            wait_until(f"rmdir {d}", partial(_rmdir, d), timeout=10, every=0.2)
        with contextlib.suppress(OSError):
            os.rmdir(mnt)


def _rmdir(d: Path) -> bool:
    try:
        d.rmdir()
        return True
    except OSError:
        return False


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            walk(p.get("panels", []))
            out.extend((p["title"], t["expr"]) for t in p.get("targets", []))

    walk(board["panels"])
    return out


def substitute(expr: str, exe: str, pid: str) -> str:
    return (expr.replace("$exe", exe).replace("$pid", pid)
            .replace("$__rate_interval", "30s").replace("$__interval", "5s"))


def test_every_dashboard_query_returns_its_series(scene: Scene) -> None:
    """Each query, with $exe and $pid set to go-leaky as a user would pick them, returns
    go-leaky's series; the variables' own queries offer go-leaky."""
    wait_until("the leaks in Prometheus", lambda: len(leak_sites(scene)) >= len(LEAKS))
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"exe", "pid", "datasource"} <= set(variables)
    exes = scene.prom.api("label/exe/values", **{"match[]": "gotrace_goroutines"})
    assert scene.leaky_exe in exes
    assert re.fullmatch(r"label_values\(gotrace_goroutines, *exe\)",
                        variables["exe"]["query"]["query"] if isinstance(
                            variables["exe"]["query"], dict) else variables["exe"]["query"])
    pids = scene.prom.api("label/pid/values",
                          **{"match[]": f'gotrace_goroutines{{exe=~"{scene.leaky_exe}"}}'})
    assert pids == [str(scene.leaky.pid)]
    queries = dashboard_queries()
    assert len(queries) >= 7
    shown: set[str] = set()
    for title, expr in queries:
        result = scene.prom.query(substitute(expr, scene.leaky_exe, str(scene.leaky.pid)))
        assert result, (title, expr)
        for s in result:
            shown.update(s["metric"])
            if "$exe" in expr and "exe" in s["metric"]:
                assert s["metric"]["exe"] == scene.leaky_exe, (title, s)
        if "gotrace_leak_suspects" in expr and "go_site" in expr:
            assert set(by_line(result)) >= set(markers()["leak"].values()), (title, result)
    assert {"go_site", "wait_reason", "reason", "pid", "exe"} <= shown


# -- churn -------------------------------------------------------------------------------------


def agent_usage(pid: int) -> tuple[int, int]:
    """(RSS in kB, open file descriptors) of a process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def test_churn_keeps_memory_and_fds_steady(tmp_path: Path) -> None:
    """100 short-lived Go processes over ~50 s next to 3 long-lived ones: every process that
    lives 2.5 s or more is traced and let go, none is harmed (all exit 0), and the agent ends
    with the file descriptors it had before, its memory steady. One run in ten lives long enough
    for its go statement probes, so probes are compiled, attached and closed during the churn
    too."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    binary = copy_binary(build_go(VERSION, GO_LEAKY_SRC, "plain"), bindir)
    agent = Agent(f"^{re.escape(str(bindir))}/", "--threshold", "3s", "--interval", "1s",
                  "--probe-after", "3s")
    long_lived = [subprocess.Popen([binary, "-busy=false", "-recv", "3", "-leaks-at-start"],
                                   stdout=subprocess.DEVNULL) for _ in range(3)]
    short: list[tuple[subprocess.Popen[bytes], float]] = []
    samples: list[tuple[int, int]] = []
    stop_sampling = threading.Event()
    try:
        for p in long_lived:
            agent.wait_for(rf"PID {p.pid} \(.*\): go statement probes attached", timeout=90)
        time.sleep(2)  # one more report each, so every cache is warm
        baseline = agent_usage(agent.proc.pid)

        def sample() -> None:
            while not stop_sampling.wait(1.0):
                samples.append(agent_usage(agent.proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        lifetimes = [0.3, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 0.5, 1.0, 6.0]
        for i in range(100):
            life = lifetimes[i % len(lifetimes)]
            short.append((subprocess.Popen([binary, "-busy=false", "-exit-after", f"{life}s"],
                                           stdout=subprocess.DEVNULL), life))
            time.sleep(0.5)
        codes = [p.wait(timeout=60) for p, _ in short]
        assert codes == [0] * len(short)
        for p, _ in short:
            if any(line.startswith(f"gotrace agent: tracing PID {p.pid} ")
                   for line in agent.err.lines):
                agent.wait_for(rf"PID {p.pid} \(.*\) exited", timeout=15)
        wait_until("only the long-lived processes traced",
                   lambda: "gotrace_targets 3.0" in agent.metrics(), timeout=15)
        time.sleep(2)
        stop_sampling.set()
        sampler.join()
        end = agent_usage(agent.proc.pid)
    finally:
        stop_sampling.set()
        for p in long_lived:
            p.send_signal(signal.SIGTERM)
        long_codes = [p.wait(timeout=10) for p in long_lived]
        for p, _ in short:
            if p.poll() is None:
                p.kill()
                p.wait()
        rc = agent.stop()
    log = agent.log
    assert rc == 0 and "Traceback" not in log, log
    assert long_codes == [0, 0, 0]
    traced = {int(m[1]) for m in re.finditer(r"tracing PID (\d+) ", log)}
    missed = [p.pid for p, life in short if life >= 2.5 and p.pid not in traced]
    assert not missed, (missed, log)
    assert len(re.findall(r"go statement probes attached", log)) >= 3 + 5
    assert "cannot trace" not in log, log
    # File descriptors: back to the baseline exactly; during the churn at most a few per
    # process alive at once (memory, BPF maps, programs and probes).
    assert end[1] == baseline[1], (baseline, end, samples)
    assert max(n for _, n in samples) <= baseline[1] + 60, samples
    # Memory: steady once warm (the first probe compiles grow LLVM's caches): the second half
    # of the churn does not grow over the first.
    half = [kb for kb, _ in samples[len(samples) // 2:]]
    first = [kb for kb, _ in samples[: len(samples) // 2]]
    print(f"agent RSS kB: baseline {baseline[0]}, first half max {max(first)}, second half max "
          f"{max(half)}, end {end[0]}; fds baseline {baseline[1]}, max "
          f"{max(n for _, n in samples)}, end {end[1]}")
    assert max(half) - max(first) < 16 * 1024, (baseline, samples, end)
    assert end[0] - baseline[0] < 64 * 1024, (baseline, samples, end)


def test_ignore_rules_hide_and_count_per_rule(tmp_path: Path) -> None:
    """The agent takes attach's ignore rules: the hidden leak leaves gotrace_leak_suspects and
    shows, counted, in gotrace_ignored_goroutines{rule}."""
    binary = copy_binary(build_go(VERSION, TARGETS / "parkers", "plain"), tmp_path)
    p = run_parkers(binary)
    agent = Agent(f"^{re.escape(str(tmp_path))}/", "--threshold", "1s", "--interval", "1s",
                  "--no-bpf", "--ignore", "parked:main.leak.func1")
    try:
        agent.traced(p.pid)
        line = f'gotrace_ignored_goroutines{{container_id="",exe="{Path(binary).name}",' \
               f'pid="{p.pid}",pod_uid="",rule="parked:main.leak.func1"}} 3.0'
        wait_until("the rule's count", lambda: line in agent.metrics(), timeout=60)
        text = agent.metrics()
        assert f"main.go:{parkers_leak_go_line()}" not in "\n".join(
            x for x in text.splitlines() if x.startswith("gotrace_leak_suspects"))
    finally:
        assert agent.stop() == 0
        assert stop_process(p) == 0
