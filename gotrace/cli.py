"""Command line: one click group, one module per command, one-line errors with exit codes.

Exit codes: 0 success, 2 bad input (PID, binary, arguments), 3 this machine cannot trace.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from gotrace import __version__
from gotrace.durations import parse_duration
from gotrace.errors import EXIT_BAD_INPUT, GotraceError
from gotrace.live.bpfdefs import DEFAULT_MAX_GOROUTINES


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} must be longer than zero", param, ctx)
        return seconds


DURATION = Duration()

def pprof_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--pprof", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
        help=f"Also write {what} as a gzipped pprof goroutine profile (labels wait_reason, "
             "go_site, parked seconds) for `go tool pprof`, which needs no binary for it.")


def ignore_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--ignore and --ignore-file, the same on every command that reports goroutines."""
    f = click.option("--ignore-file", "ignore_files", multiple=True, metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="Ignore rules, one per line (# comments).")(f)
    return click.option("--ignore", "ignore_rules", multiple=True, metavar="RULE",
                        help="Hide goroutines meant to live forever, and count them: "
                             "[go:|start:|parked:|created:|reason:]GLOB or /REGEX/ "
                             "(repeatable; see the README).")(f)


max_goroutines_option = click.option(
    "--max-goroutines", type=click.IntRange(1024, 4 * 1024 * 1024),
    default=DEFAULT_MAX_GOROUTINES, show_default=True,
    help="Size of the goroutine table in the kernel (and of tail's screen).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gotrace")
def cli() -> None:
    """Find goroutine leaks in a running Go program, from outside, with eBPF uprobes.

    Exit codes: 0 ok, 2 bad input, 3 this machine cannot trace (see `gotrace doctor`).
    """


@cli.command()
@click.argument("pid", type=int)
@click.option("--threshold", type=DURATION, default="10s", show_default=True,
              help="Report goroutines parked at least this long.")
@click.option("--interval", type=DURATION, default="5s", show_default=True,
              help="Time between reports.")
@click.option("--duration", type=DURATION, default=None,
              help="Stop after this long (default: until Ctrl-C, SIGTERM or the target exits).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per report on stdout.")
@click.option("--stacks", is_flag=True, help="Show the creation and parked stacks of each group.")
@pprof_option("the suspects of the final report")
@ignore_options
@click.option("--baseline", is_flag=True,
              help="Hide every goroutine that already existed at attach (counted).")
@max_goroutines_option
@click.option("--park-times", type=click.Choice(["memory", "exact"]), default="memory",
              show_default=True,
              help="memory: read park state from the target every --read-interval (no probe "
                   "on parks; park times are lower bounds to that resolution). exact: probe "
                   "every creation, park and exit (~0.4 µs each) for exact park times.")
@click.option("--read-interval", type=DURATION, default=None,
              help="How often the goroutines are read from memory, the resolution of park "
                   "times (--park-times memory; default: a quarter of --threshold, within "
                   "100ms to 1s).")
@click.option("--no-bpf", is_flag=True,
              help="No probe at all: everything from memory reads (needs only the right to "
                   "read the process's memory, as dump); creation stacks are the go "
                   "statement alone.")
@click.option("--park-stacks", type=click.Choice(["memory", "bpf"]), default="memory",
              show_default=True,
              help="With --park-times exact: parked stacks read from memory for suspects "
                   "only, or captured in BPF at every park (~0.7 µs more per park).")
@click.option("--creation-stacks", default="first", show_default=True, metavar="first|N",
              help="first: a probe on each go statement, removed once it walked a creation "
                   "stack (no cost after that). N: a probe on every creation, walking the "
                   "stack of one goroutine in N per go statement (a power of two).")
