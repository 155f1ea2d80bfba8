"""`qdeploy bundle verify BUNDLE`: every file's sha256 against the manifest, every Triton config.pbtxt parsed by
Triton's own ModelConfig protobuf (tritonclient) and compared with its ONNX file's inputs and outputs, the labels
file against the classes, the OVMS config against its folders, and the golden request re-run on every model file
under its server's own settings: a Triton file in ONNX Runtime at the graph level its config.pbtxt sets, with every
transformer ORT runs by default (Triton cannot turn one off), and checked that none of them rewrites it; an OVMS
file in OpenVINO with its config.json's plugin_config (the precision pinned), where OpenVINO is installed. Each
is compared with the outputs of the run's verified file in qdeploy's session.
The first problem raises BundleError: one line saying which file and what is wrong."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..compare import compare_outputs
from ..errors import BundleError, ModelFileError
from ..formats.keys import sha256
from ..formats.server_safe import DISABLED_OPTIMIZERS, load_rewrites
from ..targets import OPENVINO_CPU, ORT_CPU, get_target, open_session, run_batched
from ..targets.ort import host_ort_session
from ..tasks import get_task
from .layouts import LAYOUTS, MANIFEST, TRITON_LEVELS, TRITON_TYPES, onnx_io

FP32_RTOL, INT8_RTOL = 1e-4, 0.05   # x max(1, |expected|): float kernels differ in the last bits across CPUs


def _manifest(root: Path) -> dict:
    try:
        return json.loads((root / MANIFEST).read_text())
    except OSError:
        raise BundleError(f"{root} has no {MANIFEST}; pass a directory written by 'qdeploy bundle'") from None
    except ValueError as exc:
        raise BundleError(f"{root / MANIFEST} is not valid JSON ({exc}); rebuild the bundle") from None


def check_files(root: Path, man: dict) -> None:
    for rel, f in man["files"].items():
        p = root / rel
        if not p.is_file():
            raise BundleError(f"{rel} is missing from the bundle; rebuild it with 'qdeploy bundle'")
        if p.stat().st_size != f["bytes"] or sha256(p) != f["sha256"]:
            raise BundleError(f"{rel} differs from the manifest (sha256); the file was changed or truncated")


def _model_config_type():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise BundleError("verifying Triton configs needs Triton's client (its ModelConfig protobuf); "
                          "pip install 'qdeploy[serve]'") from None
    return model_config_pb2


def parse_triton_config(path: Path):
    from google.protobuf import text_format

    pb = _model_config_type()
    try:
        return text_format.Parse(path.read_text(), pb.ModelConfig())
    except text_format.ParseError as exc:
        raise BundleError(f"{path.name} of {path.parent.name} does not parse as Triton's ModelConfig: {exc}") from None


def check_triton(root: Path, model: dict, classes: list[str] | None):
    """The config against the model file; returns ORT's graph level Triton will run the file at."""
    pb = _model_config_type()
    d = root / "triton" / model["name"]
    cfg = parse_triton_config(d / "config.pbtxt")
    where = f"triton/{model['name']}/config.pbtxt"
    if cfg.name != model["name"]:
        raise BundleError(f"{where}: name '{cfg.name}' differs from its folder '{model['name']}'")
    if cfg.backend != "onnxruntime":
        raise BundleError(f"{where}: backend '{cfg.backend}', expected onnxruntime")
    io = onnx_io(root / model["model_file"])
    if cfg.max_batch_size > 0 and not io.batched:
        raise BundleError(f"{where}: max_batch_size {cfg.max_batch_size} but the model's batch dimension is fixed; "
                          "use 0")
    for kind, declared, actual in (("input", cfg.input, io.inputs), ("output", cfg.output, io.outputs)):
        if sorted(t.name for t in declared) != sorted(t.name for t in actual):
            raise BundleError(f"{where}: {kind}s {[t.name for t in declared]} differ from the model's "
                              f"{[t.name for t in actual]}")
        by = {t.name: t for t in actual}
        for t in declared:
            want_dims = by[t.name].dims[1:] if cfg.max_batch_size > 0 else by[t.name].dims
            if list(t.dims) != want_dims:
                raise BundleError(f"{where}: {kind} '{t.name}' dims {list(t.dims)} differ from the model's {want_dims}"
                                  + (" (without the batch axis)" if cfg.max_batch_size > 0 else ""))
            dtype = pb.DataType.Name(t.data_type)
            if dtype != TRITON_TYPES.get(by[t.name].elem_type):
                raise BundleError(f"{where}: {kind} '{t.name}' data_type {dtype} differs from the model's "
                                  f"{TRITON_TYPES.get(by[t.name].elem_type)}")
            if kind == "output" and t.label_filename:
                _check_labels(d / t.label_filename, classes, where)
    if classes and not any(t.label_filename for t in cfg.output):
        raise BundleError(f"{where}: no label_filename on the output although the model has {len(classes)} classes")
    raw = cfg.optimization.graph.level if cfg.HasField("optimization") else 0
    if raw not in TRITON_LEVELS:
        raise BundleError(f"{where}: optimization.graph.level {raw} is not one Triton's onnxruntime backend reads "
                          f"({', '.join(map(str, TRITON_LEVELS))}); rebuild the bundle")
    name, level = TRITON_LEVELS[raw]
    added = load_rewrites(root / model["model_file"], level)
    if added:
        raise BundleError(f"{where}: at the graph level it sets ({name}), ONNX Runtime's "
                          f"{'/'.join(DISABLED_OPTIMIZERS)} would rewrite {model['model_file']} at load "
                          f"({len(added)} nodes added, e.g. {added[0]}): Triton would not serve the verified numbers; "
                          "rebuild the bundle with 'qdeploy bundle'")
    return level


