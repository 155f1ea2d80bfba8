"""The task seam: a Task makes Scorers; a Scorer takes a stream of output batches and returns metrics."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class QuantCheck:
    """An INT8 file against its reference on a real verification batch (never evaluation images): top-1
    agreement for a classifier, PSNR/SSIM of the output images for an image-to-image model."""

    agreement: float | None
    rel_l2: float
    max_abs_diff: float
    n: int
    collapsed: bool
    psnr: float | None = None       # image-to-image: mean dB against the FP32 output ...
    psnr_min: float | None = None   # ... and the worst image's
    ssim: float | None = None
    psnr_floor: float | None = None  # below this mean PSNR the variant is a collapse

    def summary(self) -> str:
        if self.psnr is not None:
            return f"PSNR vs FP32 on {self.n} verification images {self.psnr:.1f} dB (worst {self.psnr_min:.1f})"
        return f"agreement on {self.n} verification images {self.agreement:.1%}"

    def as_dict(self) -> dict:
        return asdict(self)


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
    has_classes = True            # outputs are class scores: a run matches class names, PyTorch classifier
                                  # recipes apply, evaluation shards on Ray (small outputs to ship back)

    def scorer(self, classes: list[str], labelled: bool, with_reference: bool, names: list[str] | None = None) -> Scorer:
        """names: the evaluated images' file names in stream order (a task may report its worst image)."""
        raise NotImplementedError

    def check(self, ref: np.ndarray, out: np.ndarray, min_agreement: float) -> QuantCheck:
        """A quantized model's outputs against its reference's on a verification batch, judged as this task judges
        them (collapsed: the variant is refused)."""
        raise NotImplementedError

    def gate(self, max_drop_pt: float, min_psnr: float) -> float:
        """Which of a run's two quality bounds this task's recommendation is held to."""
        raise NotImplementedError

    def acceptable(self, m, fp32, gate: float) -> bool:
        """Whether a variant's metrics m stay within `gate` of FP32's (fp32: FP32's metrics)."""
        raise NotImplementedError

    def rank_key(self, m, p50_ms: float):
        """Among variants timed alike (a tie), the larger key wins."""
        raise NotImplementedError
