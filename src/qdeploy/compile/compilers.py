"""One compiler per target: what it compiles, its online form, and how it writes the offline form.

ort-cpu:      the ONNX file -> ORT's own format (.ort) holding the graph after ORT_ENABLE_ALL; loaded with
              graph optimisation off. Hardware-specific (NCHWc layouts): for this CPU model.
openvino-cpu: an ONNX file or the nncf IR -> `compiled_model.export_model()` blob, reloaded with
              `import_model` (no graph compilation); record beside it (X.blob.json). Specific to this
              OpenVINO version and CPU.
aoti-cpu:     the run's PyTorch FP32 model -> `torch.export` (dynamic batch) -> AOTInductor package (.pt2);
              its online form is the eager PyTorch model. qdeploy's INT8 recipes are ONNX QDQ files, which
              AOTInductor does not take: aoti-cpu compiles FP32 only.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

from ..artifacts import raw_meta, read_info, stamp_metadata
from ..errors import ConfigError, ModelFileError
from ..formats.sessions import cpu_session
from ..registry import lookup
from ..results import VariantResult
from ..targets import AOTI_CPU, OPENVINO_CPU, ORT_CPU, Session, get_target
from ..targets.openvino import OpenVinoCpu, ov_config
from .meta import COMPILED_KEY, add_to_pt2, write_sidecar


@dataclass
class CompileContext:
    run_dir: Path
    example: np.ndarray                       # a few real preprocessed images (export's example input)
    threads: int | None
    torch_model: Callable[..., object]        # (fresh=False) -> the run's PyTorch model (raises for ONNX runs)
    checkpoint: dict | None                   # {"path", "sha256"} of the run's checkpoint, if it had one


class Compiler:
    target = ""
    suffix = ""
    from_checkpoint = False     # built from the PyTorch checkpoint, not from the run's ONNX file

    def refuse(self, v: VariantResult, ctx: CompileContext) -> str | None:
        """Why this variant cannot be compiled for this target (None: it can)."""
        return None

    def online(self, v: VariantResult, ctx: CompileContext) -> Session:
        return get_target(self.target).open(ctx.run_dir / v.file, threads=ctx.threads)

    def build(self, v: VariantResult, ctx: CompileContext, dst: Path, facts: dict) -> list[Path]:
        """Write the offline form at `dst` (inside a scratch folder); return every file written, the main file
        last (the order in which they get their final names)."""
        raise NotImplementedError


def _facts_meta(src: Path, facts: dict) -> dict:
    meta = raw_meta(src)
    meta[COMPILED_KEY] = json.dumps(facts)
    return meta


class OrtCompiler(Compiler):
    target, suffix = ORT_CPU, ".ort"

    def refuse(self, v, ctx):
        return None if v.file.endswith(".onnx") else f"{v.file} is not an ONNX file"

    def build(self, v, ctx, dst, facts):


        model = onnx.load(str(ctx.run_dir / v.file))
        stamp_metadata(model, {COMPILED_KEY: json.dumps(facts)})
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(dst)
        opts.add_session_config_entry("session.save_model_format", "ORT")
        opts.log_severity_level = 3
        if ctx.threads:
            opts.intra_op_num_threads = int(ctx.threads)
        cpu_session(model.SerializeToString(), opts)
        return [dst]


class OpenVinoCompiler(Compiler):
    target, suffix = OPENVINO_CPU, ".blob"

    def refuse(self, v, ctx):
        return None if v.file.endswith((".onnx", ".xml")) else f"OpenVINO does not read {v.file}"

    def build(self, v, ctx, dst, facts):
        import openvino as ov


        src = ctx.run_dir / v.file
        compiled = ov.Core().compile_model(str(src), "CPU", ov_config(OpenVinoCpu.precision, ctx.threads))
        buf = io.BytesIO()   # export_model takes an io.BytesIO only
        compiled.export_model(buf)
        dst.write_bytes(buf.getbuffer())
        side = write_sidecar(dst, dst.name, _facts_meta(src, facts))
        return [side, dst]


class AotiCompiler(Compiler):
    target, suffix, from_checkpoint = AOTI_CPU, ".pt2", True

    def refuse(self, v, ctx):
        if v.kind != "fp32":
            return "AOTInductor compiles the PyTorch FP32 model; qdeploy's INT8 files are ONNX QDQ graphs"
        if ctx.checkpoint is None:
            return "the run started from an ONNX file; AOTInductor compiles a PyTorch model (--checkpoint runs)"

        if read_info(ctx.run_dir / v.file).fixed_inputs:
            return "models with fixed extra inputs are not compiled for aoti-cpu"
        return None

    def online(self, v, ctx):
        import torch

        model = ctx.torch_model(fresh=True)
        if ctx.threads:
            torch.set_num_threads(int(ctx.threads))

        def run(x, fixed=None):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return Session(path=Path(ctx.checkpoint["path"]), run=run, input_name="input",
                       runtime=f"torch {torch.__version__} (eager)", provider="CPU",
                       threads=int(ctx.threads or torch.get_num_threads()))

    def build(self, v, ctx, dst, facts):
        import torch

        if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
            raise ConfigError("aoti-cpu needs a C++ compiler to build the package (apt-get install g++)")
        model = ctx.torch_model()
        x = torch.from_numpy(np.ascontiguousarray(ctx.example[:2]))
        batch = torch.export.Dim("batch", min=1, max=4096)
        try:
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
            path = torch._inductor.aoti_compile_and_package(ep, package_path=str(dst))
        except (subprocess.CalledProcessError, RuntimeError, torch._dynamo.exc.UserError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"AOTInductor could not compile the model: {first}") from exc
        meta = _facts_meta(ctx.run_dir / v.file, {**facts, "from": ctx.checkpoint["path"],
                                                   "from_sha256": ctx.checkpoint["sha256"]})
        meta["input_name"] = "input"
        add_to_pt2(Path(path), meta)
        return [Path(path)]


COMPILERS: dict[str, type[Compiler]] = {c.target: c for c in (OrtCompiler, OpenVinoCompiler, AotiCompiler)}


def get_compiler(target: str) -> Compiler:
    return lookup(COMPILERS, target, "compile target")
