"""PyTorch-native INT8 (seed 002): eager-mode PTQ and QAT with the x86 backend, and power-of-two scales.

The quantizable ResNet keeps the seed's module names, so the FP32 checkpoint loads into it with no
renames; QuantStub/DeQuantStub and FloatFunctional.add_relu carry no weights. EfficientNet-Lite has its
quantizable twin in torch_lite (fixed ReLU6 grids, 8-bit activations); _quantizable_types is the seam.
"""
from __future__ import annotations

import copy
import io
import warnings
from dataclasses import replace

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

from ..artifacts import atomic_path, write_onnx
from ..compare import compare_outputs
from ..errors import QuantizeError
from ..models.logits import torch_logits
from ..models.resnet_cifar import ResBlock, ResNet
from ..recipes import TORCH_PRESETS, TorchQuantConfig  # noqa: F401  (re-exported)
from ..results import Parity, VariantFacts
from ..targets import open_session, run_batched
from ..tasks import get_task
from .ort import collapse_guard


class QuantBlock(ResBlock):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_add = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        return self.skip_add.add_relu(self.left(x), self.shortcut(x))


class QuantizableResNet(ResNet):
    """The seed ResNet with quant/dequant stubs and a quantizable residual add."""

    def __init__(self, num_classes=10, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)):
        super().__init__(QuantBlock, num_classes=num_classes, widths=widths, blocks=blocks)
        self.quant = torch.ao.quantization.QuantStub()
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.fc(self.features(self.quant(x))))

    def fuse_model(self, qat: bool = False) -> "QuantizableResNet":
        """Fuse conv-bn-relu (stem, first conv of each block), conv-bn (second conv, shortcut)."""
        fuse = torch.ao.quantization.fuse_modules_qat if qat else torch.ao.quantization.fuse_modules
        fuse(self.conv1, [["0", "1", "2"]], inplace=True)
        for i in range(self.stages):
            for block in getattr(self, f"layer{i + 1}"):
                fuse(block.left, [["0", "1", "2"], ["3", "4"]], inplace=True)
                if len(block.shortcut):
                    fuse(block.shortcut, [["0", "1"]], inplace=True)
        return self


def _resnet_twin(model: ResNet) -> QuantizableResNet:
    q = QuantizableResNet(num_classes=model.fc.out_features, widths=model.widths, blocks=model.blocks)
    q.load_state_dict(model.state_dict(), strict=True)
    return q


def _lite_twin(model):
    from .torch_lite import quantizable_lite

    return quantizable_lite(model)


def _quantizable_types() -> dict:
    """FP32 model type -> its quantizable twin's factory (the seam a new architecture plugs into)."""
    from ..models.efficientnet_lite import EfficientNetLite

    return {ResNet: _resnet_twin, EfficientNetLite: _lite_twin}


def quantizable_from(model: nn.Module, qat: bool = False) -> nn.Module:
    """The quantizable twin of a qdeploy model, with the same weights (no key renames)."""
    make = _quantizable_types().get(type(model))
    if make is None:
        names = ", ".join(t.__name__ for t in _quantizable_types())
        raise QuantizeError(f"eager PyTorch quantization supports {names}; {type(model).__name__} needs a "
                            "quantizable form (QuantStub/DeQuantStub, FloatFunctional adds) — use the ONNX Runtime "
                            "variants for it")
    q = make(model)
    if qat and not getattr(q, "supports_qat", True):
        raise QuantizeError(f"eager QAT (pt-qat) is not available for {type(model).__name__}; use pt-ptq, or the "
                            "ONNX Runtime variants (default, tuned, --auto)")
    return q


def _prepare_qconfig(q: nn.Module, cfg: TorchQuantConfig, qat: bool) -> None:
    """Attach the scheme's qconfig; a twin with fixed ReLU6 grids (EfficientNet-Lite) places them itself."""
    reduce_range = getattr(q, "act_reduce_range", True)
    qconfig = qconfig_for(cfg, qat=qat, reduce_range=reduce_range)
    if hasattr(q, "set_qconfig"):
        q.set_qconfig(qconfig)
    else:
        q.qconfig = qconfig


