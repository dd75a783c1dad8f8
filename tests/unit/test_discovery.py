"""The agent's pure logic: container ids from cgroup paths, capped go_site labels, counters that
never go down, the --listen address and the Prometheus exposition of a fleet."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gotrace.analysis.fleet import Figures, Labels, Monotonic, cap_sites
from gotrace.binary.pclntab import Frame
from gotrace.commands.agent import parse_listen
from gotrace.errors import BadInput
from gotrace.frames import MAIN_GOROUTINE
from gotrace.live import discovery
from gotrace.live.discovery import Container, Discovery, exe_name, parse_cgroup
from gotrace.model import LOST_REASONS
from gotrace.render.prometheus import FleetCollector

CID = "3f4e8b0c" * 8
POD = "5c1a3b2e-8f0d-4a6b-9c7e-1d2f3a4b5c6d"


@pytest.mark.parametrize(("text", "expected"), [
    # docker, systemd cgroup driver (cgroup v2)
    (f"0::/system.slice/docker-{CID}.scope\n", Container(CID)),
    # docker, cgroupfs driver, cgroup v1 (and a v2 line at the root)
    (f"12:memory:/docker/{CID}\n11:cpu,cpuacct:/docker/{CID}\n0::/\n", Container(CID)),
    # Kubernetes + containerd, systemd driver: pod UID with underscores in the slice name
    ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
     f"{POD.replace('-', '_')}.slice/cri-containerd-{CID}.scope\n", Container(CID, POD)),
    # Kubernetes, cgroupfs driver (guaranteed QoS: no class level)
    (f"0::/kubepods/pod{POD}/{CID}\n", Container(CID, POD)),
    # cri-o
    ("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
     f"{POD.replace('-', '_')}.slice/crio-{CID}.scope\n", Container(CID, POD)),
    # podman: rootless, and with its nested 'container' cgroup; cgroupfs manager
    (f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope\n",
     Container(CID)),
    (f"0::/machine.slice/libpod-{CID}.scope/container\n", Container(CID)),
    (f"0::/libpod_parent/libpod-{CID}\n", Container(CID)),
    # nested: the innermost container is the process's own
    (f"0::/docker/{'a' * 64}/docker/{CID}\n", Container(CID)),
    # seen from another cgroup namespace
    (f"0::/../../system.slice/docker-{CID}.scope\n", Container(CID)),
    # conmon's scope is not the container; a host service; a 32-hex id is no container id
    (f"0::/system.slice/crio-conmon-{CID}.scope\n", Container()),
    ("0::/system.slice/ssh.service\n", Container()),
    ("4:memory:/process_api/bf7d6e60882d240460a9ba6e128f3772\n0::/\n", Container()),
    ("", Container()),
])
def test_container_from_cgroup(text: str, expected: Container) -> None:
    assert parse_cgroup(text) == expected


def test_exe_label_is_the_base_name() -> None:
    assert exe_name("/usr/local/bin/server") == "server"
    assert exe_name("/srv/app/server (deleted)") == "server"


def test_sites_are_capped_and_the_rest_summed_as_other() -> None:
    live = {"a": 50, "b": 30, "c": 5, "d": 1, "e": 1}
    suspects = {("a", "chan receive"): 40, ("c", "select"): 5, ("d", "select"): 1,
                ("e", "chan send"): 1}
    sites, groups = cap_sites(live, suspects, 2)
    assert sites == {"a": 50, "b": 30, None: 7}
    assert groups == {("a", "chan receive"): 40, (None, "select"): 6, (None, "chan send"): 1}
    assert sum(sites.values()) == sum(live.values())
    assert cap_sites(live, suspects, 10)[0] == live
    # Equal live counts: the site with leak suspects keeps its name.
    sites, groups = cap_sites({"x": 1, "y": 1}, {("y", "select"): 1}, 1)
    assert sites == {"y": 1, None: 1} and groups == {("y", "select"): 1}


def test_counters_never_go_down_and_survive_a_restart() -> None:
    m = Monotonic()
    assert [m.update(n) for n in (5, 9, 7, 9, 12)] == [5, 9, 9, 9, 12]  # an estimate wobbles
    m.restart()  # the probe is added: its counter starts from zero
    assert [m.update(n) for n in (0, 3, 10)] == [12, 15, 22]


def test_listen_address() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)
    for bad in ("9464", "host:", "host:port", "h:70000"):
        with pytest.raises(BadInput):
            parse_listen(bad)


def test_exposition_of_a_fleet() -> None:
    recv = Frame("main.leakRecv", "/src/app/main.go", 215)
    same = Frame("main.leakRecv", "/other/dir/main.go", 215)  # prints the same go_site
    fig = Figures(Labels(42, "server", CID, POD), live=12,
                  sites={recv: 4, same: 2, MAIN_GOROUTINE: 1, None: 5},
                  suspects={(recv, "chan receive"): 3, (same, "chan receive"): 1},
                  created=100, exited=88, lost=dict.fromkeys(LOST_REASONS, 0))
    registry = CollectorRegistry()
    registry.register(FleetCollector(lambda: (fig,), "9.9.9"))
    text = generate_latest(registry).decode()
    got = {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
           for fam in text_string_to_metric_families(text) for smp in fam.samples}
    base = {"pid": "42", "exe": "server", "container_id": CID, "pod_uid": POD}

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted((base | labels).items())))]

    assert value("gotrace_goroutines") == 12
    assert value("gotrace_site_goroutines", go_site="main.leakRecv main.go:215") == 6
    assert value("gotrace_site_goroutines", go_site="(main goroutine)") == 1
    assert value("gotrace_site_goroutines", go_site="other") == 5
    assert value("gotrace_leak_suspects", go_site="main.leakRecv main.go:215",
                 wait_reason="chan receive") == 4
    assert value("gotrace_goroutines_created_total") == 100
    assert value("gotrace_goroutines_exited_total") == 88
    assert {dict(k[1])["reason"] for k in got if k[0] == "gotrace_events_lost_total"} == set(
        LOST_REASONS)
    assert got[("gotrace_targets", ())] == 1
    assert got[("gotrace_build_info", (("version", "9.9.9"),))] == 1
    assert not re.search(r"^go_", text, re.M)
    # A process that exited is simply not in the next scrape.
    empty = CollectorRegistry()
    empty.register(FleetCollector(lambda: (), "9.9.9"))
    text = generate_latest(empty).decode()
    assert "gotrace_targets 0.0" in text and "pid=" not in text


def test_discovery_knows_go_from_its_build_info_not_its_name(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A process whose command line says go-server is not a Go program; the verdict of its
    executable is read once, not at every poll (other processes may come and go meanwhile)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                                "go-server"])
    try:
        d = Discovery(re.compile("go-server"))
        assert sleeper.pid not in d.poll()
        st = os.stat(f"/proc/{sleeper.pid}/exe")
        assert d.verdicts[(st.st_dev, st.st_ino, st.st_mtime_ns)] is False
        read: list[str] = []
        real = discovery._is_go

        def counting(fd: int, name: str) -> bool:
            read.append(name)
            return real(fd, name)

        monkeypatch.setattr(discovery, "_is_go", counting)
        assert sleeper.pid not in d.poll()
        assert f"/proc/{sleeper.pid}/exe" not in read
    finally:
        sleeper.kill()
        sleeper.wait()
