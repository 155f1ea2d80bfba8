"""ONNX Runtime static and dynamic INT8 quantization, verified against FP32 before the file is named.

Static calibration runs ORT's own calibrators, driven here rather than inside `quantize_static`:
`quantize_static` cannot pass histogram sizes to them, and with its defaults (128 bins, 128 quantized
bins) the Entropy calibrator has exactly one candidate threshold, the full observed range, so the
`entropy` variant was MinMax under another name (all 31 activation scales bit-identical on the shared
ResNet18). qdeploy calibrates with TensorRT's sizes (2048 bins, 128 quantized bins), saves the ranges
as ORT's calibration cache and hands that to `quantize_static`.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..artifacts import read_info, write_onnx
from ..data import batch_for
from ..errors import QuantizeError
from ..fixed_inputs import arrays
from ..formats.sessions import cpu_session
from ..graph.order import place_after_producers
from ..recipes import QuantConfig
from ..results import Diagnosis, VariantFacts
from ..targets import open_session, run_batched
from ..tasks import QuantCheck, get_task
from . import bias_correction, weight_rounding
from .base import VariantContext, refuse, register
from .bias_correction import correct_biases
from .entropy import use_fast_entropy
from .output_tuning import TuningConfig, tune_outputs
from .qlayers import RecentStats, statistics_key
from .sensitivity import by_kind, node_errors, node_sensitivity
from .weight_rounding import round_weights

ENTROPY_BINS = {"num_bins": 2048, "num_quantized_bins": 128}


class _Reader:
    """CalibrationDataReader over real, preprocessed images."""

    def __init__(self, x: np.ndarray, input_name: str, batch_size: int | None = None, fixed: dict | None = None):
        # Equal-sized batches: ORT's histogram calibrators (Entropy, Percentile) fail on a ragged last
        # batch ("inhomogeneous shape"), so use the largest divisor of len(x) up to batch_size.

        batch_size = batch_size or batch_for(x.shape[-1], cap=32)
        self.fixed = fixed or {}
        batch_size = max(d for d in range(1, min(batch_size, len(x)) + 1) if len(x) % d == 0)
        self.batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
        self.input_name, self.i = input_name, 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.input_name: self.batches[self.i - 1], **self.fixed}

    def rewind(self):
        self.i = 0


def _qtype(name: str):
    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8, "uint16": QuantType.QUInt16,
            "int16": QuantType.QInt16}[name]


def _method(cfg: QuantConfig):
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[cfg.method]


LEAN_PIXELS = 128 * 128  # from this input size on, the calibrator's session is rebuilt lean (_lean_session)


def _lean_session(calibrator) -> None:
    """Rebuild the calibrator's session so that one large image does not hold every activation at once.

    ORT's MinMax calibrator appends a ReduceMin/ReduceMax pair per tensor at the *end* of the graph, so each
    activation lives until the end of the run, and its session's memory arena keeps the high-water mark.
    Measured on the style network at 768x512 (4 photos): 2,080 MB as ORT builds it, 1,644 MB without the
    arena, 1,091 MB with each reduction moved next to its tensor's producer and no arena. Ranges are the
    same (the same reductions on the same tensors)."""

    path = calibrator.augmented_model_path
    m = onnx.load(path)
    reduce_ops = [n for n in m.graph.node if n.op_type in ("ReduceMin", "ReduceMax")
                  and n.name.endswith(("_ReduceMin", "_ReduceMax"))]
    if reduce_ops:

        place_after_producers(m, reduce_ops)
        onnx.save(m, path)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 3
    calibrator.infer_session = cpu_session(path, opts)


def calibration_ranges(model: Path, calib: np.ndarray, input_name: str, cfg: QuantConfig, work: Path,
                       fixed: dict | None = None, batch_one: bool = False) -> Path:
    """Run ORT's calibrator for cfg.method over `calib`; returns ORT's calibration cache file. `fixed`: the
    model's other inputs (a style vector); `batch_one`: the graph takes one image at a time."""

    options = {"minmax": {}, "entropy": dict(ENTROPY_BINS), "percentile": {"percentile": cfg.percentile}}[cfg.method]
    cache = work / "ranges.json"
    key = statistics_key(model, calib, fixed, cfg.method, json.dumps(options, sort_keys=True), batch_one)
    hit = _ranges.get(key)
    if hit is not None:   # the same graph, images and method: the auto search's other formats, kernels and targets
        cache.write_text(hit)
        return cache
    calibrator = create_calibrator(model, None, augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=_method(cfg), extra_options=options)
    if calib.shape[-1] * calib.shape[-2] >= LEAN_PIXELS:
        _lean_session(calibrator)
    # MinMax keeps only per-batch min/max; the histogram calibrators keep every activation of what they
    # are given, so they get one inference batch of images at a time (their histograms merge across
    # calls): 64 images at once were fine at 32 px, and took a 224-px EfficientNet-Lite0 run to 6.4 GB.
    # MinMax also holds every tensor of every batch it is given until the end of the call: at 512 px the
    # style network's tensors are ~1 GB per image, so large inputs go one inference batch per call too
    # (ranges merge across calls for every calibrator).

    per_call = 1 if batch_one else min(64, batch_for(calib.shape[-1]))
    chunk = len(calib) if cfg.method == "minmax" and calib.shape[-1] <= 64 else per_call
    for i in range(0, len(calib), chunk):
        calibrator.collect_data(_Reader(calib[i:i + chunk], input_name, 1 if batch_one else None, fixed))
    if cfg.method == "entropy":

        use_fast_entropy(calibrator)
    save_tensors_data(calibrator.compute_data(), cache)
    _ranges.put(key, cache.read_text())
    return cache


