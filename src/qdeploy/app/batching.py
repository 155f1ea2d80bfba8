"""Dynamic batching for serving: requests that reach one model at the same time share one batched run.

One worker thread per model runs the batches, so a model never runs two batches at once: requests that arrive while
a batch runs wait, and the next batch takes all of them (up to `max_rows` rows; a larger request runs alone). A request that finds its model
idle runs at once, with no added delay at low load; only when the previous batch was shared (load) does a lone
request wait up to `max_delay_s` for company. Outputs are split back per request, in order. A failed run fails
exactly the requests of its batch, with the same exception.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np


@dataclass
class BatchStats:
    requests: int = 0
    runs: int = 0          # model runs (a lone request is one run too)
    rows: int = 0
    largest: int = 0


class DynamicBatcher:
    def __init__(self, run, max_rows: int = 16, max_delay_s: float = 0.002, name: str = "model"):
        if max_rows < 1 or max_delay_s < 0:
            raise ValueError("max_rows must be >= 1 and max_delay_s >= 0")
        self._run, self.max_rows, self.max_delay_s = run, max_rows, max_delay_s
        self._q: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._carry = None
        self.stats = BatchStats()
        self._thread = threading.Thread(target=self._loop, name=f"batch-{name}", daemon=True)
        self._thread.start()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            self.stats.requests += 1
        fut: Future = Future()
        self._q.put((x, fut))
        return fut.result()

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(5)

    def _next(self, timeout: float | None):
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        return self._q.get(timeout=timeout) if timeout is None or timeout > 0 else self._q.get_nowait()

    def _take(self, items: list, rows: int, timeout: float | None) -> tuple[int, bool]:
        """Add one waiting request to `items` if it fits; (rows, whether one was added)."""
        try:
            nxt = self._next(timeout)
        except queue.Empty:
            return rows, False
        if nxt is None:
            self._q.put(None)
            return rows, False
        if rows + len(nxt[0]) > self.max_rows:
            self._carry = nxt
            return rows, False
        items.append(nxt)
        return rows + len(nxt[0]), True

    def _loop(self) -> None:
        recent = 1
        while True:
            first = self._next(None)
            if first is None:
                return
            items, rows = [first], len(first[0])
            added = True
            while rows < self.max_rows and added:         # everything already waiting
                rows, added = self._take(items, rows, 0)
            if len(items) == 1 and recent > 1 and self.max_delay_s > 0:
                # under load (the last batch was shared) a lone request waits a moment for company
                deadline = time.perf_counter() + self.max_delay_s
                added = True
                while rows < self.max_rows and added and time.perf_counter() < deadline:
                    rows, added = self._take(items, rows, deadline - time.perf_counter())
            recent = len(items)
            self._execute(items, rows)

    def _execute(self, items, rows: int) -> None:
        x = items[0][0] if len(items) == 1 else np.concatenate([it[0] for it in items])
        try:
            out = self._run(x)
        except BaseException as exc:   # noqa: BLE001 - handed to every waiting request
            for _, fut in items:
                fut.set_exception(exc)
            return
        with self._lock:
            self.stats.runs += 1
            self.stats.rows += rows
            self.stats.largest = max(self.stats.largest, rows)
        start = 0
        for xi, fut in items:
            fut.set_result(out[start:start + len(xi)])
            start += len(xi)
