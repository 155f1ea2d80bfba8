"""matplotlib for any stage that draws (the report, the auto search, the trainer): the Agg backend, atomic PNGs."""
from __future__ import annotations

from pathlib import Path

from .artifacts import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Write `fig` atomically as PNG and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path
