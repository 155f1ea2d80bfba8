"""Classification: logits in, top-k / loss / per-class / confusion out when the data has labels, and
agreement / top-5 overlap / KL / rel-L2 against the FP32 reference always (label-free data included)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..compare import DiffAccumulator, compare_outputs
from ..records import from_json
from .base import Column, Plot, QuantCheck, Scorer, Task, finish_axes, fmt, pct


@dataclass
class Paired:
    """Two models' top-1 on the same labelled images: how many only one gets right, and the exact McNemar p."""

    only_this: int
    only_ref: int
    diff_pt: float
    p_value: float


@dataclass
class Metrics:
    n: int
    top1: float | None = None       # None on label-free data
    top5: float | None = None
    loss: float | None = None
    agreement: float | None = None  # top-1 agreement with the reference (FP32) model
    top5_overlap: float | None = None  # mean |top-5 ∩ reference top-5| / 5
    kl_ref: float | None = None     # mean KL(reference ‖ this) of the softmax outputs
    rel_l2: float | None = None     # ||logits - ref|| / ||ref|| over the whole set
    max_abs_diff: float | None = None
    paired: Paired | None = None    # vs the reference: images only one of them gets right, McNemar p
    per_class: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Metrics":
        return from_json(cls, d)


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test: probability of a split at least this uneven between the b images
    only model A gets right and the c only model B gets right, if both were equally accurate."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, 2 * math.exp(top) * sum(math.exp(v - top) for v in logs))


def paired(pred: np.ndarray, ref_pred: np.ndarray, labels: np.ndarray) -> Paired:
    """Paired accuracy comparison on the same images: is a top-1 difference more than chance?"""
    right, ref_right = pred == labels, ref_pred == labels
    only, ref_only = int((right & ~ref_right).sum()), int((ref_right & ~right).sum())
    return Paired(only_this=only, only_ref=ref_only, diff_pt=100 * (only - ref_only) / max(len(labels), 1),
                  p_value=mcnemar_p(only, ref_only))


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    shifted = z - z.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def _topk(z: np.ndarray, k: int) -> np.ndarray:
    return np.argpartition(-z, k - 1, axis=1)[:, :k]


class ClassificationScorer(Scorer):
    """Running sums over batches; keeps per image only the top-1 prediction (for paired tests) and the
    label it was scored against."""

    def __init__(self, classes: list[str], labelled: bool, with_reference: bool):
        self.classes, self.labelled, self.with_ref = classes, labelled, with_reference
        n_cls = max(len(classes), 1)
        self.confusion = np.zeros((n_cls, n_cls), np.int64)
        self.n = self.top1 = self.top5 = 0
        self.loss = self.kl = self.overlap = 0.0
        self.diff = DiffAccumulator()
        self.preds, self.ref_preds, self.labels = [], [], []

    def update(self, out, labels, ref) -> None:
        pred, k = out.argmax(1), min(5, out.shape[1])
        top = _topk(out, k)
        logp = log_softmax(out)
        self.n += len(out)
        self.preds.append(pred.astype(np.int32))
        if self.labelled and labels is not None:
            self.labels.append(labels.astype(np.int32))
            self.top1 += int((pred == labels).sum())
            self.top5 += int((top == labels[:, None]).any(1).sum())
            self.loss -= float(logp[np.arange(len(labels)), labels].sum())
            np.add.at(self.confusion, (labels, pred), 1)
        if self.with_ref and ref is not None:
            self.diff.update(ref, out)
            self.ref_preds.append(ref.argmax(1).astype(np.int32))
            ref_logp = log_softmax(ref)
            self.kl += float((np.exp(ref_logp) * (ref_logp - logp)).sum())
            ref_top = _topk(ref, k)
            self.overlap += float(sum(len(set(a) & set(b)) for a, b in zip(top.tolist(), ref_top.tolist())) / k)

    def seen_labels(self) -> np.ndarray | None:
        """The labels scored against, in stream order (None on label-free data)."""
        return np.concatenate(self.labels) if self.labels else None

    def predictions(self) -> np.ndarray:
        return np.concatenate(self.preds) if self.preds else np.zeros(0, np.int32)

    def result(self) -> Metrics:
        n = max(self.n, 1)
        m = Metrics(n=self.n)
        labels = self.seen_labels() if self.labelled else None
        if labels is not None:
            m.top1, m.top5, m.loss = self.top1 / n, self.top5 / n, self.loss / n
            m.confusion = self.confusion.tolist()
            m.per_class = {c: float(self.confusion[i, i] / self.confusion[i].sum())
                           for i, c in enumerate(self.classes) if self.confusion[i].sum()}
        if self.with_ref and self.ref_preds:
            d = self.diff.result()
            m.agreement, m.rel_l2, m.max_abs_diff = d.agreement, d.rel_l2, d.max_abs_diff
            m.kl_ref, m.top5_overlap = self.kl / n, self.overlap / n
            if labels is not None:
                m.paired = paired(self.predictions(), np.concatenate(self.ref_preds), labels)
        return m


