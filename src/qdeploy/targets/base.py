"""What every target provides: open a model file into a Session that maps an input batch to outputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import batch_for


@dataclass
class Session:
    """A loaded model on one target. `run(x)` returns the first output for the batch `x`."""

    path: Path
    run: Callable[[np.ndarray], np.ndarray]
    input_name: str
    runtime: str          # e.g. "onnxruntime 1.32.0"
    provider: str         # e.g. "CPUExecutionProvider"
    threads: int
    info: dict = field(default_factory=dict)


class Target:
    name = ""
    device = "cpu"
    mode = "online"       # online: the runtime executes the graph; offline: a compiled artifact
    package = ""          # the Python distribution of its runtime (its version goes in reports)
    # a float precision below FP32 that this target computes float graphs in ("bf16"): the FP32 file run here is
    # then a reduced-precision deployment of its own, a candidate judged by the same gates as the INT8 files
    reduced_float: str | None = None

    def available(self) -> bool:
        return True

    def open(self, path, threads: int | None = None, spinning: bool = True) -> Session:
        raise NotImplementedError


def run_batched(session: Session, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Outputs for a bounded in-memory batch (calibration pool, verification batch), `batch_size` at a time
    (default: by input bytes, data.batch_for)."""

    batch_size = batch_size or batch_for(x.shape[-1])
    outs = [session.run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
