"""manifest.json: versions, machine, stage configs, input/output hashes and stage timings."""
from __future__ import annotations

import json
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path

from . import __version__
from .artifacts import write_json
from .bench import cpu_name
from .data import PreprocessSpec
from .data.sampling import DataConfig, balanced_indices, open_calib_eval
from .errors import ModelFileError
from .formats.keys import sha256


def versions() -> dict[str, str]:
    out = {"qdeploy": __version__, "python": platform.python_version()}
    for mod in ("torch", "onnx", "onnxruntime", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = "not installed"
    return out


class Manifest:
    """Accumulates what a run did; written atomically, merged with an existing manifest in `out`."""

    def __init__(self, out: str | Path):
        self.path = Path(out) / "manifest.json"
        old = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(),
                     "machine": {"cpu": cpu_name(), "platform": platform.platform(),
                                 "cores": __import__("os").cpu_count()},
                     "stages": old.get("stages", {}), "inputs": old.get("inputs", {}),
                     "outputs": old.get("outputs", {})}

    def config(self, stage: str, cfg) -> None:
        self.data["stages"].setdefault(stage, {})["config"] = asdict(cfg) if is_dataclass(cfg) else cfg

    def note(self, stage: str, **values) -> None:
        self.data["stages"].setdefault(stage, {}).update(values)

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        yield
        self.note(name, seconds=round(time.perf_counter() - t0, 3))

    def input(self, label: str, path: str | Path) -> None:
        p = Path(path)
        self.data["inputs"][label] = {"path": str(p), "sha256": sha256(p) if p.is_file() else None}

    def output(self, path: str | Path) -> None:
        p = Path(path)
        self.data["outputs"][p.name] = {"sha256": sha256(p), "bytes": p.stat().st_size}

    def write(self) -> Path:
        return write_json(self.path, self.data)


def load_run_manifest(run_dir: str | Path) -> dict:
    """The manifest.json of a run directory, or one clear error."""
    run_dir = Path(run_dir)
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{run_dir} has no readable manifest.json ({type(exc).__name__}); pass a directory "
                             "written by 'qdeploy run'") from exc


def run_eval_images(man: dict, n: int, data_root: str | None = None):
    """The first n images of a class-balanced order over a run's own evaluation split (preprocessed, labels or
    None, file names or None): what offline forms are verified on and what a bundle's golden request holds."""


    cfg = dict(man["stages"]["data"]["config"])
    cfg["preprocess"] = PreprocessSpec(**cfg["preprocess"])
    data = DataConfig(**cfg)
    if data_root:
        data = replace(data, root=str(data_root))
    evalset = open_calib_eval(data)[1]
    chosen = evalset.subset(balanced_indices(evalset.labels, n, data.seed, size=len(evalset)))
    names = [p.name for p in chosen.paths] if chosen.paths is not None else None
    return chosen.load(data.preprocess), chosen.labels, names
