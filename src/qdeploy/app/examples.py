"""Example photos for the page: real photographs that ship with scikit-image (no download)."""
from __future__ import annotations

from pathlib import Path

# scikit-image's bundled sample photos (skimage/data), with what a CIFAR-10 model should say.
EXAMPLES = {"chelsea.png": "cat", "motorcycle_left.png": "(no CIFAR class: motorcycle)",
            "rocket.jpg": "(no CIFAR class: rocket)", "astronaut.png": "(no CIFAR class: person)",
            "coffee.png": "(no CIFAR class: coffee)"}


def example_paths() -> list[Path]:
    try:
        import skimage.data
    except ImportError:
        return []
    root = Path(skimage.data.__file__).parent
    return [root / name for name in EXAMPLES if (root / name).is_file()]
