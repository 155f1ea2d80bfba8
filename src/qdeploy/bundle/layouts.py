"""Serving layouts a bundle can hold, one class each (registered in LAYOUTS): where a model's files go and the
configuration the serving system reads.

triton: a Triton model repository, `triton/<model>/config.pbtxt` (backend onnxruntime, I/O names, dtypes and
        dims without the batch axis, max_batch_size, dynamic_batching, instance_group, labels file for a
        classifier's output, the graph optimisation level) and `triton/<model>/1/model.onnx`: the run's file,
        with the float nodes Triton's ORT would re-quantize at load written so that it cannot
        (formats/server_safe.py), so Triton at its default settings computes what qdeploy verified.
ovms:   an OpenVINO Model Server layout, `ovms/<model>/1/model.onnx` (or the nncf IR, model.xml/.bin, which
        OVMS serves natively) and `ovms/config.json` (base paths as mounted at /models in the OVMS container,
        and the precision qdeploy verified the file at, pinned: OpenVINO would pick bf16 on CPUs that have it).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnxruntime as ort

from ..formats.server_safe import load_rewrites, preoptimize, server_safe
from ..targets import OPENVINO_CPU, ORT_CPU
from ..targets.openvino import OpenVinoCpu, ov_config

MANIFEST = "manifest.json"              # a bundle's record of itself, at its root
GOLDEN_INPUTS = "golden/inputs.npy"     # the golden request's images

# ONNX TensorProto element types -> Triton data types
TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
                7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64"}


@dataclass
class Tensor:
    name: str
    elem_type: int          # ONNX TensorProto type
    dims: list[int]         # -1 where the graph leaves a dimension open


@dataclass
class ModelIO:
    inputs: list[Tensor]
    outputs: list[Tensor]

    @property
    def batched(self) -> bool:
        """Every input and output has an open first dimension: Triton can batch along it."""
        return all(t.dims and t.dims[0] == -1 for t in self.inputs + self.outputs)


def onnx_io(path: Path) -> ModelIO:
    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}

    def tensor(vi) -> Tensor:
        tt = vi.type.tensor_type
        return Tensor(vi.name, tt.elem_type, [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim])

    return ModelIO([tensor(i) for i in g.input if i.name not in inits], [tensor(o) for o in g.output])


# Triton's onnxruntime backend: config.pbtxt `optimization { graph { level: L } }` -> ORT's level (no block: ALL).
# From the backend's source (src/onnxruntime.cc, ModelState::ModelState): -1 BASIC, 1 EXTENDED, 2 DISABLE_ALL.
TRITON_LEVELS = {0: ("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                 -1: ("basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
                 1: ("extended", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
                 2: ("disable_all", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)}
TRITON_NO_OPTIMIZATION = 2


@dataclass
class HostSettings:
    """How the layout's server must run the file to compute what qdeploy verified (written into its config)."""

    graph_level: str | None = None          # Triton: ORT's graph level (TRITON_LEVELS' names)
    rewritten: list[str] = field(default_factory=list)   # Triton: float nodes written as ORT contrib ops
    preoptimized: bool = False              # Triton: the file is ORT's EXTENDED graph, run with optimisation off
    plugin_config: dict = field(default_factory=dict)    # OVMS: OpenVINO compile properties


@dataclass
class Placed:
    """One model put into a layout: its name, the files written (bundle-relative), the model file, the run file it
    came from and the settings its server runs it with."""

    layout: str
    name: str
    variant: str
    model_file: str
    files: list[str]
    source: str = ""
    settings: HostSettings = field(default_factory=HostSettings)


class Layout:
    name = ""
    target = ORT_CPU    # the runtime the layout's server runs the file with: a row outside the gate there is skipped

    def accepts(self, model: Path) -> str | None:
        """Why this layout cannot hold the file (None: it can)."""
        return None

    def place(self, root: Path, name: str, variant: str, model: Path, classes: list[str] | None, cfg) -> Placed:
        raise NotImplementedError

    def finish(self, root: Path, placed: list[Placed]) -> list[str]:
        """Layout-wide files written after every model is placed (bundle-relative)."""
        return []


