"""Where qdeploy's metadata lives in a model file and how a file is fingerprinted."""
from __future__ import annotations

import hashlib
from pathlib import Path

META_PREFIX = "qdeploy."    # every key qdeploy stores in a model's metadata starts with it


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unprefixed(pairs) -> dict[str, str]:
    """qdeploy's entries of a (key, value) metadata listing, without the qdeploy. prefix."""
    return {k[len(META_PREFIX):]: v for k, v in pairs if k.startswith(META_PREFIX)}
