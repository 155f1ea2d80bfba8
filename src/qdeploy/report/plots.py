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


def task_plots(task, rows, pdir: Path) -> dict[str, Path]:
    """The task's own figures (tasks.base.Plot), drawn with the pyplot handed to them."""
    return {p.name: save_png(p.draw(pyplot(), rows), pdir / f"{p.name}.png") for p in task.plots}

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
