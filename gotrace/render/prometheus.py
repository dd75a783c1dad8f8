"""`gotrace agent`'s output: the fleet's figures as Prometheus metrics, made on each scrape.

A custom collector rather than registered gauges: every scrape yields exactly the processes
traced now, so a process that exits disappears at the next scrape (Prometheus then marks its
series stale) and nothing has to be unregistered. Names follow Prometheus conventions under
`gotrace_` (never `go_`, which client libraries use for the scraper's own runtime).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gotrace.analysis.fleet import Figures, Site
from gotrace.model import LOST_REASONS
from gotrace.render.leaks import site

PROCESS_LABELS = ["pid", "exe", "container_id", "pod_uid"]
OTHER_SITES = "other"  # the go statements beyond --max-sites, summed


def go_site(f: Site) -> str:
    """The go_site label: `function file:line`, as attach's tables print it."""
    return OTHER_SITES if f is None else site(f)


def _summed(pairs: Iterable[tuple[tuple[str, ...], int]]) -> dict[tuple[str, ...], int]:
    """Values with the same label values added (two frames can print the same site)."""
    out: dict[tuple[str, ...], int] = {}
    for k, n in pairs:
        out[k] = out.get(k, 0) + n
    return out


class FleetCollector(Collector):
    """Yields the current figures of every traced process on each collect()."""

    def __init__(self, figures: Callable[[], tuple[Figures, ...]], version: str) -> None:
        self.figures = figures
        self.version = version

    def _families(self) -> _Families:
        def gauge(name: str, doc: str, *extra: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*PROCESS_LABELS, *extra])

        def counter(name: str, doc: str, *extra: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=[*PROCESS_LABELS, *extra])

        return _Families(
            live=gauge("gotrace_goroutines", "Live goroutines of the process (last read)."),
            sites=gauge("gotrace_site_goroutines",
                        "Live goroutines per go statement that created them (the main "
                        "goroutine: '(main goroutine)'; beyond --max-sites: 'other').",
                        "go_site"),
            suspects=gauge("gotrace_leak_suspects",
                           "Goroutines parked longer than --threshold, per go statement and "
                           "wait reason.", "go_site", "wait_reason"),
            created=counter("gotrace_goroutines_created",
                            "Goroutines created since tracing began (exact with the creation "
                            "probe; without it, those seen between reads)."),
            exited=counter("gotrace_goroutines_exited", "Goroutines exited since tracing began."),
            lost=counter("gotrace_events_lost",
                         "Goroutines, events or reads dropped, by reason.", "reason"),
            ignored=gauge("gotrace_ignored_goroutines",
                          "Goroutines parked past --threshold that an ignore rule hid, per "
                          "rule.", "rule"),
            targets=GaugeMetricFamily("gotrace_targets", "Go processes traced now."),
            build=GaugeMetricFamily("gotrace_build_info", "gotrace's version.",
                                    labels=["version"]),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families().all()

    def collect(self) -> Iterator[Metric]:
        fams = self._families()
        figures = self.figures()
        for f in figures:
            lb = f.labels
            base = [str(lb.pid), lb.exe, lb.container_id, lb.pod_uid]
            fams.live.add_metric(base, f.live)
            for (label,), n in _summed(((go_site(s),), n) for s, n in f.sites.items()).items():
                fams.sites.add_metric([*base, label], n)
            for key, n in _summed(((go_site(s), r), n)
                                  for (s, r), n in f.suspects.items()).items():
                fams.suspects.add_metric([*base, *key], n)
            fams.created.add_metric(base, f.created)
            fams.exited.add_metric(base, f.exited)
            for reason in LOST_REASONS:
                fams.lost.add_metric([*base, reason], f.lost.get(reason, 0))
            for rule, n in f.ignored.items():
                fams.ignored.add_metric([*base, rule], n)
        fams.targets.add_metric([], len(figures))
        fams.build.add_metric([self.version], 1)
        yield from fams.all()


@dataclass
class _Families:
    live: GaugeMetricFamily
    sites: GaugeMetricFamily
    suspects: GaugeMetricFamily
    created: CounterMetricFamily
    exited: CounterMetricFamily
    lost: CounterMetricFamily
    ignored: GaugeMetricFamily
    targets: GaugeMetricFamily
    build: GaugeMetricFamily

    def all(self) -> list[Metric]:
        return [self.live, self.sites, self.suspects, self.created, self.exited, self.lost,
                self.ignored, self.targets, self.build]