def _check_labels(path: Path, classes: list[str] | None, where: str) -> None:
    if not path.is_file():
        raise BundleError(f"{where}: labels file {path.name} is missing")
    lines = path.read_text().splitlines()
    if classes is not None and lines != classes:
        raise BundleError(f"{where}: {path.name} has {len(lines)} labels that differ from the model's "
                          f"{len(classes)} classes")


def check_ovms(root: Path, models: list[dict]) -> dict[str, dict]:
    """config.json against the folders; returns each model's plugin_config (its precision must be pinned)."""
    mine = [m for m in models if m["layout"] == "ovms"]
    if not mine:
        return {}
    try:
        cfg = json.loads((root / "ovms" / "config.json").read_text())
        listed = {c["config"]["name"]: c["config"] for c in cfg["model_config_list"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"ovms/config.json is missing or malformed ({type(exc).__name__}); rebuild the bundle") from None
    for m in mine:
        c = listed.get(m["name"])
        if c is None or c.get("base_path") != f"/models/{m['name']}":
            raise BundleError(f"ovms/config.json does not list model '{m['name']}' at /models/{m['name']}")
        if not (root / m["model_file"]).is_file():
            raise BundleError(f"{m['model_file']} is missing (OVMS model '{m['name']}', version 1)")
        if "INFERENCE_PRECISION_HINT" not in (c.get("plugin_config") or {}):
            raise BundleError(f"ovms/config.json: model '{m['name']}' has no plugin_config INFERENCE_PRECISION_HINT; "
                              "OpenVINO would pick bf16 on CPUs that have it, not the precision verified; rebuild "
                              "the bundle")
    return {m["name"]: listed[m["name"]]["plugin_config"] for m in mine}


def _server_session(root: Path, m: dict, triton_levels: dict, ovms_plugins: dict):
    """The session the model's server runs: (session, None), or (None, why it cannot be opened here)."""
    path = root / m["model_file"]
    if m["layout"] == "triton":
        return host_ort_session(path, triton_levels.get(m["name"], TRITON_LEVELS[0][1])), None
    if m["layout"] == "ovms":
        ov = get_target(OPENVINO_CPU)
        if not ov.available():
            return None, "OpenVINO is not installed here (pip install 'qdeploy[openvino]')"
        try:
            return ov.open(path, config=ovms_plugins.get(m["name"])), None
        except ModelFileError as exc:
            raise BundleError(f"OVMS model '{m['name']}': {exc}") from None
    return open_session(path), None


def check_golden(root: Path, man: dict, triton_levels: dict | None = None, ovms_plugins: dict | None = None) -> dict:
    """Re-run the golden request on every model file of every layout, each under its server's settings, against the
    verified outputs; returns max |diff| per model and the files that could not be run here (with why)."""

    golden = man["golden"]
    x = np.load(root / golden["inputs"])
    diffs, unchecked = {}, {}
    for m in man["models"]:
        name = m["name"]
        exp = golden["expected"][name]
        target = LAYOUTS[m["layout"]].target if m["layout"] in LAYOUTS else ORT_CPU
        if target not in exp["files"]:
            raise BundleError(f"the manifest has no golden outputs of model '{name}' on {target}; rebuild the bundle")
        want = np.load(root / exp["files"][target])
        scale = max(1.0, float(np.abs(want).max()))
        tol = (FP32_RTOL if exp["kind"] == "fp32" else INT8_RTOL) * scale
        session, why = _server_session(root, m, triton_levels or {}, ovms_plugins or {})
        if session is None:
            unchecked[m["model_file"]] = why
            continue
        got = run_batched(session, x)
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        diffs[f"{m['layout']}/{name}"] = diff
        where = f"{m['model_file']}, as {m['layout']} runs it"
        if diff > tol:
            raise BundleError(f"model '{name}' no longer reproduces the golden request ({where}): max |diff| "
                              f"{diff:.3g} > {tol:.3g}")
        agreement = get_task(man["task"]).top1_agreement(compare_outputs(want, got))
        if exp["kind"] != "fp32" and agreement is not None and agreement < 1:
            raise BundleError(f"model '{name}' changes top-1 on the golden request ({where})")
    return {"diffs": diffs, "unchecked": unchecked}


def verify_bundle(root: str | Path) -> dict:
    root = Path(root)
    man = _manifest(root)
    check_files(root, man)
    levels = {m["name"]: check_triton(root, m, man.get("classes")) for m in man["models"] if m["layout"] == "triton"}
    plugins = check_ovms(root, man["models"])
    golden = check_golden(root, man, levels, plugins)
    return {"files": len(man["files"]), "models": [m["name"] for m in man["models"]],
            "golden_max_abs_diff": golden["diffs"], "golden_unchecked": golden["unchecked"]}