def qconfig_for(cfg: TorchQuantConfig, qat: bool, reduce_range: bool = True):
    """The scheme's qconfig. reduce_range=True: the x86 qconfig's 7-bit activations (the CIFAR ResNets' tables
    were measured so); False: 8-bit activations, what an exported QDQ file runs (see torch_lite)."""
    from torch.ao.quantization import QConfig, get_default_qat_qconfig, get_default_qconfig

    if cfg.observer == "default" and not reduce_range and not qat:
        from torch.ao.quantization import HistogramObserver

        return QConfig(activation=HistogramObserver.with_args(reduce_range=False),
                       weight=get_default_qconfig(cfg.backend).weight)
    if cfg.observer == "default":
        if qat and cfg.qat_init == "ptq":
            from torch.ao.quantization import FakeQuantize, HistogramObserver

            # PTQ's activation observer inside a fake-quantizer: calibrated once, then frozen
            ptq_act = get_default_qconfig(cfg.backend).activation.p.keywords
            return QConfig(activation=FakeQuantize.with_args(observer=HistogramObserver, quant_min=0, quant_max=255,
                                                             **ptq_act),
                           weight=get_default_qat_qconfig(cfg.backend).weight)
        return get_default_qat_qconfig(cfg.backend) if qat else get_default_qconfig(cfg.backend)
    from .pot import PowerOfTwoObserver, PowerOfTwoPerChannelObserver

    act_scheme = torch.per_tensor_affine if cfg.pot_scheme == "affine" else torch.per_tensor_symmetric
    act = PowerOfTwoObserver.with_args(dtype=torch.quint8, qscheme=act_scheme, reduce_range=reduce_range,
                                       max_shift=cfg.max_shift)
    wt = PowerOfTwoPerChannelObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                max_shift=cfg.max_shift)
    if qat:
        from torch.ao.quantization import FakeQuantize

        return QConfig(activation=FakeQuantize.with_args(observer=act.p.func, **act.p.keywords, quant_min=0, quant_max=127),
                       weight=FakeQuantize.with_args(observer=wt.p.func, **wt.p.keywords, quant_min=-128, quant_max=127))
    return QConfig(activation=act, weight=wt)


def _calibrate(model, calib_x: np.ndarray, batch: int = 64) -> None:
    with torch.no_grad():
        for i in range(0, len(calib_x), batch):
            model(torch.from_numpy(calib_x[i:i + batch]))


