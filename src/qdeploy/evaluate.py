"""Evaluation: every model over one bounded stream of batches, scored by the task.

Images are decoded once per batch (in a thread pool, ahead of inference) and fed to every model in turn,
so decoding overlaps inference and no model's inputs or outputs are ever held for the whole set.
The first model is the reference (FP32): the others are compared with it batch by batch.

Models named in `sampled` (a variant's file on the run's other targets: the same graph on another runtime) run on
a stratified sample of the set (sample_mask), at most `verify_images` images, beside the reference's outputs on exactly
those images (scored too, as `sample_key(reference)`), so their gate compares like with like.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection

import numpy as np

from .data import ImageSet, PreprocessSpec
from .errors import ConfigError
from .targets import open_session
from .tasks import DEFAULT_TASK, get_task
from .tasks.classification import Metrics, mcnemar_p, metrics_from_logits, paired

__all__ = ["EvalConfig", "Metrics", "evaluate", "evaluate_many", "mcnemar_p",
           "metrics_from_logits", "paired", "sample_key", "sample_mask"]

DEFAULT_VERIFY_IMAGES = 1000


@dataclass
class EvalConfig:
    batch_size: int | None = None  # None: ImageSet.batches sizes by input bytes (256 at 32 px, 8 at 224 px)
    threads: int | None = None
    workers: int | None = None     # decode threads (default: 2 per core, at most 8)
    prefetch: int = 2              # batches decoded ahead of inference
    progress: bool = True
    task: str = DEFAULT_TASK
    # images a variant is verified on on the run's other targets (a stratified sample; 0 = the whole set).
    # Measured on the shared ResNet18 (docs/results.md): OpenVINO and ONNX Runtime running the same file agree on
    # the top-1 of all but a few images in a thousand, so the full set there re-measures the same numbers.
    verify_images: int = DEFAULT_VERIFY_IMAGES

    def __post_init__(self):
        if (self.batch_size is not None and self.batch_size < 1) or self.prefetch < 0:
            raise ConfigError("evaluation batch size must be >= 1 and prefetch >= 0")
        if self.verify_images < 0:
            raise ConfigError(f"--verify-images {self.verify_images} must be >= 0 (0 = every evaluation image)")


def sample_mask(images: ImageSet, verify_images: int, seed: int = 0) -> np.ndarray:
    """Which images make the verification sample (bool per image, at most `verify_images` True; all of them when 0 or
    the set is small). Labelled: evenly spaced within each class, in the set's class proportions, so neither a
    class-sorted folder nor an interleaved order (where every k-th image can be one class) skews it; label-free: a
    seeded random draw."""
    n = len(images)
    mask = np.zeros(n, bool)
    if verify_images <= 0 or n <= verify_images:
        mask[:] = True
        return mask
    if images.labels is None:
        mask[np.random.default_rng(seed).choice(n, verify_images, replace=False)] = True
        return mask
    labels = np.asarray(images.labels)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * verify_images / n                     # each class's share, then the largest remainders
    take = np.floor(quota).astype(int)
    take[np.argsort(take - quota)[:verify_images - take.sum()]] += 1
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        mask[idx[np.linspace(0, len(idx) - 1, k).round().astype(int)] if k else []] = True
    return mask


def sample_key(reference: str) -> str:
    """The scorer key of the reference's outputs on the sampled images."""
    return f"{reference}#sample"


def evaluate_many(models: dict[str, Callable[[np.ndarray], np.ndarray]], images: ImageSet, spec: PreprocessSpec,
                  classes: list[str], cfg: EvalConfig | None = None, sampled: Collection[str] = ()) -> dict:
    """{name: scorer} after streaming `images` through every model; the first model is the reference. Models in
    `sampled` see the images of `sample_mask` only, and `sample_key(reference)` scores the reference on those."""
    cfg = cfg or EvalConfig()
    task = get_task(cfg.task)
    names = list(models)
    ref_name, sampled = names[0], [n for n in names[1:] if n in set(sampled)]
    mask = sample_mask(images, cfg.verify_images) if sampled else None
    files = [p.name for p in images.paths] if images.paths is not None else None
    in_sample = [files[i] for i in np.flatnonzero(mask)] if files is not None and mask is not None else None
    scorers = {n: task.scorer(classes, images.labelled, with_reference=i > 0,
                              names=in_sample if n in sampled else files)
               for i, n in enumerate(names)}
    if sampled:
        scorers[sample_key(ref_name)] = task.scorer(classes, images.labelled, with_reference=False, names=in_sample)
    desc = f"eval {len(models)} model(s)" if cfg.progress else None
    for batch in images.batches(spec, cfg.batch_size, cfg.workers, cfg.prefetch, desc=desc):
        ref = models[ref_name](batch.x)
        scorers[ref_name].update(ref, batch.labels, None)
        for n in names[1:]:
            if n not in sampled:
                scorers[n].update(models[n](batch.x), batch.labels, ref)
        if sampled:
            rows = np.flatnonzero(mask[batch.start:batch.start + len(batch.x)])
            if not len(rows):
                continue
            x, labels = batch.x[rows], None if batch.labels is None else batch.labels[rows]
            scorers[sample_key(ref_name)].update(ref[rows], labels, None)
            for n in sampled:
                scorers[n].update(models[n](x), labels, ref[rows])
    return scorers


def evaluate(paths: list, images: ImageSet, spec: PreprocessSpec, classes: list[str],
             cfg: EvalConfig | None = None) -> dict[str, Metrics]:
    """ONNX files (the first is the reference) on the default target -> {path: metrics}."""

    cfg = cfg or EvalConfig()
    sessions = {str(p): open_session(p, cfg.threads).run for p in paths}
    return {k: s.result() for k, s in evaluate_many(sessions, images, spec, classes, cfg).items()}
