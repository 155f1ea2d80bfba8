"""The task seam: a Task makes Scorers; a Scorer takes a stream of output batches and returns metrics."""
from __future__ import annotations

import numpy as np


class Scorer:
    """Consumes (outputs, labels or None, reference outputs or None) batch by batch; keeps running sums
    and small per-image facts only, never the outputs themselves."""

    def update(self, out: np.ndarray, labels: np.ndarray | None, ref: np.ndarray | None) -> None:
        raise NotImplementedError

    def result(self):
        raise NotImplementedError


class Task:
    name = ""
    metrics_type: type = object   # the typed metrics its scorers return (results.py reads them back)

    def scorer(self, classes: list[str], labelled: bool, with_reference: bool, names: list[str] | None = None) -> Scorer:
        """names: the evaluated images' file names in stream order (a task may report its worst image)."""
        raise NotImplementedError
