"""A compact set of 64-bit hashes: the reader's duplicate check at ten million lines.

A Python ``set`` of ints costs about 85 bytes an entry (the int object and a hash-table slot of
16 bytes at a load of a half or less): 850 MB for a file of ten million lines. ``HashSet`` keeps
the hashes themselves in open-addressing tables of 8-byte slots (linear probing, at most three
quarters full), about 14 bytes an entry. It is split in ``SHARDS`` tables chosen by the hash's
top bits, so growing one table copies a 256th of the set, never the whole of it at once.
"""

from __future__ import annotations

from array import array

SHARDS = 256
_FIRST = 64  # slots of a new table; a power of two
_SUBSTITUTE = 1  # the hash 0 marks an empty slot; it is stored as 1 (a false duplicate at 2^-64)


class HashSet:
    """64-bit integers (``hash()`` values); ``add`` says whether one was new."""

    def __init__(self) -> None:
        self._tables = [array("q", bytes(8 * _FIRST)) for _ in range(SHARDS)]
        self._counts = [0] * SHARDS

    def __len__(self) -> int:
        return sum(self._counts)

    def add(self, key: int) -> bool:
        """Put ``key`` in; False when it was already there (one call per line: kept flat)."""
        key = key or _SUBSTITUTE
        shard = (key >> 56) & (SHARDS - 1)
        table = self._tables[shard]
        mask = len(table) - 1
        i = key & mask
        value = table[i]
        while value:
            if value == key:
                return False
            i = (i + 1) & mask
            value = table[i]
        table[i] = key
        count = self._counts[shard] = self._counts[shard] + 1
        if count * 4 > (mask + 1) * 3:
            self._tables[shard] = _grown(table)
        return True


def _grown(table: array[int]) -> array[int]:
    bigger = array("q", bytes(16 * len(table)))
    mask = len(bigger) - 1
    for key in table:
        if key:
            i = key & mask
            while bigger[i]:
                i = (i + 1) & mask
            bigger[i] = key
    return bigger
