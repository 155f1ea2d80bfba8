"""ONNX Runtime static and dynamic INT8 quantization with verification against FP32."""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import QuantizeError
from ..runtime import atomic_path, open_session, read_info, run_batched, stamp_metadata
from .config import QuantConfig


@dataclass
class QuantCheck:
    """FP32 vs INT8 on the real verification batch (calibration-split images, never evaluation ones)."""

    agreement: float
    rel_l2: float
    batch: int
    collapsed: bool

    def as_dict(self):
        return {"agreement": self.agreement, "rel_l2": self.rel_l2, "batch": self.batch, "collapsed": self.collapsed}


class _Reader:
    """CalibrationDataReader over an in-memory array of real, preprocessed images."""

    def __init__(self, x: np.ndarray, input_name: str, batch_size: int = 32):
        # Equal-sized batches: ORT's histogram calibrators (Entropy, Percentile) fail on a ragged last
        # batch ("inhomogeneous shape"), so use the largest divisor of len(x) up to batch_size.
        batch_size = max(d for d in range(1, min(batch_size, len(x)) + 1) if len(x) % d == 0)
        self.batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
        self.input_name, self.i = input_name, 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.input_name: self.batches[self.i - 1]}

    def rewind(self):
        self.i = 0


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


def _run_quantizer(fp32: Path, out: Path, calib: np.ndarray | None, input_name: str, cfg: QuantConfig):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static

    if cfg.mode == "dynamic":
        quantize_dynamic(str(fp32), str(out), weight_type=_qtype(cfg.weight_type), per_channel=cfg.per_channel,
                         reduce_range=cfg.reduce_range, nodes_to_exclude=cfg.nodes_to_exclude or None)
        return
    if calib is None or len(calib) == 0:
        raise QuantizeError("static quantization needs calibration images; pass --data with a calibration split")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.method]
    extra = {"CalibPercentile": cfg.percentile} if cfg.method == "percentile" else {}
    quantize_static(
        str(fp32), str(out), _Reader(calib, input_name),
        quant_format=QuantFormat.QDQ if cfg.format == "QDQ" else QuantFormat.QOperator,
        per_channel=cfg.per_channel, activation_type=_qtype(cfg.activation_type),
        weight_type=_qtype(cfg.weight_type), calibrate_method=method, reduce_range=cfg.reduce_range,
        nodes_to_exclude=cfg.nodes_to_exclude or None, extra_options=extra,
    )


def verify(fp32: Path, int8: Path, batch: np.ndarray, min_agreement: float) -> QuantCheck:
    ref = run_batched(open_session(fp32), batch)
    out = run_batched(open_session(int8), batch)
    agreement = float((ref.argmax(1) == out.argmax(1)).mean())
    rel = float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12))
    return QuantCheck(agreement=agreement, rel_l2=rel, batch=len(batch), collapsed=agreement < min_agreement)


def quantize(fp32: str | Path, out: str | Path, cfg: QuantConfig, calib: np.ndarray | None,
             verify_batch: np.ndarray | None = None) -> tuple[Path, QuantCheck]:
    """Quantize `fp32` into `out` with `cfg`; verify against FP32; raise QuantizeError on a collapse.

    The output only appears under its final name once it has passed verification.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, out = Path(fp32), Path(out)
    info = read_info(fp32)
    logging.getLogger("root").setLevel(logging.ERROR)  # ORT's quantizer logs per node at INFO/WARNING
    with atomic_path(out) as tmp, tempfile.TemporaryDirectory(prefix="qdeploy-pre-") as tmpdir:
        pre = Path(tmpdir) / "pre.onnx"
        try:
            # ORT's calibrators print progress with print(); keep qdeploy's own output readable.
            with contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
                _run_quantizer(pre, tmp, calib, info.input_name, cfg)
        except QuantizeError:
            raise
        except Exception as exc:
            raise QuantizeError(f"ONNX Runtime quantization ({cfg.name}) failed: {type(exc).__name__}: "
                                f"{str(exc)[:200]}") from exc
        proto = onnx.load(str(tmp))
        stamp_metadata(proto, {"variant": cfg.name, "classes": info.classes, "preprocess": info.preprocess.to_json(),
                               "quant_config": cfg.as_dict()})
        onnx.save(proto, str(tmp))
        vb = verify_batch if verify_batch is not None else calib
        check = verify(fp32, tmp, vb, cfg.min_agreement) if vb is not None and len(vb) else None
        if check is None:
            raise QuantizeError("no real images to verify the INT8 model against FP32; pass --data")
        if check.collapsed:
            raise QuantizeError(
                f"variant '{cfg.name}' collapsed: top-1 agreement with FP32 is {check.agreement:.1%} on "
                f"{check.batch} real images (needs >= {cfg.min_agreement:.0%}); not written. Try the default "
                "preset, per-channel weights, or exclude sensitive nodes"
            )
    return out, check
