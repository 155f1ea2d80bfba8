"""manifest.json: versions, machine, stage configs, input/output hashes and stage timings."""
from __future__ import annotations

import json
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path

from . import __version__
from .artifacts import sha256, write_json


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
        from .bench import cpu_name

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
