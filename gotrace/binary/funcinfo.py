"""Which functions Go's tracebacks leave out: compiler-generated wrappers (`FuncIDWrapper`).

A `go f(x)` statement runs through a generated closure (`main.g.func1` up to Go 1.21,
`main.g.gowrap1` from 1.22) that Go's own stack dumps never show; neither do method-value and
ABI wrappers. The runtime knows them by the funcID byte of their `_func` record. FuncIDWrapper
is always the entry right after `FuncID_systemstack_switch` in the enum (1.19 to 1.27), whose
numbering otherwise changes between releases, so its value is read from this binary.
"""

from __future__ import annotations

from gotrace.binary.pclntab import Pclntab
from gotrace.errors import BadInput


def wrapper_functions(pcln: Pclntab) -> frozenset[str]:
    """Names of the functions marked FuncIDWrapper; empty when the marker cannot be found."""
    funcs = pcln.functions()
    try:
        ids = pcln.func_ids()
    except BadInput:
        return frozenset()
    anchor = pcln.lookup("runtime.systemstack_switch")
    if anchor is None:
        return frozenset()
    index = {f.entry: i for i, f in enumerate(funcs)}
    i = index.get(anchor.entry)
    if i is None:
        return frozenset()
    wrapper = ids[i] + 1
    return frozenset(f.name for f, fid in zip(funcs, ids, strict=True) if fid == wrapper)
