"""PyTorch AOTInductor on the CPU: the offline form of a PyTorch model. `qdeploy compile --target aoti-cpu`
writes a .pt2 package (C++ kernels compiled ahead of time into a shared library inside it); this target loads
it with `aoti_load_package`, in a process that never imports the model's Python class."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import ModelFileError
from ..formats.offline import read_offline_meta
from .base import Session, Target

PT2_SUFFIX = ".pt2"


class AotiCpu(Target):
    name = "aoti-cpu"
    package = "torch"
    device = "cpu"
    mode = "offline"

    def available(self) -> bool:
        return importlib.util.find_spec("torch") is not None

    def open(self, path, threads: int | None = None, spinning: bool = True) -> Session:
        try:
            import torch
        except ImportError as exc:
            raise ModelFileError("the aoti-cpu target needs PyTorch; pip install 'qdeploy[torch]'") from exc

        path = Path(path)
        if path.suffix != PT2_SUFFIX:
            raise ModelFileError(f"the aoti-cpu target runs .pt2 packages from 'qdeploy compile --target aoti-cpu', "
                                 f"not {path.name}")
        meta = read_offline_meta(path)
        if threads:
            torch.set_num_threads(int(threads))
        try:
            runner = torch._inductor.aoti_load_package(str(path))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"AOTInductor cannot load {path.name}: {first}; re-run 'qdeploy compile' with this "
                                 "PyTorch") from exc

        def run(x, fixed: dict | None = None):
            with torch.inference_mode():
                return runner(torch.from_numpy(x)).numpy()

        return Session(path=path, run=run, input_name=meta.get("input_name", "input"),
                       runtime=f"torch {torch.__version__} (AOTInductor)", provider="CPU",
                       threads=int(threads or torch.get_num_threads() or os.cpu_count()),
                       info={"runner": runner})
