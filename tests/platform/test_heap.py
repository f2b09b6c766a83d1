"""The server tunes the garbage collector once it has started (platform/heap.py): what start-up
loaded is frozen out of full collections, and the first generation is large enough that a page of
resources in flight is not promoted before it dies."""

from __future__ import annotations

import gc

from carebase.platform import heap


def test_the_running_server_froze_its_start_up_heap_and_raised_the_first_threshold(server):
    assert gc.get_threshold()[0] == heap.GEN0
    assert gc.get_freeze_count() > 100_000  # modules, models and schemas: out of the collector's walk