def accuracy_vs_latency(plt, rows):
    """Top-1 (label-free: agreement with FP32) against batch-1 latency, marker area ~ size."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    labelled = all(r.metrics.top1 is not None for r in rows)
    for r in rows:
        x, y = r.bench.p50_ms, 100 * ClassificationTask.score(r.metrics)
        ax.scatter([x], [y], s=30 + 8 * r.bench.size_bytes / 1e6, color="#888888" if r.kind == "fp32" else "#3b7dd8",
                   alpha=0.8)
        ax.annotate(r.name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    return finish_axes(fig, ax, "batch-1 latency p50 (ms, log)",
                       "top-1 (%)" if labelled else "top-1 agreement with FP32 (%)",
                       "Accuracy vs latency (marker area ~ size)", legend=False)


class ClassificationTask(Task):
    name = "classification"
    metrics_type = Metrics
    output_name = "logits"
    plots = (Plot("accuracy_vs_latency", accuracy_vs_latency),)

    def scorer(self, classes, labelled, with_reference, names=None) -> ClassificationScorer:
        return ClassificationScorer(classes, labelled, with_reference)

    def gate(self, max_drop_pt: float, min_psnr: float) -> float:
        return max_drop_pt

    @staticmethod
    def score(m) -> float:
        """Top-1 where there are labels, else agreement with FP32 (FP32 itself: 1)."""
        if m.top1 is not None:
            return m.top1
        return 1.0 if m.agreement is None else m.agreement

    def rule(self, gate: float, labelled: bool) -> str:
        return f"keeps {'accuracy' if labelled else 'agreement with FP32'} within {gate} pt of FP32"

    def acceptable(self, m, fp32, gate: float) -> bool:
        """Top-1 drop (without labels: disagreement with FP32) of at most `gate` points (a drop of exactly the gate
        passes: 100 * (0.90 - 0.89) is 1.0000000000000009 in floating point)."""
        return 100 * (self.score(fp32) - self.score(m)) <= gate + 1e-9

    def rank_key(self, m, fp32, p50_ms: float):
        """Top-1 change against FP32 on the same images (without labels: agreement), then speed."""
        return self.score(m) - self.score(fp32), -p50_ms

    columns = (Column("top-1 %", lambda m, f: fmt(pct(m.top1), ".2f")),
               Column("drop pt", lambda m, f: fmt(None if m.top1 is None or f is None or f.top1 is None
                                                  else 100 * (f.top1 - m.top1), "+.2f")),
               Column("agreement %", lambda m, f: fmt(pct(m.agreement), ".2f")),
               Column("top-5 overlap %", lambda m, f: fmt(pct(m.top5_overlap), ".1f")),
               Column("rel-L2", lambda m, f: fmt(m.rel_l2, ".4f")))
    brief = (Column("top-1 %", lambda m, f: fmt(pct(m.top1), ".2f")),
             Column("agreement % vs ORT FP32", lambda m, f: fmt(pct(m.agreement), ".2f")))
    refused_column = 2

    def refused(self, check: QuantCheck) -> str | None:
        return None if check.agreement is None else f"{100 * check.agreement:.2f}"

    def describe(self, m) -> str:
        acc = "" if m.top1 is None else f"top-1 {m.top1:.2%}" + ("" if m.top5 is None else f", top-5 {m.top5:.2%}")
        agree = "" if m.agreement is None else f", agreement {m.agreement:.2%}, rel-L2 {fmt(m.rel_l2, '.4f')}"
        return f"{acc or 'no labels'}{agree}"

    def offline_mismatch(self, d, scale: float) -> str | None:
        """The same top-1 on every verification image (a compiled INT8 form may round differently)."""
        return f"top-1 differs from the online form on {d.n - round(d.agreement * d.n)} images" \
            if d.agreement < 1.0 else None

    def output_error(self, shape, n_classes) -> str | None:
        if len(shape) != 2:
            return (f"a classifier outputs (n, classes) scores; this model gives shape {tuple(shape)}. "
                    "Use --task image-to-image for a model that outputs images")
        if shape[-1] != n_classes:
            return (f"model outputs {shape[-1]} classes but the data has {n_classes}; "
                    "pass the matching --classes or checkpoint")
        return None

    def top1_agreement(self, d) -> float | None:
        return d.agreement

    def facts(self, m) -> dict:
        return {"top1": pct(m.top1), "agreement": pct(m.agreement)}

    def cell_facts(self, m, fp32) -> dict:
        return {"top1": m.top1, "fp32_top1": fp32.top1, "agreement": m.agreement,
                "drop_pt": None if m.top1 is None or fp32.top1 is None else 100 * (fp32.top1 - m.top1)}

    def cell_within(self, rec, gate) -> bool:
        """Top-1 drop of at most `gate` points (a label-free cell has no drop: never within)."""
        return rec.get("drop_pt") is not None and rec["drop_pt"] <= gate

    def cell_quality(self, rec) -> str:
        return f"{fmt(pct(rec.get('top1')), '.2f')} ({fmt(rec.get('drop_pt'), '+.2f')} pt)"

    def check(self, ref, out, min_agreement) -> QuantCheck:
        """Top-1 agreement with the reference; collapsed below min_agreement."""
        d = compare_outputs(ref, out)
        return QuantCheck(agreement=d.agreement, rel_l2=d.rel_l2, max_abs_diff=d.max_abs_diff, n=d.n,
                          collapsed=d.agreement < min_agreement)


def metrics_from_logits(logits: np.ndarray, labels: np.ndarray | None, classes: list[str],
                        reference: np.ndarray | None = None) -> Metrics:
    """Metrics for outputs already in hand (one batch)."""
    s = ClassificationScorer(classes, labels is not None, reference is not None)
    s.update(logits, labels, reference)
    return s.result()
