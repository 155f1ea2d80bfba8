"""Image-to-image (style transfer, enhancement): outputs are images, judged against the FP32 output by numbers.

Per image: PSNR (dB), SSIM (scikit-image, over the three colour channels) and max |error|, on outputs in
[0, data_range] (the style model ends in a Sigmoid: range 1). The scorer keeps those three numbers per image
(a few bytes each) and never the images. Seed 003 compared its INT8 outputs by eye; this is the number.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..compare import compare_outputs
from ..errors import ConfigError
from ..records import from_json
from .base import Column, Plot, QuantCheck, Scorer, Task, finish_axes, fmt

# A variant whose mean PSNR against FP32 is below this is a collapse: refused like a classifier below 80 %
# agreement (no final-name file).
COLLAPSE_PSNR_DB = 20.0
PSNR_CAP_DB = 100.0  # identical outputs: reported as 100 dB instead of infinity


@dataclass
class ImageMetrics:
    n: int
    psnr_mean: float | None = None      # dB vs the reference (FP32) output, mean over images
    psnr_min: float | None = None       # the worst image's PSNR
    ssim_mean: float | None = None
    ssim_min: float | None = None
    max_abs_diff: float | None = None   # over every pixel of every image
    worst: int | None = None            # index (in evaluation order) of the worst-PSNR image
    worst_name: str | None = None
    psnr: list[float] = field(default_factory=list)   # per image, evaluation order (histogram, worst image)
    ssim: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ImageMetrics":
        return from_json(cls, d)


def psnr(ref: np.ndarray, out: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(out, np.float64) - np.asarray(ref, np.float64)) ** 2))
    return PSNR_CAP_DB if mse <= 0 else min(PSNR_CAP_DB, 10 * np.log10(data_range ** 2 / mse))


def ssim(ref: np.ndarray, out: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM of two (3,H,W) images (scikit-image, 7x7 window, channels averaged)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.moveaxis(np.asarray(ref, np.float32), 0, -1),
                                       np.moveaxis(np.asarray(out, np.float32), 0, -1),
                                       channel_axis=-1, data_range=data_range))


def to_uint8(chw: np.ndarray) -> np.ndarray:
    """A (3,H,W) output in 0..1 -> the (H,W,3) uint8 image a person sees (report grids, the app)."""
    return (np.clip(chw, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


def image_pair_metrics(ref: np.ndarray, out: np.ndarray, data_range: float = 1.0) -> dict:
    """PSNR, SSIM and max |error| of one output image against its reference."""
    return {"psnr": psnr(ref, out, data_range), "ssim": ssim(ref, out, data_range),
            "max_abs": float(np.max(np.abs(np.asarray(out, np.float64) - ref)))}


class ImageScorer(Scorer):
    def __init__(self, with_reference: bool, data_range: float = 1.0, names: list[str] | None = None):
        self.with_ref, self.data_range, self.names = with_reference, data_range, names
        self.n, self.psnr, self.ssim, self.max_abs = 0, [], [], 0.0

    def update(self, out, labels, ref) -> None:
        if out.ndim != 4:
            raise ValueError(f"image-to-image outputs are (n,c,h,w) images; this model gives shape {out.shape}. "
                             "Use --task classification for a classifier")
        self.n += len(out)
        if not self.with_ref or ref is None:
            return
        if ref.shape != out.shape:
            raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
        for r, o in zip(ref, out):
            m = image_pair_metrics(r, o, self.data_range)
            self.psnr.append(m["psnr"])
            self.ssim.append(m["ssim"])
            self.max_abs = max(self.max_abs, m["max_abs"])

    def result(self) -> ImageMetrics:
        m = ImageMetrics(n=self.n)
        if self.psnr:
            worst = int(np.argmin(self.psnr))
            m.psnr_mean, m.psnr_min = float(np.mean(self.psnr)), float(self.psnr[worst])
            m.ssim_mean, m.ssim_min = float(np.mean(self.ssim)), float(np.min(self.ssim))
            m.max_abs_diff, m.worst, m.psnr, m.ssim = self.max_abs, worst, list(self.psnr), list(self.ssim)
            if self.names and worst < len(self.names):
                m.worst_name = self.names[worst]
        return m


def quality_vs_latency(plt, rows):
    """Mean PSNR against FP32 over batch-1 latency (FP32 itself: a dotted line at its latency), marker area ~ size."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for r in rows:
        if r.metrics.psnr_mean is None:
            ax.axvline(r.bench.p50_ms, ls=":", color="#888888", label=f"{r.name} {r.bench.p50_ms:.1f} ms")
            continue
        ax.scatter([r.bench.p50_ms], [r.metrics.psnr_mean], s=30 + 8 * r.bench.size_bytes / 1e6, color="#3b7dd8")
        ax.annotate(r.name, (r.bench.p50_ms, r.metrics.psnr_mean), textcoords="offset points", xytext=(5, 5),
                    fontsize=8)
    return finish_axes(fig, ax, "batch-1 latency p50 (ms)", "mean PSNR vs FP32 (dB)",
                       "Quality vs latency (marker area ~ size)")


