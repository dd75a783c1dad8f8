"""Reading Go binaries: ELF, build info, pclntab, DWARF, instructions. No kernel, no live process."""
