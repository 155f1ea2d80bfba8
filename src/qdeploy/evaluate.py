"""Accuracy, agreement with a reference, output error, per-class accuracy, confusion matrix."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .runtime import open_session, run_batched


# FP32 top-1 at or above this on validation images drawn from the training split means the model has
# memorised them: top-1 there says nothing, and agreement with FP32 is what selection compares.
MEMORIZED_AT = 0.99


@dataclass
class EvalConfig:
    batch_size: int = 256
    threads: int | None = None
    progress: bool = True


@dataclass
class Metrics:
    n: int
    top1: float
    top5: float
    loss: float
    agreement: float | None = None  # top-1 agreement with the reference (FP32) model
    rel_l2: float | None = None     # ||logits - ref|| / ||ref|| over the whole set
    max_abs_diff: float | None = None
    paired: dict | None = None      # vs the reference: images only one of them gets right, McNemar p (see `paired`)
    per_class: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def metrics_from_logits(logits: np.ndarray, labels: np.ndarray, classes: list[str],
                        reference: np.ndarray | None = None) -> Metrics:
    labels = np.asarray(labels)
    pred = logits.argmax(1)
    k = min(5, logits.shape[1])
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    n_cls = len(classes)
    confusion = np.zeros((n_cls, n_cls), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {c: float(confusion[i, i] / confusion[i].sum()) for i, c in enumerate(classes) if confusion[i].sum()}
    m = Metrics(n=len(labels), top1=float((pred == labels).mean()), top5=float((topk == labels[:, None]).any(1).mean()),
                loss=float(-logp[np.arange(len(labels)), labels].mean()), per_class=per_class,
                confusion=confusion.tolist())
    if reference is not None:
        m.agreement = float((reference.argmax(1) == pred).mean())
        m.rel_l2 = float(np.linalg.norm(logits - reference) / max(np.linalg.norm(reference), 1e-12))
        m.max_abs_diff = float(np.abs(logits - reference).max())
        m.paired = paired(pred, reference.argmax(1), labels)
    return m


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test: probability of a split at least this uneven between the b images
    only model A gets right and the c only model B gets right, if both were equally accurate."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, 2 * math.exp(top) * sum(math.exp(v - top) for v in logs))


def paired(pred: np.ndarray, ref_pred: np.ndarray, labels: np.ndarray) -> dict:
    """Paired accuracy comparison on the same images: is a top-1 difference more than chance?"""
    right, ref_right = pred == labels, ref_pred == labels
    only, ref_only = int((right & ~ref_right).sum()), int((ref_right & ~right).sum())
    return {"only_this": only, "only_ref": ref_only, "diff_pt": 100 * (only - ref_only) / max(len(labels), 1),
            "p_value": mcnemar_p(only, ref_only)}


def predict(onnx_path, x: np.ndarray, cfg: EvalConfig | None = None, label: str = "") -> np.ndarray:
    cfg = cfg or EvalConfig()
    session = open_session(onnx_path, cfg.threads)
    return run_batched(session, x, cfg.batch_size, progress=f"eval {label}" if cfg.progress else None)


def evaluate(onnx_path, x: np.ndarray, labels: np.ndarray, classes: list[str],
             reference: np.ndarray | None = None, cfg: EvalConfig | None = None) -> tuple[Metrics, np.ndarray]:
    """Run `onnx_path` over the whole set; returns metrics and the logits (the next variant's reference)."""
    logits = predict(onnx_path, x, cfg, label=str(onnx_path))
    return metrics_from_logits(logits, labels, classes, reference), logits