def psnr_hist(plt, rows):
    """Per-image PSNR against FP32, one histogram per INT8 variant."""
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    for r in rows:
        if r.kind != "fp32" and r.metrics.psnr:
            ax.hist(r.metrics.psnr, bins=20, alpha=0.55, label=f"{r.name} (mean {r.metrics.psnr_mean:.1f} dB)")
    return finish_axes(fig, ax, "PSNR vs FP32 output (dB), one count per image", "images",
                       "Per-image PSNR of each INT8 variant")


class ImageToImageTask(Task):
    name = "image-to-image"
    metrics_type = ImageMetrics
    plots = (Plot("accuracy_vs_latency", quality_vs_latency), Plot("psnr_hist", psnr_hist))
    collapse_psnr = COLLAPSE_PSNR_DB
    has_classes = False           # outputs are images: no class names, ONNX recipes only, not sharded on Ray

    def gate(self, max_drop_pt: float, min_psnr: float) -> float:
        return min_psnr

    def rule(self, gate: float, labelled: bool) -> str:
        return f"keeps a mean PSNR against the FP32 output of at least {gate} dB"

    def acceptable(self, m, fp32, gate: float) -> bool:
        """Mean PSNR against FP32's outputs of at least `gate` dB."""
        return m.psnr_mean is not None and m.psnr_mean >= gate

    def rank_key(self, m, fp32, p50_ms: float):
        return m.psnr_mean

    columns = (Column("PSNR dB mean", lambda m, f: "reference" if m is f else fmt(m.psnr_mean, ".2f")),
               Column("PSNR worst", lambda m, f: "–" if m is f else fmt(m.psnr_min, ".2f")),
               Column("worst image", lambda m, f: "–" if m is f else m.worst_name or "–"),
               Column("SSIM mean", lambda m, f: "–" if m is f else fmt(m.ssim_mean, ".4f")),
               Column("SSIM worst", lambda m, f: "–" if m is f else fmt(m.ssim_min, ".4f")),
               Column("max abs err", lambda m, f: "–" if m is f else fmt(m.max_abs_diff, ".3f")))
    brief = (Column("PSNR dB vs ORT FP32", lambda m, f: "reference" if m.psnr_mean is None else f"{m.psnr_mean:.2f}"),
             Column("worst", lambda m, f: "–" if m.psnr_mean is None else f"{m.psnr_min:.2f}"))
    refused_column = 0
    rate_format = ".1f"

    def refused(self, check: QuantCheck) -> str | None:
        return None if check.psnr is None else f"{check.psnr:.2f}"

    def describe(self, m) -> str:
        return ("reference" if m.psnr_mean is None else
                f"PSNR vs FP32 {m.psnr_mean:.2f} dB (worst {fmt(m.psnr_min, '.2f')}), SSIM {fmt(m.ssim_mean, '.4f')}")

    offline_tol = 1e-3   # a compiled INT8 form's outputs against the online form's, relative to the largest output

    def offline_mismatch(self, d, scale: float) -> str | None:
        tol = self.offline_tol * scale
        return f"max |diff| {d.max_abs_diff:.3g} > {tol:.3g}" if d.max_abs_diff > tol else None

    def output_error(self, shape, n_classes) -> str | None:
        return None if len(shape) == 4 else (
            f"--task {self.name} needs a model that outputs images (n,c,h,w); this one gives shape {tuple(shape)}. "
            "Use --task classification for a classifier")

    def preprocess_flags(self, flags, stored):
        """A model file with nothing stored and no normalisation given reads 0..1 pixels (--norm unit), the
        convention of such models, instead of the CIFAR default; it carries no input size, so --size is needed."""
        if stored is not None:
            return flags
        if flags.size is None:
            raise ConfigError(f"a {self.name} model carries no input size; give --size N (the square side the "
                              "photos are scaled and centre-cropped to, e.g. --size 512)")
        none_given = flags.norm is None and flags.mean is None and flags.std is None
        return replace(flags, norm="unit") if none_given else flags

    def facts(self, m) -> dict:
        return {"psnr": m.psnr_mean, "psnr_min": m.psnr_min, "ssim": m.ssim_mean}

    def cell_facts(self, m, fp32) -> dict:
        return self.facts(m)

    def cell_within(self, rec, gate) -> bool:
        """Mean PSNR against FP32 of at least `gate` dB."""
        return rec.get("psnr") is not None and rec["psnr"] >= gate

    def cell_quality(self, rec) -> str:
        return f"{fmt(rec.get('psnr'), '.2f')} dB"

    def scorer(self, classes, labelled, with_reference, names=None) -> ImageScorer:
        return ImageScorer(with_reference, names=names)

    def check(self, ref: np.ndarray, out: np.ndarray, min_agreement: float = 0.0) -> QuantCheck:
        """PSNR / SSIM of an INT8 output batch against FP32's; collapsed below COLLAPSE_PSNR_DB (min_agreement, a
        classifier's threshold, does not apply)."""
        s = self.scorer([], False, True)
        s.update(out, None, ref)
        m = s.result()
        d = compare_outputs(ref, out)
        return QuantCheck(agreement=None, rel_l2=d.rel_l2, max_abs_diff=d.max_abs_diff, n=d.n,
                          collapsed=m.psnr_mean < self.collapse_psnr, psnr=m.psnr_mean, psnr_min=m.psnr_min,
                          ssim=m.ssim_mean, psnr_floor=self.collapse_psnr)
