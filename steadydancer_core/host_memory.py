"""Host memory handed back to the system: glibc keeps freed pages in its heap, so after a phase that allocated a
lot and freed it (decoding a 4K / 8K driving video, a dropped model) the process would keep its peak size."""
from __future__ import annotations

import ctypes


def trim_host_memory() -> bool:
    """glibc's ``malloc_trim(0)``: free pages inside the heap go back to the system. False where it does not exist
    (other C libraries, Windows, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    trim(0)
    return True
