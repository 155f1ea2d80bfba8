"""The one output comparison: a model's outputs against a reference's on the same inputs.

`compare_outputs` for two arrays in hand; `DiffAccumulator` for a stream of batches (running sums only,
so comparing 50,000 images holds no outputs).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class OutputDiff:
    n: int
    agreement: float      # share of inputs whose top-1 (argmax over the last axis) matches the reference
    rel_l2: float         # ||out - ref|| / ||ref|| over everything compared
    max_abs_diff: float

    def as_dict(self) -> dict:
        return asdict(self)


class DiffAccumulator:
    """Running agreement, rel-L2 and max |diff| over batches of (reference, output)."""

    def __init__(self):
        self.n = self.agree = 0
        self.sq_diff = self.sq_ref = self.max_abs = 0.0

    def update(self, ref: np.ndarray, out: np.ndarray) -> None:
        ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        if ref.shape != out.shape:
            raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
        d = out - ref
        self.n += len(ref)
        self.agree += int((ref.reshape(len(ref), -1).argmax(1) == out.reshape(len(out), -1).argmax(1)).sum())
        self.sq_diff += float((d * d).sum())
        self.sq_ref += float((ref * ref).sum())
        self.max_abs = max(self.max_abs, float(np.abs(d).max()) if d.size else 0.0)

    def result(self) -> OutputDiff:
        return OutputDiff(n=self.n, agreement=self.agree / max(self.n, 1),
                          rel_l2=float(np.sqrt(self.sq_diff) / max(np.sqrt(self.sq_ref), 1e-12)),
                          max_abs_diff=self.max_abs)


def compare_outputs(ref: np.ndarray, out: np.ndarray) -> OutputDiff:
    acc = DiffAccumulator()
    acc.update(ref, out)
    return acc.result()
