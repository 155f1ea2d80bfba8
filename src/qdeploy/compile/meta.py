"""Writing what an offline (compiled) artifact says about itself: the source file's qdeploy metadata (classes,
preprocessing, task, fixed inputs) plus how it was compiled (from which file and its sha256, runtime, CPU), where
each format allows (formats/offline.py reads it back): inside a .pt2 package (extra/qdeploy.json) and beside an
OpenVINO blob (X.blob.json, which also holds the blob's sha256); an .ort file keeps it in its model metadata."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..artifacts import write_json
from ..formats.keys import sha256
from ..formats.offline import PT2_ENTRY, sidecar

COMPILED_KEY = "compiled"


def write_sidecar(blob: Path, final_name: str, meta: dict[str, str]) -> Path:
    """The record beside a blob, naming the blob's final name and sha256."""
    final = blob.with_name(final_name)
    return write_json(sidecar(final), {"meta": meta, "file": final_name, "sha256": sha256(blob)})


def add_to_pt2(package: Path, meta: dict[str, str]) -> None:
    """Append qdeploy's metadata to a .pt2 archive, under the archive's own top folder."""
    with zipfile.ZipFile(package, "a") as z:
        top = z.namelist()[0].split("/")[0]
        z.writestr(f"{top}/{PT2_ENTRY}", json.dumps(meta))


