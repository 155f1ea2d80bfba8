"""Where the shared checkpoint and data live: $QDEPLOY_SHARED, else a `shared/` beside the checkout or cwd."""
from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path | None:
    env = os.environ.get("QDEPLOY_SHARED")
    if env:
        return Path(env)
    for cand in (Path.cwd().parent / "shared", _REPO.parent / "shared", Path.cwd() / "shared"):
        if (cand / "datasets").is_dir() or (cand / "checkpoints").is_dir():
            return cand
    return None


def default_checkpoint() -> Path | None:
    s = shared_dir()
    return s / "checkpoints" / "resnet18_cifar10.pth" if s else None


def default_data() -> Path | None:
    s = shared_dir()
    return s / "datasets" / "cifar10" if s else None
