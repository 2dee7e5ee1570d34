"""The interpreter's settings for a process that serves predictions (the HTTP server, a
stream worker): set once it has loaded, undone when it stops serving."""

from __future__ import annotations

import gc
import sys

FULL_COLLECTION_EVERY = 1000
"""Collections of the middle generation between two full ones, once start-up is frozen
(Python's own default is 10)."""
SWITCH_INTERVAL_S = 0.001
"""Longest a thread holds the GIL while another waits for it (Python's default: 5 ms)."""
_ordinary: tuple[int, float] | None = None


def serving_runtime(*, switch_interval_s: float | None = SWITCH_INTERVAL_S) -> None:
    """Tune the interpreter for a process that serves predictions, once it has loaded.

    - **Start-up's objects frozen** (libraries, models): out of every garbage collection.
    - **Full collections rare.** A full collection walks every object the collector
      tracks and stops the process while it does. With start-up frozen, Python counts no
      long-lived objects, so its rule of a full collection only once they grew by a
      quarter no longer holds one back: one came every tenth middle collection, 2.5 a
      second on a server answering 12,000 requests a second with the prediction log on
      (its buffered records reach the oldest generation), 7–33 ms each. Every
      ``FULL_COLLECTION_EVERY`` middle collections instead, it comes about once a minute
      there. Cycles among young objects are still collected as before.
    - **A short GIL switch interval** (``switch_interval_s``; None: Python's). The
      prediction log's writer builds a second's worth of records at once; holding the GIL
      for Python's default 5 ms at a time, it stalled the event loop long enough to set
      the p99 latency (18 → 10–12 ms at 1 ms, measured with wrk on one core). A process
      that works for throughput rather than latency (a stream scorer) keeps Python's.
    """
    global _ordinary
    gc.collect()
    gc.freeze()
    young, middle, oldest = gc.get_threshold()
    if _ordinary is None:
        _ordinary = (oldest, sys.getswitchinterval())
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
    if switch_interval_s is not None:
        sys.setswitchinterval(switch_interval_s)


def ordinary_runtime() -> None:
    """Undo ``serving_runtime``, for a process that goes on after serving (a test)."""
    global _ordinary
    gc.unfreeze()
    if _ordinary is not None:
        oldest, interval = _ordinary
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, oldest)
        sys.setswitchinterval(interval)
        _ordinary = None
