"""Large buffers go back to the OS when freed, so the gateway's memory follows its work.

glibc's malloc serves a block over its mmap threshold with its own mapping, returned to the OS on
free; but it raises that threshold to the size of every such block freed (up to 32 MB), after which
blocks of that size come from its heaps, where freed memory stays with the process, one heap per
thread that allocated. The VAD allocates tens of megabytes per pass, from whichever worker thread
runs it: measured on a 59-minute upload, the gateway grew 105 MB with glibc's dynamic threshold and
41 MB with a fixed one (and went back to idle after).

`MALLOC_MMAP_THRESHOLD_` in the environment, where an operator set it, takes precedence.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from functools import cache

logger = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 1 << 20
"""Blocks from this size up get their own mapping: audio blocks, windows, VAD activations; a request's
text arrays stay below it."""

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


@cache
def return_large_blocks_to_the_os() -> bool:
    """Fix glibc's mmap threshold at `MMAP_THRESHOLD_BYTES` for this process (once); False where the C
    library is not glibc or the operator set the threshold."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    logger.debug("malloc mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD_BYTES, done)
    return done
