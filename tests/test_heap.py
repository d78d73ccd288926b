"""The collector's settings while a run's loop runs: frozen heap, rarer young passes, all put back."""

from __future__ import annotations

import gc
import weakref

import pytest

from workers.heap import YOUNG_THRESHOLD, long_lived


@pytest.fixture(autouse=True)
def _plain_collector() -> None:
    assert gc.get_freeze_count() == 0, "the test process froze its heap: these tests cannot tell"


def test_long_lived_freezes_and_raises_the_young_threshold_for_the_block() -> None:
    before = gc.get_threshold()
    alive = [object() for _ in range(10)]  # tracked containers are what freeze counts
    alive.append([alive])
    with long_lived():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_long_lived_puts_the_collector_back_when_the_block_raises() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), long_lived():
        raise RuntimeError("boom")
    assert (gc.get_freeze_count(), gc.get_threshold()) == (0, before)


def test_long_lived_nested_leaves_the_restore_to_the_outer_block() -> None:
    with long_lived():
        with long_lived():
            pass
        assert gc.get_freeze_count() > 0  # the inner block did not unfreeze the outer one's heap
    assert gc.get_freeze_count() == 0


def test_long_lived_in_a_process_frozen_at_start_up_raises_the_threshold_and_leaves_it_frozen() -> None:
    before = gc.get_threshold()
    gc.freeze()  # what ``python -m batcher`` does once its modules are loaded
    try:
        with long_lived():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == before
    finally:
        gc.unfreeze()


def test_long_lived_keeps_a_higher_young_threshold_the_process_set() -> None:
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD * 2, *before[1:])
    try:
        with long_lived():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD * 2
    finally:
        gc.set_threshold(*before)


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_a_cycle_alive_at_the_start_is_kept_through_the_block_and_collected_after_it() -> None:
    node = _Node()
    ref = weakref.ref(node)
    with long_lived():
        del node
        gc.collect()
        assert ref() is not None  # frozen: the collector does not look at it
    gc.collect()
    assert ref() is None
