"""The live process and the kernel: the target, its memory, its goroutines, the BPF tracer."""
