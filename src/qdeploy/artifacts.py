"""qdeploy's artifacts: files that carry their own metadata, written atomically and verified before they
get their final name. One writer (`write_onnx`) for every ONNX file qdeploy produces."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from .data import PreprocessSpec
from .errors import ModelFileError, OutputError
from .fixed_inputs import from_metadata
from .formats.ir import read_ir_meta
from .formats.keys import META_PREFIX, unprefixed
from .formats.offline import OFFLINE_SUFFIXES, read_offline_meta
from .tasks import DEFAULT_TASK


@contextmanager
def atomic_path(final: str | Path):
    """Yield a temporary path beside `final`; rename onto `final` only if the block succeeds."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write to {final.parent} ({exc.strerror}); choose a writable --out") from exc
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def model_bytes(path: str | Path) -> int:
    """Size on disk of a model: the file, plus the .bin of an OpenVINO IR .xml."""
    path = Path(path)
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if path.suffix == ".xml" and weights.exists() else 0)


def write_json(path: str | Path, obj) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return Path(path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def stamp_metadata(model, meta: dict) -> None:
    """Set qdeploy.* metadata_props on an onnx.ModelProto in place (replacing old values)."""
    keep = [p for p in model.metadata_props if p.key not in {META_PREFIX + k for k in meta}]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = META_PREFIX + k, v if isinstance(v, str) else json.dumps(v)


def write_onnx(model, out: str | Path, meta: dict, verify: Callable[[Path], object] | None = None):
    """The one ONNX writer: stamp `meta`, save beside `out`, run `verify(tmp_path)` (it raises on a
    mismatch), and only then rename onto `out`. `model` is an onnx.ModelProto or a path to a file that
    a tool (ORT's quantizer) wrote. Returns (out, whatever verify returned)."""

    out = Path(out)
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    stamp_metadata(proto, meta)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
        check = verify(tmp) if verify is not None else None
    return out, check


@dataclass
class ModelInfo:
    """What a qdeploy ONNX file says about itself. classes/preprocess are None when the file has no
    qdeploy metadata (a foreign ONNX file): callers ask the user for them instead of guessing."""

    path: Path
    classes: list[str] | None
    preprocess: PreprocessSpec | None
    variant: str
    input_name: str
    output_name: str
    extra: dict

    @property
    def task(self) -> str:
        return self.extra.get("task", DEFAULT_TASK)

    @property
    def fixed_inputs(self) -> dict:
        return from_metadata(self.extra)

    def require_preprocess(self) -> PreprocessSpec:
        if self.preprocess is None:
            raise ModelFileError(f"{self.path.name} carries no preprocessing metadata (qdeploy.preprocess); "
                                 "start from 'qdeploy run --onnx FILE' with --size and --norm or --mean/--std")
        return self.preprocess


def _info_from_meta(path: Path, meta: dict[str, str]) -> ModelInfo:
    """A model in another runtime's format (an offline artifact, an OpenVINO IR): the same metadata, as strings."""
    spec = PreprocessSpec.from_json(meta["preprocess"]) if meta.get("preprocess") else None
    classes = json.loads(meta["classes"]) if meta.get("classes") else None
    extra = {k: v for k, v in meta.items() if k not in ("preprocess", "classes", "variant")}
    return ModelInfo(path=path, classes=classes or None, preprocess=spec, variant=meta.get("variant", path.stem),
                     input_name=meta.get("input_name", "input"), output_name=meta.get("output_name", "output"),
                     extra=extra)


def raw_meta(path: str | Path) -> dict[str, str]:
    """qdeploy's metadata of any model file it writes, prefix dropped, values as stored (strings): an ONNX file's
    metadata_props, an nncf IR's rt_info, or an offline artifact's (compile/meta.py)."""
    path = Path(path)
    if path.suffix in OFFLINE_SUFFIXES:
        return read_offline_meta(path)
    if path.suffix == ".xml":
        return read_ir_meta(path)

    model = onnx.load(str(path), load_external_data=False)
    return unprefixed((p.key, p.value) for p in model.metadata_props)


def read_info(path: str | Path) -> ModelInfo:
    path = Path(path)
    if path.suffix in OFFLINE_SUFFIXES or (path.suffix == ".xml" and path.is_file()):
        return _info_from_meta(path, raw_meta(path))
    if not path.is_file():
        raise ModelFileError(f"ONNX file {path} not found; pass a .onnx produced by 'qdeploy export' or 'qdeploy run'")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}); re-export it") from exc
    meta = unprefixed((p.key, p.value) for p in model.metadata_props)
    spec = PreprocessSpec.from_json(meta["preprocess"]) if "preprocess" in meta else None
    classes = json.loads(meta["classes"]) if "classes" in meta else None
    init_names = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in init_names]
    extra = {k: v for k, v in meta.items() if k not in ("preprocess", "classes", "variant")}
    return ModelInfo(path=path, classes=classes, preprocess=spec, variant=meta.get("variant", path.stem),
                     input_name=inputs[0], output_name=model.graph.output[0].name, extra=extra)
