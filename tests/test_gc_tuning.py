"""gc_tuning: what ``plugin-host serve`` does to the collector once started."""

from __future__ import annotations

import gc

from plugin_host.gc_tuning import YOUNG_THRESHOLD, tune_after_start


def test_tune_after_start_freezes_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        figures = tune_after_start()
        assert gc.get_freeze_count() == figures["frozen"] > 0
        assert gc.get_threshold() == (figures["young"], figures["middle"], figures["old"])
        assert figures["young"] == YOUNG_THRESHOLD
        # Cyclic garbage made after the freeze is still collected.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
