"""Arrays of 64-bit values handled as one big integer.

The standard library has no vector arithmetic, but Python's integers have
any size: k values put in 64-bit slots of one integer (value i at bits
64i to 64i+63) are masked, shifted, added and compared all at once, each
operation one C loop over the integer's digits, where a Python step per
value costs tens of nanoseconds each.  It is the same as working value by
value as long as no slot carries or borrows into the next: the callers
bound their values first and say why their sums stay in their slots.
Used for the pagemap's hundreds of thousands of entries (pmdecode decodes
their varints, pagemap checks them) and for the addresses and offsets of
a window of writes (aio_runs).
"""
from __future__ import annotations

import functools
import sys
from array import array

_BIG_ENDIAN = sys.byteorder == "big"


@functools.lru_cache(maxsize=64)
def repeat(k, value):
    """`value` (below 2**64) in each of k slots.  Cached: the windows of
    one pagemap are of a few sizes."""
    return int.from_bytes(value.to_bytes(8, "little") * k, "little")


def from_array(a):
    """The values of an array('Q') in slots."""
    if _BIG_ENDIAN:
        a = array("Q", a)
        a.byteswap()
    return int.from_bytes(a, "little")


def to_array(x, k):
    """The k slots of x (below 2**(64 k)) as an array('Q')."""
    a = array("Q")
    a.frombytes(x.to_bytes(8 * k, "little"))
    if _BIG_ENDIAN:
        a.byteswap()
    return a


def from_le(raw):
    """array('Q') of little-endian 64-bit slots (bytes-like, 8 k long)."""
    a = array("Q")
    a.frombytes(raw)
    if _BIG_ENDIAN:
        a.byteswap()
    return a
