"""The compact hash set of the duplicate check behaves as a set of 64-bit ints."""

from __future__ import annotations

import random

from batcher.idset import HashSet


def test_add_says_whether_a_key_is_new() -> None:
    s = HashSet()
    assert s.add(hash("a")) is True
    assert s.add(hash("a")) is False
    assert s.add(hash("b")) is True
    assert len(s) == 2


def test_zero_and_extreme_keys() -> None:
    s = HashSet()
    for key in (0, -1, 2**63 - 1, -(2**63)):
        assert s.add(key) is True
        assert s.add(key) is False


def test_it_agrees_with_a_set_through_growth_and_probe_collisions() -> None:
    rng = random.Random(7)
    # Keys that share a shard and low bits probe past each other; random ones fill every shard.
    crowded = [(3 << 56) | (i << 40) | 5 for i in range(2000)]
    keys = crowded + [rng.getrandbits(64) - 2**63 for _ in range(50_000)]
    keys += rng.sample(keys, 5000)  # repeats
    s, expected = HashSet(), set()
    for key in keys:
        assert s.add(key) is (key not in expected)
        expected.add(key)
    assert len(s) == len(expected)
    assert all(s.add(k) is False for k in expected)
