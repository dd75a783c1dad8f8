"""Struct layouts from Go's DWARF, reading only the `runtime` compile unit.

A full DWARF walk of a big Go binary takes seconds and hundreds of MB in pyelftools; Go emits
one compile unit per package, so we skip straight to the CU named "runtime".
"""

from __future__ import annotations

from collections.abc import Iterable

from elftools.common.exceptions import DWARFError, ELFError

from gotrace.binary.elf import ElfImage
from gotrace.errors import BadInput


def struct_members(img: ElfImage, names: Iterable[str]) -> dict[str, dict[str, int]]:
    """{struct name: {member: byte offset}} for the wanted structs of the runtime package."""
    wanted = set(names)
    found: dict[str, dict[str, int]] = {}
    try:
        dwarf = img.elf.get_dwarf_info(relocate_dwarf_sections=False)
        cus = list(dwarf.iter_CUs())
        # The runtime's own CUs first; a linker that files types elsewhere costs a full walk.
        cus.sort(key=lambda cu: _cu_name(cu) != "runtime")
        for cu in cus:
            for die in cu.iter_DIEs():
                if die.tag != "DW_TAG_structure_type" or not die.has_children:
                    continue
                attr = die.attributes.get("DW_AT_name")
                sname = attr.value.decode() if attr is not None else ""
                if sname not in wanted or sname in found:
                    continue
                members: dict[str, int] = {}
                for child in die.iter_children():
                    if child.tag != "DW_TAG_member":
                        continue
                    mname = child.attributes.get("DW_AT_name")
                    loc = child.attributes.get("DW_AT_data_member_location")
                    if mname is None or loc is None or not isinstance(loc.value, int):
                        continue
                    members[mname.value.decode()] = loc.value
                found[sname] = members
                if len(found) == len(wanted):
                    return found
    except (DWARFError, ELFError, ValueError, KeyError, IndexError, AssertionError) as e:
        raise BadInput(f"{img.path}: DWARF unreadable ({e}); try the stripped path") from None
    return found


def _cu_name(cu: object) -> str:
    attr = cu.get_top_DIE().attributes.get("DW_AT_name")  # type: ignore[attr-defined]
    value = attr.value if attr is not None else b""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