def ptq(model_fp32: nn.Module, calib_x: np.ndarray, cfg: TorchQuantConfig) -> nn.Module:
    """Post-training static quantization, calibrated on real images."""
    torch.backends.quantized.engine = cfg.backend
    q = quantizable_from(copy.deepcopy(model_fp32).eval()).eval().fuse_model()
    _prepare_qconfig(q, cfg, qat=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.prepare(q, inplace=True)
        _calibrate(q, calib_x)
        return torch.ao.quantization.convert(q.eval(), inplace=False)


def size_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


PARITY_AGREEMENT = 0.98   # export vs the PyTorch INT8 model: top-1 on the verification images, or ...
PARITY_SHARE = 0.5        # ... logits within this share of the INT8 model's own distance from FP32 (rel-L2)


def export_parity(ref: np.ndarray, got: np.ndarray, fp32_out: np.ndarray | None, name: str):
    """Is the exported file the PyTorch INT8 model it came from? Top-1 agreement >= 98 % on the verification
    images, or, where the model's top-1 is decided by near-ties (ImageNet classes on photos: the same INT8 file
    run by ORT fused and unfused disagrees with itself on 4-5 %), logits closer to the PyTorch INT8 model than
    PARITY_SHARE of that model's own distance from FP32. Returns (check, Parity); raises when neither holds."""

    c = get_task().check(ref, got, min_agreement=PARITY_AGREEMENT)
    facts = Parity(agreement=c.agreement, rel_l2=c.rel_l2, verified_on=c.n, rule="agreement")
    if not c.collapsed:
        return c, facts
    own = compare_outputs(fp32_out, ref).rel_l2 if fp32_out is not None else None
    if own is not None and c.rel_l2 <= PARITY_SHARE * own:
        return replace(c, collapsed=False), replace(facts, rule="rel-l2", int8_vs_fp32_rel_l2=own)
    within = (f"rel-L2 {c.rel_l2:.3f} vs the INT8 model's own {own:.3f} from FP32 (needs <= {PARITY_SHARE:.0%} of it)"
              if own is not None else f"rel-L2 {c.rel_l2:.3f}")
    raise QuantizeError(f"ONNX export of '{name}' disagrees with the PyTorch INT8 model: top-1 agreement "
                        f"{c.agreement:.1%} on {c.n} real images, {within}; keep the PyTorch model or use ORT "
                        "variants")


def int8_onnx_bytes(qmodel: nn.Module, sample: np.ndarray, opset: int = 17) -> bytes:
    """A converted INT8 model as a QDQ ONNX file in memory (input "input", output "logits", dynamic batch), with
    the quantized pad/clamp symbolics (torch_lite) registered while exporting."""

    from .torch_lite import quantized_symbolics

    buf = io.BytesIO()
    with warnings.catch_warnings(), quantized_symbolics(opset):
        warnings.simplefilter("ignore")
        torch.onnx.export(qmodel, (torch.from_numpy(sample),), buf, input_names=["input"], output_names=["logits"],
                          opset_version=opset, dynamo=False, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return buf.getvalue()


def export_quantized(qmodel: nn.Module, out, calib_x: np.ndarray, verify_x: np.ndarray, classes, spec, cfg,
                     extra_meta: dict | None = None, fp32=None, facts: VariantFacts | None = None):
    """Export a converted INT8 model to ONNX (QDQ) and check parity with the PyTorch INT8 model (export_parity);
    given the FP32 ONNX file (fp32), also the collapse guard every INT8 variant passes (ort.collapse_guard): top-1 agreement
    with FP32 on verify_x >= cfg.min_agreement. Parity alone cannot see a collapse: a PyTorch INT8 model that lost
    the classifier exports faithfully and agrees with itself. `facts`, when given, receives how parity held and
    the file's check against FP32."""


    try:
        onnx_bytes = int8_onnx_bytes(qmodel, calib_x[:1])
    except Exception as exc:
        raise QuantizeError(f"PyTorch cannot export the INT8 model '{cfg.name}' to ONNX: {str(exc)[:200]}") from exc
    meta = {"variant": cfg.name, "classes": classes, "preprocess": spec.to_json(), "quant_config": cfg.as_dict(),
            **(extra_meta or {})}
    ref = torch_logits(qmodel, verify_x).numpy()
    facts = VariantFacts() if facts is None else facts

    def check(tmp):
        got = run_batched(open_session(tmp), verify_x)
        fp32_out = run_batched(open_session(fp32), verify_x) if fp32 is not None else None
        c, facts.export_parity = export_parity(ref, got, fp32_out, cfg.name)
        if fp32 is not None:

            # raises, with a per-node diagnosis, when collapsed against FP32
            facts.vs_fp32 = collapse_guard(fp32, tmp, verify_x, cfg, got, fp32_out)
        return c

    return write_onnx(onnx.load_from_string(onnx_bytes), out, meta, verify=check)


def onnx_scales(path, bias: bool = True) -> list[float]:
    """Every scale that feeds a QuantizeLinear/DequantizeLinear node of an ONNX file.

    bias=False leaves out the int32 bias scales, which are products (input scale x weight scale):
    powers of two as well, but outside the observers' clamp range by construction."""

    m = onnx.load(str(path))
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    scales = []
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in consts:
            if not bias and n.input[0] in consts and np.asarray(consts[n.input[0]]).dtype == np.int32:
                continue
            scales.extend(np.asarray(consts[n.input[1]], np.float64).ravel().tolist())
    return scales


def save_converted(qmodel: nn.Module, path) -> None:
    """Save a converted INT8 model's state_dict (quantized tensors; loads with weights_only=True)."""

    with atomic_path(path) as tmp:
        torch.save(qmodel.state_dict(), tmp)


def load_converted(model_fp32: nn.Module, path, cfg: TorchQuantConfig) -> nn.Module:
    """Rebuild the converted INT8 structure for `model_fp32` and load INT8 weights saved elsewhere
    (e.g. a QAT run on a GPU machine), so the result goes through export, evaluation and bench here."""
    torch.backends.quantized.engine = cfg.backend
    q = quantizable_from(copy.deepcopy(model_fp32).eval(), qat=cfg.method == "qat").eval().fuse_model()
    _prepare_qconfig(q, cfg, qat=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.prepare(q, inplace=True)
        q(torch.zeros(2, 3, 32, 32))  # observers need one batch to produce a structure; weights come next
        q = torch.ao.quantization.convert(q, inplace=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        q.load_state_dict(state, strict=True)
    except Exception as exc:
        raise QuantizeError(f"cannot load INT8 weights from {path} ({type(exc).__name__}: {str(exc)[:150]}); "
                            "it must be a converted model's state_dict of the same architecture") from exc
    return q.eval()
