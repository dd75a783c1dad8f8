"""gotrace: find goroutine leaks in running Go programs from outside, with eBPF uprobes."""

__version__ = "0.1.0"
