"""The README a bundle carries: what is inside, how to start each server on it, and client code with this
bundle's own model names, tensor names and preprocessing."""
from __future__ import annotations

from pathlib import Path

from .layouts import onnx_io


def _preprocess_text(p: dict) -> str:
    norm = "pixels / 255" if p.get("mean") is None else f"(pixels / 255 - mean {p['mean']}) / std {p['std']}"
    size = f"{p['width']}x{p['size']}" if p.get("width") else f"{p['size']}x{p['size']}"
    return f"RGB, {p['resize']} to {size} ({p.get('interpolation', 'bicubic')}), {norm}, NCHW float32"


def write_readme(root: Path, man: dict) -> Path:
    models = man["models"]
    first = next((m for m in models if m["model_file"].endswith(".onnx")), models[0])
    io = onnx_io(root / first["model_file"])
    inp, out = io.inputs[0], io.outputs[0]
    shape = [1] + [d if d > 0 else 224 for d in inp.dims[1:]]
    lines = [f"# qdeploy bundle: {', '.join(sorted({m['name'] for m in models}))}", "",
             f"Task: {man['task']}. Preprocessing: {_preprocess_text(man['preprocess'])}."
             + (f" Classes ({len(man['classes'])}): {', '.join(man['classes'][:10])}"
                + (", ..." if len(man["classes"]) > 10 else "") + "." if man.get("classes") else ""), "",
             "| model | layout | variant | file |", "|---|---|---|---|"]
    lines += [f"| {m['name']} | {m['layout']} | {m['variant']} | `{m['model_file']}` |" for m in models]
    lines += ["", "Check it before you ship it: `qdeploy bundle verify .` (hashes, configs, golden request).", ""]
    if any(m["layout"] == "triton" for m in models):
        lines += ["## Triton", "", "    docker run --rm -p8000:8000 -v $PWD/triton:/models nvcr.io/nvidia/tritonserver:<tag>-py3 \\",
                  "        tritonserver --model-repository=/models", ""]
        for m in models:
            st = m.get("settings") or {}
            if m["layout"] != "triton":
                continue
            if st.get("preoptimized"):
                lines += [f"`{m['model_file']}` is ONNX Runtime's optimised graph of the run's file; its config.pbtxt "
                          "sets `optimization {{ graph {{ level: 2 }} }}` (no further optimisation). A plain ONNX Runtime "
                          "host must open it with `graph_optimization_level = ORT_DISABLE_ALL`.", ""]
            elif st.get("rewritten"):
                lines += [f"`{m['model_file']}`: {len(st['rewritten'])} float node(s) the run keeps in FP32 are written "
                          "as ONNX Runtime's FusedConv/FusedGemm (same math), so that ORT's load-time "
                          "WeightBiasQuantization cannot re-quantize them: Triton, or any ONNX Runtime session at its "
                          "default settings, computes the verified numbers. OpenVINO does not read these ops: the "
                          "ovms/ folder holds the run's own file.", ""]
    if any(m["layout"] == "ovms" for m in models):
        lines += ["## OpenVINO Model Server", "", "    docker run --rm -p8000:8000 -v $PWD/ovms:/models openvino/model_server:latest \\",
                  "        --config_path /models/config.json --rest_port 8000", ""]
    lines += ["## Client (KServe v2 / Open Inference Protocol: Triton, OVMS and `qdeploy serve` alike)", "",
              "    import numpy as np, tritonclient.http as http",
              "    c = http.InferenceServerClient('127.0.0.1:8000')",
              f"    x = np.load('golden/inputs.npy')[:1]          # preprocessed as above, shape {shape}",
              f"    i = http.InferInput('{inp.name}', list(x.shape), 'FP32'); i.set_data_from_numpy(x)",
              f"    y = c.infer('{first['name']}', [i]).as_numpy('{out.name}')", ""]
    fixed = man["golden"].get("fixed_inputs") or {}
    if fixed:
        lines += ["Extra inputs the run fixed (send them with every request): "
                  + ", ".join(f"`{k}` = {v}" for k, v in fixed.items()) + ".", ""]
    path = root / "README.md"
    path.write_text("\n".join(lines))
    return path