def attach(pid: int, threshold: float, interval: float, duration: float | None, as_json: bool,
           stacks: bool, pprof: str | None, ignore_rules: tuple[str, ...],
           ignore_files: tuple[str, ...], baseline: bool, max_goroutines: int, park_times: str,
           read_interval: float | None, no_bpf: bool, park_stacks: str,
           creation_stacks: str) -> None:
    """Trace goroutines of PID and report those parked longer than --threshold.

    Reports are grouped by the `go` statement that created the goroutines, the wait reason and
    the place where they wait. A final report follows Ctrl-C, SIGTERM or --duration.
    """
    from gotrace.analysis.ignore import Ignorer, load_rules
    from gotrace.commands.attach import AttachOptions, run

    every = None if creation_stacks == "first" else \
        int(creation_stacks) if creation_stacks.isdigit() else 0
    if every is not None and not (0 < every <= 1 << 20 and every & (every - 1) == 0):
        raise click.BadParameter("must be first or a power of two (1, 2, 4, ... 64 ...)",
                                 param_hint="--creation-stacks")
    if park_stacks == "bpf" and park_times != "exact":
        raise click.BadParameter("bpf needs --park-times exact (parks are not probed "
                                 "otherwise)", param_hint="--park-stacks")
    if no_bpf and park_times == "exact":
        raise click.BadParameter("exact park times need the park probe, not --no-bpf",
                                 param_hint="--park-times")
    sys.exit(run(AttachOptions(pid, threshold, interval, duration, as_json, stacks,
                               max_goroutines, park_stacks == "bpf", every,
                               exact=park_times == "exact", no_bpf=no_bpf,
                               read_interval_s=read_interval or min(1.0, max(0.1, threshold / 4)),
                               pprof=pprof,
                               ignore=Ignorer(load_rules(ignore_rules, ignore_files),
                                              baseline))))