def _copy_model(src: Path, dst_dir: Path, stem: str = "model") -> list[Path]:
    dst_dir.mkdir(parents=True, exist_ok=True)
    out = [dst_dir / f"{stem}{src.suffix}"]
    shutil.copyfile(src, out[0])
    if src.suffix == ".xml":
        out.append(dst_dir / f"{stem}.bin")
        shutil.copyfile(src.with_suffix(".bin"), out[1])
    return out


def _dims(dims: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def triton_model_file(src: Path, dst: Path) -> HostSettings:
    """Write the file Triton serves: the run's file with its float nodes out of reach of ORT's load-time
    re-quantization, run at Triton's default level; where that rewrite does not cover a node, ORT's EXTENDED graph
    of it with Triton told to optimise nothing (slower: no level-3 layouts; same numbers up to rounding)."""

    dst.parent.mkdir(parents=True, exist_ok=True)
    rewritten = server_safe(src, dst)
    if not load_rewrites(dst, TRITON_LEVELS[0][1]):
        return HostSettings(graph_level=TRITON_LEVELS[0][0], rewritten=rewritten)
    preoptimize(src, dst)
    return HostSettings(graph_level=TRITON_LEVELS[TRITON_NO_OPTIMIZATION][0], preoptimized=True)


def triton_config(name: str, io: ModelIO, classes: list[str] | None, cfg, level: int = 0) -> str:
    """config.pbtxt text (written by hand here; `bundle verify` parses it with Triton's own ModelConfig)."""
    batch = io.batched
    lines = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {cfg.max_batch_size if batch else 0}"]
    for kind, tensors in (("input", io.inputs), ("output", io.outputs)):
        for i, t in enumerate(tensors):
            dims = t.dims[1:] if batch else t.dims
            label = ('\n    label_filename: "labels.txt"' if kind == "output" and i == 0 and classes else "")
            lines.append(f'{kind} [\n  {{\n    name: "{t.name}"\n    data_type: {TRITON_TYPES[t.elem_type]}\n'
                         f"    dims: {_dims(dims)}{label}\n  }}\n]")
    if batch:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {cfg.max_queue_delay_us}\n}}")
    lines.append(f"instance_group [\n  {{\n    count: {cfg.instances}\n    kind: KIND_CPU\n  }}\n]")
    if level:
        lines.append(f"optimization {{\n  graph {{\n    level: {level}\n  }}\n}}")
    return "\n".join(lines) + "\n"


class Triton(Layout):
    name = "triton"

    def accepts(self, model):
        return None if model.suffix == ".onnx" else "Triton's onnxruntime backend takes ONNX files"

    def place(self, root, name, variant, model, classes, cfg):
        d = root / "triton" / name
        files = [d / "1" / "model.onnx"]
        settings = triton_model_file(model, files[0])
        level = next(k for k, (n, _) in TRITON_LEVELS.items() if n == settings.graph_level)
        (d / "config.pbtxt").write_text(triton_config(name, onnx_io(files[0]), classes, cfg, level))
        files.append(d / "config.pbtxt")
        if classes:
            (d / "labels.txt").write_text("\n".join(classes) + "\n")
            files.append(d / "labels.txt")
        return Placed(self.name, name, variant, str(files[0].relative_to(root)), [str(f.relative_to(root)) for f in files],
                      model.name, settings)


class Ovms(Layout):
    name = "ovms"
    target = OPENVINO_CPU

    def accepts(self, model):
        return None if model.suffix in (".onnx", ".xml") else "OVMS serves ONNX files and OpenVINO IR"

    def place(self, root, name, variant, model, classes, cfg):
        files = _copy_model(model, root / "ovms" / name / "1")
        plugin = {k: v for k, v in ov_config(OpenVinoCpu.precision).items() if k == "INFERENCE_PRECISION_HINT"}
        return Placed(self.name, name, variant, str(files[0].relative_to(root)), [str(f.relative_to(root)) for f in files],
                      model.name, HostSettings(plugin_config=plugin))

    def finish(self, root, placed):
        mine = [p for p in placed if p.layout == self.name]
        if not mine:
            return []
        config = {"model_config_list": [{"config": {"name": p.name, "base_path": f"/models/{p.name}",
                                                     "target_device": "CPU",
                                                     "plugin_config": p.settings.plugin_config}} for p in mine]}
        (root / "ovms" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return ["ovms/config.json"]


LAYOUTS: dict[str, type[Layout]] = {Triton.name: Triton, Ovms.name: Ovms}
