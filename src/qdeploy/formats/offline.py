"""Reading back what an offline (compiled) artifact says about itself: inside an .ort file's model metadata, inside
a .pt2 package (extra/qdeploy.json), beside an OpenVINO blob (X.blob.json, with the blob's sha256: a blob that
does not match its record is refused). compile/meta.py writes them."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import onnxruntime as ort

from ..errors import ModelFileError
from .keys import sha256, unprefixed
from .sessions import cpu_session

PT2_ENTRY = "extra/qdeploy.json"


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _pt2_meta(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            entry = next((n for n in z.namelist() if n.endswith("/" + PT2_ENTRY)), None)
            if entry is None:
                raise ModelFileError(f"{path.name} carries no qdeploy metadata ({PT2_ENTRY}); build it with "
                                     "'qdeploy compile --target aoti-cpu'")
            return json.loads(z.read(entry))
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"{path.name} is not a readable .pt2 package ({exc}); re-run 'qdeploy compile'") from exc


def _blob_meta(path: Path) -> dict:
    side = sidecar(path)
    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path.name} has no readable record {side.name} beside it ({type(exc).__name__}); "
                             "re-run 'qdeploy compile --target openvino-cpu'") from exc
    if rec.get("sha256") != sha256(path):
        raise ModelFileError(f"{path.name} does not match the sha256 in {side.name} (changed or truncated); "
                             "re-run 'qdeploy compile --target openvino-cpu'")
    return rec["meta"]


def _ort_meta(path: Path) -> dict:
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.load_model_format", "ORT")
    opts.log_severity_level = 3
    try:
        s = cpu_session(str(path), opts)
    except Exception as exc:
        raise ModelFileError(f"{path.name} is not a readable .ort model; re-run 'qdeploy compile --target ort-cpu'"
                             ) from exc
    return unprefixed(s.get_modelmeta().custom_metadata_map.items())


READERS = {".ort": _ort_meta, ".blob": _blob_meta, ".pt2": _pt2_meta}   # suffix -> where its metadata lives
OFFLINE_SUFFIXES = tuple(READERS)


def read_offline_meta(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path} not found; build it with 'qdeploy compile RUN_DIR --target ...'")
    if path.suffix not in READERS:
        raise ModelFileError(f"{path.name} is not an offline artifact ({', '.join(OFFLINE_SUFFIXES)})")
    return READERS[path.suffix](path)