@cli.command()
@click.argument("pid", type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every goroutine.")
@click.option("--min-wait", type=DURATION, default=None,
              help="Only goroutines waiting at least this long (approximate: the wait is dated "
                   "by the GC, as in Go's own 'N minutes').")
@click.option("--all", "include_system", is_flag=True,
              help="Include the runtime's own goroutines (GC workers, finalizer...) and "
                   "runtime frames, as GOTRACEBACK=system does.")
@pprof_option("every goroutine")
@ignore_options
def dump(pid: int, as_json: bool, min_wait: float | None, include_system: bool,
         pprof: str | None, ignore_rules: tuple[str, ...], ignore_files: tuple[str, ...]) -> None:
    """Print every goroutine of PID with its stack, read from outside.

    Needs only the right to read the process's memory: no BPF, no signal, the program is not
    stopped. Identical goroutines are grouped as in Go's debug=1 goroutine profile.
    """
    from gotrace.analysis.ignore import Ignorer, load_rules
    from gotrace.commands.dump import DumpOptions, run

    rules = load_rules(ignore_rules, ignore_files)
    sys.exit(run(DumpOptions(pid, as_json, min_wait, include_system, pprof,
                             Ignorer(rules) if rules else None)))


@cli.command()
@click.argument("pid", type=int, required=False)
def doctor(pid: int | None) -> None:
    """Check this machine (and, given a PID, that program) for tracing; print fixes."""
    from gotrace.commands.doctor import run

    sys.exit(run(pid))


@cli.command()
@click.argument("pid", type=int)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per event per line on stdout, then a summary line.")
@click.option("--events", "events", default="create,exit,park,wake", show_default=True,
              help="Event types to trace, comma-separated (the others are never sent).")
@click.option("--match", default=None, metavar="REGEX",
              help="Only goroutines whose go statement (function or file:line) or start "
                   "function matches; filtered in BPF.")
@click.option("--duration", type=DURATION, default=None,
              help="Stop after this long (default: until Ctrl-C, SIGTERM or the target exits).")
@max_goroutines_option
@click.option("--ring-mb", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Size of the ring buffer that carries events to gotrace (rounded down to a "
                   "power of two).")
def tail(pid: int, as_json: bool, events: str, match: str | None, duration: float | None,
         max_goroutines: int, ring_mb: int) -> None:
    """Watch goroutines of PID being created, parking, waking and exiting, live.

    A top-like screen (live goroutines, rates, busiest and fastest-growing go statements,
    longest parked groups, lost events), or with --json one line per event.
    """
    from gotrace.commands.tail import TailOptions, parse_kinds, run

    sys.exit(run(TailOptions(pid, as_json, parse_kinds(events), match, duration,
                             max_goroutines, ring_mb)))


@cli.command()
@click.argument("pid", type=int)
@click.option("--duration", type=DURATION, required=True,
              help="How long to count (Ctrl-C, SIGTERM or the target's exit end it early).")
@click.option("--by", type=click.Choice(["reason", "site"]), default="reason", show_default=True,
              help="Park times per wait reason, or everything split by go statement too.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@max_goroutines_option
def hist(pid: int, duration: float, by: str, as_json: bool, max_goroutines: int) -> None:
    """Histograms of goroutine lifetimes and park times of PID, counted in the kernel.

    Log2 buckets (as bcc's funclatency) with counts, p50 and p99: lifetime is create to exit,
    park time is park to running again, per wait reason.
    """
    from gotrace.commands.hist import HistOptions, run

    sys.exit(run(HistOptions(pid, duration, by, as_json, max_goroutines)))


@cli.command()
@click.option("--listen", default="127.0.0.1:9464", show_default=True, metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics.")
@click.option("--match", default=None, metavar="REGEX",
              help="Only Go processes whose executable path or command line matches.")
@click.option("--threshold", type=DURATION, default="10m", show_default=True,
              help="Count goroutines parked at least this long as leak suspects.")
@click.option("--interval", type=DURATION, default="15s", show_default=True,
              help="How often each process's goroutines are read (the resolution of park "
                   "times).")
@click.option("--max-sites", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="go_site label values per process: the sites with the most live "
                   "goroutines; the rest are summed as 'other'.")
@click.option("--no-bpf", is_flag=True,
              help="No probe at all, memory reads only (creation stacks are the go "
                   "statement alone).")
@click.option("--probe-after", type=DURATION, default="10s", show_default=True,
              help="Add the go statement probes (a BPF compile, ~1 s of CPU: creation "
                   "stacks) to processes still running after this long; until then memory "
                   "reads only.")
@max_goroutines_option
@ignore_options
@click.option("--baseline", is_flag=True,
              help="Hide the goroutines that existed when a process began to be traced.")
def agent(listen: str, match: str | None, threshold: float, interval: float, max_sites: int,
          no_bpf: bool, probe_after: float, max_goroutines: int, ignore_rules: tuple[str, ...],
          ignore_files: tuple[str, ...], baseline: bool) -> None:
    """Trace every Go process of this host continuously; serve Prometheus metrics.

    Go processes are recognised by their build info, traced within about a second of their
    start and let go when they exit. Runs until Ctrl-C or SIGTERM, then detaches everything.
    """
    from gotrace.analysis.ignore import load_rules
    from gotrace.commands.agent import AgentOptions, run

    sys.exit(run(AgentOptions(listen, match, threshold, interval, max_sites, no_bpf,
                              probe_after, max_goroutines,
                              tuple(load_rules(ignore_rules, ignore_files)), baseline)))


@cli.command(context_settings={"allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--threshold", type=DURATION, default="1s", show_default=True,
              help="Report goroutines parked at least this long when their program exits.")
@click.option("--match", default=None, metavar="REGEX",
              help="Trace the Go programs whose executable path or main package path matches "
                   "(default: every Go program but the Go toolchain's own).")
@ignore_options
@click.option("--junit", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
              help="Write JUnit XML: one test case per Go program, one failure per leak.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON line per Go program and a summary line on stdout (the command's "
                   "own stdout then goes to stderr).")
@click.option("--annotations", type=click.Choice(["github"]), default=None,
              help="Print a GitHub Actions ::error annotation on each leak's go statement.")
@click.option("--stacks", is_flag=True, help="Show the creation and parked stacks of each group.")
@max_goroutines_option
def run(command: tuple[str, ...], threshold: float, match: str | None,
        ignore_rules: tuple[str, ...], ignore_files: tuple[str, ...], junit: str | None,
        as_json: bool, annotations: str | None, stacks: bool, max_goroutines: int) -> None:
    """Run CMD; report the goroutines each Go program it starts leaves parked at its exit.

    gotrace run [OPTIONS] -- CMD [ARGS...]. Every Go program in CMD's process tree (children
    included, e.g. the test binaries of `go test`) is traced from its first instruction and
    held at its exit path while its goroutines are read. Exit status: CMD's own when non-zero,
    else 1 when leaks remain after the ignore rules, else 0.
    """
    from gotrace.analysis.ignore import load_rules
    from gotrace.commands.run import RunOptions
    from gotrace.commands.run import run as run_command

    sys.exit(run_command(RunOptions(list(command), threshold, match,
                                    load_rules(ignore_rules, ignore_files), junit, as_json,
                                    annotations, stacks, max_goroutines)))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except GotraceError as e:
        click.echo(f"gotrace: error: {e.message}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.UsageError as e:
        # One line, as every other error: what is wrong and where the help is.
        where = f"gotrace {e.ctx.info_name} --help" if e.ctx and e.ctx.parent else \
            "gotrace --help"
        click.echo(f"gotrace: error: {e.format_message()} (see {where})", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.ClickException as e:
        click.echo(f"gotrace: error: {e.format_message()}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
