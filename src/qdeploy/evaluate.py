"""Evaluation: every model over one bounded stream of batches, scored by the task.

Images are decoded once per batch (in a thread pool, ahead of inference) and fed to every model in turn,
so decoding overlaps inference and no model's inputs or outputs are ever held for the whole set.
The first model is the reference (FP32): the others are compared with it batch by batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .data import ImageSet, PreprocessSpec
from .errors import ConfigError
from .targets import open_session
from .tasks import DEFAULT_TASK, get_task
from .tasks.classification import Metrics, mcnemar_p, metrics_from_logits, paired

__all__ = ["EvalConfig", "Metrics", "evaluate", "evaluate_many", "mcnemar_p",
           "metrics_from_logits", "paired"]


@dataclass
class EvalConfig:
    batch_size: int | None = None  # None: ImageSet.batches sizes by input bytes (256 at 32 px, 8 at 224 px)
    threads: int | None = None
    workers: int | None = None     # decode threads (default: 2 per core, at most 8)
    prefetch: int = 2              # batches decoded ahead of inference
    progress: bool = True
    task: str = DEFAULT_TASK

    def __post_init__(self):
        if (self.batch_size is not None and self.batch_size < 1) or self.prefetch < 0:
            raise ConfigError("evaluation batch size must be >= 1 and prefetch >= 0")


def evaluate_many(models: dict[str, Callable[[np.ndarray], np.ndarray]], images: ImageSet, spec: PreprocessSpec,
                  classes: list[str], cfg: EvalConfig | None = None) -> dict:
    """{name: scorer} after streaming `images` through every model; the first model is the reference."""
    cfg = cfg or EvalConfig()
    task = get_task(cfg.task)
    names = list(models)
    files = [p.name for p in images.paths] if images.paths is not None else None
    scorers = {n: task.scorer(classes, images.labelled, with_reference=i > 0, names=files) for i, n in enumerate(names)}
    desc = f"eval {len(models)} model(s)" if cfg.progress else None
    for batch in images.batches(spec, cfg.batch_size, cfg.workers, cfg.prefetch, desc=desc):
        outs = {n: models[n](batch.x) for n in names}
        ref = outs[names[0]]
        for n in names:
            scorers[n].update(outs[n], batch.labels, ref if n != names[0] else None)
    return scorers


def evaluate(paths: list, images: ImageSet, spec: PreprocessSpec, classes: list[str],
             cfg: EvalConfig | None = None) -> dict[str, Metrics]:
    """ONNX files (the first is the reference) on the default target -> {path: metrics}."""

    cfg = cfg or EvalConfig()
    sessions = {str(p): open_session(p, cfg.threads).run for p in paths}
    return {k: s.result() for k, s in evaluate_many(sessions, images, spec, classes, cfg).items()}
