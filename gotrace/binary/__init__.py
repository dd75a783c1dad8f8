"""Reading Go binaries: ELF, build info, pclntab, DWARF, instructions; no kernel, no process."""
