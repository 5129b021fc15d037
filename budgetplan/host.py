"""The machine budgetplan runs on (not the device it plans for): the memory still free,
against which inputs and models are checked before they are allocated."""

from __future__ import annotations

import os


def available_memory() -> int:
    """Bytes this process may still allocate (``MemAvailable``, else physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 2**63  # no way to know: trust the request
