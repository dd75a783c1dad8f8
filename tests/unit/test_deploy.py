"""The fleet deployment (deploy/): what the manifests grant and mount is what gotrace needs,
no more, and the pieces agree with each other (port, labels, entrypoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # Debian's python3-yaml, no stubs

from gotrace.binary import cache
from gotrace.commands.agent import AgentOptions, parse_listen
from gotrace.live.environment import TRACEFS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Creating uprobes (perf_event_open on the uprobe PMU) still needs CAP_SYS_ADMIN; BPF and
# PERFMON load the program and its maps; SYS_PTRACE reads target memory and /proc/PID/*;
# DAC_READ_SEARCH opens executables that are not world-readable; SYS_RESOURCE raises
# RLIMIT_MEMLOCK on kernels before 5.11.
NEEDED_CAPS = {"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_RESOURCE"}
# What `gotrace doctor` checks on the host: tracefs, and kernel headers at
# /lib/modules/$(uname -r)/build, a link into /usr/src. Both read-only except tracefs.
NEEDED_MOUNTS = {TRACEFS: False, "/lib/modules": True, "/usr/src": True}
METRICS_PORT = 9464


def manifests() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_daemonset_has_what_gotrace_needs_and_no_more() -> None:
    ds = manifests()["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostIPC")
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc.get("privileged") is not True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == NEEDED_CAPS
    assert sc["readOnlyRootFilesystem"] is True
    assert "allowPrivilegeEscalation" not in sc  # false is refused with CAP_SYS_ADMIN
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    volumes = {v["name"]: v for v in pod["volumes"]}
    host = {volumes[m["name"]]["hostPath"]["path"]: (m["mountPath"], m.get("readOnly", False))
            for m in c["volumeMounts"] if "hostPath" in volumes[m["name"]]}
    assert host == {path: (path, ro) for path, ro in NEEDED_MOUNTS.items()}
    # Writable places on a read-only root: the binary facts cache and /tmp, both emptyDir.
    writable = {m["mountPath"] for m in c["volumeMounts"]
                if "emptyDir" in volumes[m["name"]]}
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    assert Path(env["GOTRACE_BINARY_CACHE"]).parent.as_posix() in writable
    assert "/tmp" in writable
    assert cache.cache_dir() is not None  # the variable names a directory, not "off"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": METRICS_PORT}


def test_dockerfile_entrypoint_serves_the_port_the_manifests_scrape() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM debian:bookworm" in text and "python3-bpfcc" in text
    assert "--system-site-packages" in text
    entry = next(line for line in text.splitlines() if line.startswith("ENTRYPOINT"))
    argv = json.loads(entry.removeprefix("ENTRYPOINT"))
    assert argv[0].endswith("/gotrace")
    assert argv[1:] == ["agent", "--listen", f"0.0.0.0:{METRICS_PORT}"]
    assert parse_listen(argv[-1]) == ("0.0.0.0", METRICS_PORT)
    assert AgentOptions().listen.endswith(f":{METRICS_PORT}")  # the command's default too


def test_service_and_podmonitor_point_at_the_agents() -> None:
    docs = manifests()
    ds, svc, pm = docs["DaemonSet"], docs["Service"], docs["PodMonitor"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    notes = svc["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert notes["prometheus.io/port"] == str(METRICS_PORT)
    assert notes["prometheus.io/path"] == "/metrics"
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    namespaces = {d["metadata"].get("namespace") for d in (ds, svc, pm)}
    assert namespaces == {docs["Namespace"]["metadata"]["name"]}
    kust = docs["Kustomization"]
    assert sorted(kust["resources"]) == sorted(
        f.name for f in (DEPLOY / "kubernetes").glob("*.yaml") if f.name != "kustomization.yaml")


def test_dashboard_is_importable_and_filters_by_process() -> None:
    board = json.loads((DEPLOY / "grafana" / "gotrace.json").read_text())
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "exe", "pid"} <= names
    assert board["uid"] and board["title"]
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for t in panel["targets"]:
            per_process = "gotrace_targets" not in t["expr"] and \
                "gotrace_build_info" not in t["expr"]
            assert not per_process or ('exe=~"$exe"' in t["expr"] and 'pid=~"$pid"' in t["expr"])
