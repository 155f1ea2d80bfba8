"""The task seam: a Task makes Scorers; a Scorer takes a stream of output batches and returns metrics; the Task
also says how its metrics read in a run's tables and logs (columns, describe)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


def fmt(v, spec: str) -> str:
    """A table cell: '–' for a missing figure."""
    return "–" if v is None else format(v, spec)


def pct(v):
    return None if v is None else 100 * v


@dataclass(frozen=True)
class Column:
    """One quality column of a run's tables: its header, and its cell for a variant's metrics m given FP32's
    (fp32; m is fp32 on the reference row itself)."""

    head: str
    cell: Callable[[object, object], str]


def finish_axes(fig, ax, xlabel: str, ylabel: str, title: str, legend: bool = True):
    """A task figure's labels, title, legend and grid; returns the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


@dataclass(frozen=True)
class Plot:
    """One figure of a run's report that its task draws: the file stem under plots/ (and the report's key), and the
    drawing: (plt, rows) -> a matplotlib Figure, where plt is matplotlib.pyplot handed in by the report (tasks import
    no plotting library) and rows are the measured variants."""

    name: str
    draw: Callable[[object, list], object]


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

    def rule(self, gate: float, labelled: bool) -> str:
        """The recommendation rule in words, completing 'the fastest variant that ...'."""
        raise NotImplementedError

    def acceptable(self, m, fp32, gate: float) -> bool:
        """Whether a variant's metrics m stay within `gate` of FP32's (fp32: FP32's metrics)."""
        raise NotImplementedError

    def rank_key(self, m, fp32, p50_ms: float):
        """Among variants timed alike (a tie), the larger key wins. `fp32`: the reference's metrics on the images `m`
        was scored on (a target verified on a sample has its own), so keys measured on different images compare."""
        raise NotImplementedError

    # -- how the task's metrics read (report tables, logs) --
    columns: tuple[Column, ...] = ()   # the run's main table, between compression and latency
    brief: tuple[Column, ...] = ()     # two columns for the Targets table (quality on another runtime)
    refused_column = 0                 # the column that shows what a refused variant reached ...
    rate_format = ".0f"                # ... and how throughput (images/s) is written

    def refused(self, check: QuantCheck) -> str | None:
        """What a refused variant's file reached on its verification images (its cell in refused_column)."""
        raise NotImplementedError

    def describe(self, m) -> str:
        """One line for the log: the variant's metrics."""
        raise NotImplementedError

    def offline_mismatch(self, d, scale: float) -> str | None:
        """An INT8 model's compiled (offline) form against its online form (d: compare.compare_outputs of the two;
        scale: the largest online output, at least 1): why it is not the same model, or None."""
        raise NotImplementedError

    plots: tuple[Plot, ...] = ()   # the report's task figures (size and latency bars are every task's)

    # -- exporting a model of this task --
    output_name = "output"         # the ONNX output's name

    def output_error(self, shape: tuple, n_classes: int) -> str | None:
        """Why a model whose outputs have `shape` (on a batch) is not a model of this task, or None."""
        raise NotImplementedError

    def top1_agreement(self, d) -> float | None:
        """The share of images whose top-1 two outputs share (d: compare.compare_outputs), where top-1 means
        something for this task; None where it does not (export parity and a bundle's golden request then rest
        on max |diff| alone)."""
        return None

    def preprocess_flags(self, flags, stored):
        """The user's preprocessing flags completed by this task's convention, given what the model file stored
        (None: nothing)."""
        return flags

    # -- the app's facts and a sweep's leaderboard --
    def facts(self, m) -> dict[str, float | None]:
        """A served variant's quality facts from its metrics (the app's /api/models and tables)."""
        raise NotImplementedError

    def cell_facts(self, m, fp32) -> dict[str, float | None]:
        """A sweep cell's quality numbers (its leaderboard record) from the variant's and FP32's metrics."""
        raise NotImplementedError

    def cell_within(self, rec: dict, gate: float) -> bool:
        """Whether a sweep cell's record (cell_facts' numbers) is within `gate` (this task's gate())."""
        raise NotImplementedError

    def cell_quality(self, rec: dict) -> str:
        """A sweep cell's quality, one leaderboard cell."""
        raise NotImplementedError