_ranges = RecentStats(6)   # (graph, images, method) -> ORT's calibration cache text (a few KB per tensor)


def clear_statistics() -> None:
    """Forget the calibration statistics shared between quantizations (activation ranges, bias-correction means,
    GPTQ's second moments): for timing a whole quantization from scratch (bench/quantize_time.py)."""
    _ranges.clear()
    bias_correction._means.clear()
    weight_rounding._cache.clear()


def batch_one(model: Path) -> bool:
    """The graph's batch dimension is fixed at 1 (the style network): it takes one image per run."""

    dim = onnx.load(str(model), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return bool(dim) and dim[0].HasField("dim_value") and dim[0].dim_value == 1


def _run_quantizer(fp32: Path, out: Path, calib: np.ndarray | None, input_name: str, cfg: QuantConfig, work: Path,
                   fixed: dict | None = None):
    if cfg.mode == "dynamic":
        quantize_dynamic(str(fp32), str(out), weight_type=_qtype(cfg.weight_type), per_channel=cfg.per_channel,
                         reduce_range=cfg.reduce_range, nodes_to_exclude=cfg.nodes_to_exclude or None)
        return
    if calib is None or len(calib) == 0:
        raise QuantizeError("static quantization needs calibration images; pass --data with a calibration split")
    cache = calibration_ranges(fp32, calib, input_name, cfg, work, fixed, batch_one(fp32))
    quantize_static(
        str(fp32), str(out), None,
        quant_format=QuantFormat.QDQ if cfg.format == "QDQ" else QuantFormat.QOperator,
        per_channel=cfg.per_channel, activation_type=_qtype(cfg.activation_type),
        weight_type=_qtype(cfg.weight_type), calibrate_method=_method(cfg), reduce_range=cfg.reduce_range,
        nodes_to_exclude=cfg.nodes_to_exclude or None, calibration_cache_path=str(cache),
        op_types_to_quantize=list(cfg.op_types) or None,
        extra_options={"OpTypesToExcludeOutputQuantization": list(cfg.float_outputs)} if cfg.float_outputs else None,
    )


def verify(fp32: Path, int8: Path, batch: np.ndarray, min_agreement: float,
           out: np.ndarray | None = None, ref: np.ndarray | None = None) -> QuantCheck:
    """The INT8 file against FP32 on a real batch, judged by the task the FP32 file records (agreement for a
    classifier, PSNR for an image-to-image model). out / ref: the INT8 / FP32 file's outputs on batch, when
    already run."""
    ref = run_batched(open_session(fp32), batch) if ref is None else ref
    out = run_batched(open_session(int8), batch) if out is None else out
    return get_task(read_info(fp32).task).check(ref, out, min_agreement)


def quantize(fp32: str | Path, out: str | Path, cfg: QuantConfig, calib: np.ndarray | None,
             verify_batch: np.ndarray | None = None, guard: bool = True) -> tuple[Path, QuantCheck]:
    """Quantize `fp32` into `out` with `cfg`; verify against FP32; raise QuantizeError on a collapse (unless
    guard=False: the auto search measures collapsed candidates itself and never selects them).

    The output only appears under its final name once it has passed verification.
    """

    fp32, out = Path(fp32), Path(out)
    info = read_info(fp32)
    vb = verify_batch if verify_batch is not None else calib
    if vb is None or not len(vb):
        raise QuantizeError("no real images to verify the INT8 model against FP32; pass --data")
    logging.getLogger("root").setLevel(logging.ERROR)  # ORT's quantizer logs per node at INFO/WARNING
    with tempfile.TemporaryDirectory(prefix="qdeploy-quant-") as tmpdir:
        work = Path(tmpdir)
        pre, raw = work / "pre.onnx", work / "int8.onnx"
        try:
            # ORT's calibrators print progress with print(); keep qdeploy's own output readable.
            clock = _Clock()
            with contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
                fixed = _fixed_arrays(info)
                clock.lap("pre_process")
                _run_quantizer(pre, raw, calib, info.input_name, cfg, work, fixed)
                clock.lap("calibrate_and_quantize")
            rounded = clock.lap("weight_rounding", _weight_rounding(pre, raw, calib, info.input_name, fixed)) \
                if _rounds(cfg) else None
            corrected = clock.lap("bias_correction", _bias_correction(pre, raw, calib, info.input_name, fixed)) \
                if _corrects(cfg) else None
            tuned = clock.lap("output_tuning", _output_tuning(pre, raw, calib, info.input_name, fixed, cfg)) \
                if cfg.tune_epochs else None
        except QuantizeError:
            raise
        except Exception as exc:
            raise QuantizeError(f"ONNX Runtime quantization ({cfg.name}) failed: {type(exc).__name__}: "
                                f"{str(exc)[:200]}") from exc
        meta = {"variant": cfg.name, "quant_config": cfg.as_dict(), **_carried_meta(info),
                **({"weight_rounding": rounded} if rounded else {}),
                **({"bias_correction": corrected} if corrected else {}),
                **({"output_tuning": tuned} if tuned else {})}
        # step times go to the log, not into the file: a file must be byte-identical wherever it is built (Ray)
        logging.getLogger("qdeploy.quantize").info("quantize %s: %s", cfg.name, clock.laps)
        check = (lambda tmp: collapse_guard(fp32, tmp, vb, cfg)) if guard else (lambda tmp: verify(fp32, tmp, vb, 0.0))
        return write_onnx(raw, out, meta, verify=check)


class _Clock:
    """Seconds per step of one quantization (logged to `qdeploy.quantize` at INFO): `lap` closes the step that just
    ran (and passes its result through); a step that did not run has no entry."""

    def __init__(self):
        self.laps, self._t = {}, time.perf_counter()

    def lap(self, name: str, result=None):
        now = time.perf_counter()
        self.laps[name], self._t = round(now - self._t, 3), now
        return result


def _corrects(cfg: QuantConfig) -> bool:
    return cfg.bias_correction and cfg.mode == "static" and cfg.weight_type in ("int8", "uint8")


def _rounds(cfg: QuantConfig) -> bool:
    return cfg.weight_rounding == "gptq" and cfg.mode == "static" and cfg.weight_type in ("int8", "uint8")


def _weight_rounding(pre: Path, raw: Path, calib, input_name: str, fixed: dict) -> dict:
    """GPTQ on the file's integer weights (before bias correction, which then corrects the new integers)."""

    return round_weights(pre, raw, calib, input_name, fixed, batch_one(pre))


def _bias_correction(pre: Path, raw: Path, calib, input_name: str, fixed: dict) -> dict:
    return correct_biases(pre, raw, calib, input_name, fixed, batch_one(pre))


def _output_tuning(pre: Path, raw: Path, calib, input_name: str, fixed: dict, cfg: QuantConfig) -> dict:
    """Biases and activation scales fitted to FP32's outputs (after GPTQ and bias correction, from where they
    left the file)."""

    return tune_outputs(pre, raw, calib, input_name, fixed, TuningConfig(epochs=cfg.tune_epochs))


def _fixed_arrays(info) -> dict:
    return arrays(info.fixed_inputs)


def _carried_meta(info) -> dict:
    """What the FP32 file says about itself travels into every file made from it."""
    meta = {"classes": info.classes, "preprocess": info.preprocess.to_json() if info.preprocess else None,
            "task": info.extra.get("task"), "fixed_inputs": info.extra.get("fixed_inputs")}
    return {k: v for k, v in meta.items() if v is not None}


DIAGNOSE_IMAGES = 32


def diagnose(fp32: Path, int8: Path, batch: np.ndarray) -> Diagnosis | None:
    """Why a variant collapsed: the error each kind of quantized node adds (depthwise, pointwise, ...) and the
    worst nodes, on a few of the verification images. None when the graph cannot be compared node by node."""

    try:
        rows = node_sensitivity(fp32, int8, batch[:DIAGNOSE_IMAGES])
    except Exception as exc:  # a diagnosis must never hide the collapse itself
        return Diagnosis(error=f"{type(exc).__name__}: {str(exc)[:160]}")
    if not rows:
        return None
    return Diagnosis(images=min(len(batch), DIAGNOSE_IMAGES), by_kind=by_kind(rows), worst=node_errors(rows[:5]))


def collapse_guard(fp32: Path, tmp: Path, batch: np.ndarray, cfg, out: np.ndarray | None = None,
                   ref: np.ndarray | None = None, diagnosis: bool = True) -> QuantCheck:
    """The collapse guard every INT8 variant passes before its file gets its final name (ONNX Runtime, PyTorch
    and NNCF variants alike): the file `tmp` against FP32 on a real batch; a collapse raises QuantizeError with
    the figure it reached and, for an ONNX file (diagnosis=True), the nodes that lose the most.
    out / ref: the INT8 / FP32 outputs on batch, when already computed."""
    check = verify(fp32, tmp, batch, cfg.min_agreement, out, ref)
    # node_sensitivity reads ONNX graphs only: an OpenVINO IR collapse is reported without it
    diag = (lambda: VariantFacts(diagnosis=diagnose(fp32, tmp, batch))) if diagnosis else VariantFacts
    if check.collapsed and check.psnr is not None:
        exc = QuantizeError(
            f"variant '{cfg.name}' collapsed: mean PSNR against the FP32 output is {check.psnr:.1f} dB on {check.n} "
            f"real images (needs >= {check.psnr_floor:.0f} dB); not written. Try --op-types Conv, --auto, or "
            "keeping the first/last layers in FP32")
        raise refuse(exc, check, diag())
    if check.collapsed:
        exc = QuantizeError(
            f"variant '{cfg.name}' collapsed: top-1 agreement with FP32 is {check.agreement:.1%} on "
            f"{check.n} real images (needs >= {cfg.min_agreement:.0%}); not written. "
            + ("Try --auto (it keeps the most sensitive nodes in FP32)" if cfg.name == "default" else
               "Try the default preset, per-channel weights, or --auto")
        )
        raise refuse(exc, check, diag())
    return check


@register(QuantConfig)
def build_ort(cfg: QuantConfig, ctx: VariantContext, dst: Path, log) -> tuple[QuantCheck, VariantFacts]:
    _, check = quantize(ctx.fp32, dst, cfg, ctx.calib_x)
    return check, VariantFacts()
