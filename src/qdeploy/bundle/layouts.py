"""Serving layouts a bundle can hold, one class each (registered in LAYOUTS): where a model's files go and the
configuration the serving system reads.

triton: a Triton model repository, `triton/<model>/config.pbtxt` (backend onnxruntime, I/O names, dtypes and
        dims without the batch axis, max_batch_size, dynamic_batching, instance_group, labels file for a
        classifier's output) and `triton/<model>/1/model.onnx`.
ovms:   an OpenVINO Model Server layout, `ovms/<model>/1/model.onnx` (or the nncf IR, model.xml/.bin, which
        OVMS serves natively) and `ovms/config.json` (base paths as mounted at /models in the OVMS container).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..targets import OPENVINO_CPU, ORT_CPU

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


@dataclass
class Placed:
    """One model put into a layout: its name, the files written (bundle-relative) and the model file."""

    layout: str
    name: str
    variant: str
    model_file: str
    files: list[str]


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


def triton_config(name: str, io: ModelIO, classes: list[str] | None, cfg) -> str:
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
    return "\n".join(lines) + "\n"


class Triton(Layout):
    name = "triton"

    def accepts(self, model):
        return None if model.suffix == ".onnx" else "Triton's onnxruntime backend takes ONNX files"

    def place(self, root, name, variant, model, classes, cfg):
        d = root / "triton" / name
        files = _copy_model(model, d / "1")
        (d / "config.pbtxt").write_text(triton_config(name, onnx_io(model), classes, cfg))
        files.append(d / "config.pbtxt")
        if classes:
            (d / "labels.txt").write_text("\n".join(classes) + "\n")
            files.append(d / "labels.txt")
        return Placed(self.name, name, variant, str(files[0].relative_to(root)), [str(f.relative_to(root)) for f in files])


class Ovms(Layout):
    name = "ovms"
    target = OPENVINO_CPU

    def accepts(self, model):
        return None if model.suffix in (".onnx", ".xml") else "OVMS serves ONNX files and OpenVINO IR"

    def place(self, root, name, variant, model, classes, cfg):
        files = _copy_model(model, root / "ovms" / name / "1")
        return Placed(self.name, name, variant, str(files[0].relative_to(root)), [str(f.relative_to(root)) for f in files])

    def finish(self, root, placed):
        mine = [p for p in placed if p.layout == self.name]
        if not mine:
            return []
        config = {"model_config_list": [{"config": {"name": p.name, "base_path": f"/models/{p.name}",
                                                     "target_device": "CPU"}} for p in mine]}
        (root / "ovms" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return ["ovms/config.json"]


LAYOUTS: dict[str, type[Layout]] = {Triton.name: Triton, Ovms.name: Ovms}
