"""ONNX files as qdeploy artifacts: metadata in, metadata out, sessions, atomic writes."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import PreprocessSpec
from .errors import ModelFileError, OutputError

META_PREFIX = "qdeploy."


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def stamp_metadata(model, meta: dict[str, str]) -> None:
    """Set qdeploy.* metadata_props on an onnx.ModelProto in place (replacing old values)."""
    keep = [p for p in model.metadata_props if p.key not in {META_PREFIX + k for k in meta}]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = META_PREFIX + k, v if isinstance(v, str) else json.dumps(v)


@dataclass
class ModelInfo:
    """What a qdeploy ONNX file says about itself."""

    path: Path
    classes: list[str]
    preprocess: PreprocessSpec
    variant: str
    input_name: str
    output_name: str
    extra: dict


def read_info(path: str | Path) -> ModelInfo:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX file {path} not found; pass a .onnx produced by 'qdeploy export' or 'qdeploy run'")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}); re-export it") from exc
    meta = {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}
    spec = PreprocessSpec.from_json(meta["preprocess"]) if "preprocess" in meta else PreprocessSpec()
    n_out = _output_classes(model)
    classes = json.loads(meta["classes"]) if "classes" in meta else [str(i) for i in range(n_out or 0)]
    init_names = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in init_names]
    extra = {k: v for k, v in meta.items() if k not in ("preprocess", "classes", "variant")}
    return ModelInfo(path=path, classes=classes, preprocess=spec, variant=meta.get("variant", path.stem),
                     input_name=inputs[0], output_name=model.graph.output[0].name, extra=extra)


def _output_classes(model) -> int | None:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return dims[-1].dim_value if dims and dims[-1].dim_value > 0 else None


def open_session(path: str | Path, threads: int | None = None, spinning: bool = True):
    """One CPU ONNX Runtime session; threads=None lets ORT use every physical core.

    spinning=False stops idle pool threads from busy-waiting: right for a server holding several
    sessions, whose spinning threads would otherwise steal the cores from the one running.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise ModelFileError(f"ONNX Runtime cannot load {path}: {first}") from exc


def run_batched(session, x: np.ndarray, batch_size: int = 256, progress: str | None = None) -> np.ndarray:
    name = session.get_inputs()[0].name
    starts = range(0, len(x), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=progress, unit="batch", leave=False, disable=None)
    outs = [session.run(None, {name: x[i:i + batch_size]})[0] for i in starts]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
