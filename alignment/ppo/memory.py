"""Give freed CPU memory back to the operating system between training passes.

PPO allocates activations of a different size in every pass (prompts of different lengths), and
glibc's allocator keeps the memory of freed tensors in its heaps for reuse; blocks of the wrong
size are not reused, so the process's resident memory climbs far above what is alive. Measured
on the SmolLM2 PPO benchmark: 11.0 GB resident after an update for ~4.8 GB of live weights and
optimiser state. ``malloc_trim(0)`` returns the free pages of every heap to the system; it costs
a few milliseconds, so the trainer calls it once per forward/backward pass.

Only glibc has it: elsewhere (macOS, musl, Windows) this is a no-op, and so it is on CUDA, whose
caching allocator is unaffected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the allocator's free memory to the OS; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
