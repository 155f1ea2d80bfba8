"""PNG plots for the report (matplotlib, Agg backend, imported only here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import pyplot, save_png


def _bars(rows, key, ylabel, title, path, fmt):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2.5, 3.4))
    names = [r.name for r in rows]
    vals = [key(r) for r in rows]
    colors = ["#888888" if r.kind == "fp32" else "#3b7dd8" for r in rows]
    bars = ax.bar(names, vals, color=colors)
    for b, v in zip(bars, vals):
        ax.annotate(fmt(v), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=20)
    return save_png(fig, path)


def size_plot(rows, path: Path) -> Path:
    return _bars(rows, lambda r: r.bench.size_bytes / 1e6, "MB on disk", "Model size", path, lambda v: f"{v:.1f}")


def latency_plot(rows, path: Path) -> Path:
    return _bars(rows, lambda r: r.bench.p50_ms, "ms (p50, batch 1)", "Batch-1 latency", path,
                 lambda v: f"{v:.2f}")


def psnr_hist(rows, path: Path) -> Path:
    """Per-image PSNR against FP32, one histogram per INT8 variant (image-to-image)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    for r in rows:
        if r.kind != "fp32" and r.metrics.psnr:
            ax.hist(r.metrics.psnr, bins=20, alpha=0.55, label=f"{r.name} (mean {r.metrics.psnr_mean:.1f} dB)")
    ax.set_xlabel("PSNR vs FP32 output (dB), one count per image")
    ax.set_ylabel("images")
    ax.set_title("Per-image PSNR of each INT8 variant")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def scatter_plot(rows, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if rows and hasattr(rows[0].metrics, "psnr_mean"):
        for r in rows:
            if r.metrics.psnr_mean is None:
                ax.axvline(r.bench.p50_ms, ls=":", color="#888888", label=f"{r.name} {r.bench.p50_ms:.1f} ms")
                continue
            ax.scatter([r.bench.p50_ms], [r.metrics.psnr_mean], s=30 + 8 * r.bench.size_bytes / 1e6, color="#3b7dd8")
            ax.annotate(r.name, (r.bench.p50_ms, r.metrics.psnr_mean), textcoords="offset points", xytext=(5, 5),
                        fontsize=8)
        ax.set_xlabel("batch-1 latency p50 (ms)")
        ax.set_ylabel("mean PSNR vs FP32 (dB)")
        ax.set_title("Quality vs latency (marker area ~ size)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        return save_png(fig, path)
    labelled = all(r.metrics.top1 is not None for r in rows)
    for r in rows:
        score = r.metrics.top1 if labelled else (1.0 if r.metrics.agreement is None else r.metrics.agreement)
        x, y = r.bench.p50_ms, 100 * score
        ax.scatter([x], [y], s=30 + 8 * r.bench.size_bytes / 1e6, color="#888888" if r.kind == "fp32" else "#3b7dd8",
                   alpha=0.8)
        ax.annotate(r.name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency p50 (ms, log)")
    ax.set_ylabel("top-1 (%)" if labelled else "top-1 agreement with FP32 (%)")
    ax.set_title("Accuracy vs latency (marker area ~ size)")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def confusion_plot(row, classes, path: Path) -> Path:
    plt = pyplot()
    cm = np.asarray(row.metrics.confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion: {row.name} (top-1 {100 * row.metrics.top1:.2f} %)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_png(fig, path)


def image_grid(rows: list[dict], title: str, path: Path, gain: float = 10.0) -> Path:
    """Image-to-image: one row per image, input | FP32 | INT8 | |INT8 - FP32| x gain as a heat map."""
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), 4, figsize=(10, 2.6 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows):
        err = np.abs(r["int8"].astype(np.float32) - r["fp32"].astype(np.float32)).mean(-1) / 255.0
        panels = [(r["input"], f"input {r['name']}"), (r["fp32"], "FP32"),
                  (r["int8"], f"INT8 ({r['psnr']:.1f} dB)"), (None, f"|error| x{gain:g}")]
        for ax, (img, label) in zip(ax_row, panels):
            if img is None:
                im = ax.imshow(np.clip(err * gain, 0, 1), cmap="inferno", vmin=0, vmax=1)
            else:
                ax.imshow(img)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
        fig.colorbar(im, ax=ax_row[3], fraction=0.046)
    fig.suptitle(title, fontsize=9)
    return save_png(fig, path)
