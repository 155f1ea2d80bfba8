"""EfficientNet-Lite in a form PyTorch's eager quantization can convert (issue 11's "pt-ptq for this
architecture"), with the FP32 model's state_dict keys unchanged.

What the plain model does that eager quantization cannot take as it is, and what stands in for it here:
- TensorFlow "SAME" padding inside a Conv2d subclass (not fusable with its batch norm): stride-1 convs get the
  equal symmetric padding of a plain nn.Conv2d, stride-2 convs a `SamePad` module ahead of them (asymmetric).
- ReLU6 (the x86 backend fuses conv-bn-ReLU, not ReLU6): a ReLU fused into conv-bn, then `Clamp6`. The fused
  conv's output grid is fixed (TFLite's rule for ReLU6) rather than calibrated: an observer sees the conv's
  values before the clamp (up to 30 and more) and spends most of its codes above 6 (measured: default observers
  lose 32 pt of top-1 on the fine-tuned Lite0). The grid is step 2^-5 from 0, so that 6 is code 192, not 255.
  With [0, 6] on all 255 codes the PyTorch INT8 ImageNet Lite0 drifted from its own exact math (the exported
  file run unfused by ORT) by rel-L2 0.21, and sat at 0.24 from FP32 where the exact math sat at 0.16 (Intel
  Xeon with AVX-512 VNNI, 16 Kodak photos + 100 upscaled CIFAR-10 test images); with 7-bit weights the drift fell to 0.05, which reads as fbgemm adding
  pairs of u8 x s8 products in int16 and saturating (7-bit weights cannot overflow it, but cost Lite0's
  depthwise kernels far more: 0.41 from FP32). With step 2^-5 both sit at 0.17 and drift 0.06. The cost: ORT
  cannot fold the clamp at 6 into a grid that reaches 7.97, so the exported file keeps 33 DequantizeLinear-Clip-
  QuantizeLinear steps in float.
- the identity skip: a FloatFunctional add.
Activations are 8-bit (quant range 0..255), not the x86 qconfig's 7: ONNX QuantizeLinear has no 7-bit form,
so a file exported from a 7-bit model runs to 255 in ONNX Runtime while PyTorch clips at 127 (export parity
95.8 % with 7 bits on the 24 Kodak photos). On a CPU without VNNI (AVX2 only) 8-bit activations x 8-bit weights
overflow the int16 pair sums of both fbgemm and ORT's kernels: the exact math stays at rel-L2 0.17 from FP32, the
kernels' results at 0.50-0.57, and the collapse guard refuses the file (README, pt-ptq on EfficientNet-Lite0).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.efficientnet_lite import EfficientNetLite, MBConv

RELU6_MAX = 6.0
RELU6_STEP = 2.0 ** -5   # the fixed grid of every ReLU6 output: 6 is code 192 (module docstring)


class SamePad(nn.Module):
    """TensorFlow's "SAME" padding of a stride-s, kernel-k conv, as its own (parameter-free) module."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        pads = []
        for size in (int(x.shape[-1]), int(x.shape[-2])):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads) if any(pads) else x


class Clamp6(nn.Module):
    """The upper half of ReLU6 (the lower half is the ReLU fused into the conv); runs on quantized tensors."""

    def forward(self, x):
        return torch.clamp(x, max=RELU6_MAX)


def _plain(conv: nn.Conv2d) -> tuple[nn.Module, nn.Conv2d]:
    """(padding module, plain Conv2d) equal to one SameConv2d; weights are loaded afterwards by state_dict."""
    k, s = conv.kernel_size[0], conv.stride[0]
    pad = SamePad(k, s) if s > 1 else nn.Identity()
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, k, s, padding=(k - 1) // 2 if s == 1 else 0,
                      groups=conv.groups, bias=False)
    return pad, plain


class QuantMBConv(nn.Module):
    def __init__(self, block: MBConv):
        super().__init__()
        self.expand, self.skip = block.expand, block.skip
        if self.expand:
            _, self._expand_conv = _plain(block._expand_conv)
            self._bn0 = nn.BatchNorm2d(block._bn0.num_features, eps=block._bn0.eps)
            self.relu0, self.clamp0 = nn.ReLU(), Clamp6()
        self.pad, self._depthwise_conv = _plain(block._depthwise_conv)
        self._bn1 = nn.BatchNorm2d(block._bn1.num_features, eps=block._bn1.eps)
        self.relu1, self.clamp1 = nn.ReLU(), Clamp6()
        _, self._project_conv = _plain(block._project_conv)
        self._bn2 = nn.BatchNorm2d(block._bn2.num_features, eps=block._bn2.eps)
        if self.skip:
            self.skip_add = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        y = self.clamp0(self.relu0(self._bn0(self._expand_conv(x)))) if self.expand else x
        y = self.clamp1(self.relu1(self._bn1(self._depthwise_conv(self.pad(y)))))
        y = self._bn2(self._project_conv(y))
        return self.skip_add.add(y, x) if self.skip else y

    def fuse(self, fuse) -> None:
        groups = [["_depthwise_conv", "_bn1", "relu1"], ["_project_conv", "_bn2"]]
        fuse(self, ([["_expand_conv", "_bn0", "relu0"]] if self.expand else []) + groups, inplace=True)

    def relu6_convs(self) -> list[nn.Module]:
        """The (fused) convs whose outputs are ReLU6 outputs."""
        return ([self._expand_conv] if self.expand else []) + [self._depthwise_conv]


class QuantizableEfficientNetLite(nn.Module):
    """EfficientNet-Lite with quant/dequant stubs, plain fusable convs and fixed ReLU6 grids; loads the FP32
    model's state_dict with strict keys."""

    supports_qat = False        # eager QAT of this net is not done here: the ORT/`tuned` variants cover it
    act_reduce_range = False    # 8-bit activations: exportable to ONNX bit for bit (module docstring)

    def __init__(self, model: EfficientNetLite):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.stem_pad, self._conv_stem = _plain(model._conv_stem)
        self._bn0 = nn.BatchNorm2d(model._bn0.num_features, eps=model._bn0.eps)
        self.relu0, self.clamp0 = nn.ReLU(), Clamp6()
        self._blocks = nn.ModuleList(QuantMBConv(b) for b in model._blocks)
        _, self._conv_head = _plain(model._conv_head)
        self._bn1 = nn.BatchNorm2d(model._bn1.num_features, eps=model._bn1.eps)
        self.relu1, self.clamp1 = nn.ReLU(), Clamp6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(model._dropout.p)
        self._fc = nn.Linear(model._fc.in_features, model._fc.out_features)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.clamp0(self.relu0(self._bn0(self._conv_stem(self.stem_pad(self.quant(x))))))
        for block in self._blocks:
            x = block(x)
        x = self.clamp1(self.relu1(self._bn1(self._conv_head(x))))
        return self.dequant(self._fc(self._dropout(torch.flatten(self.pool(x), 1))))

    def fuse_model(self, qat: bool = False) -> "QuantizableEfficientNetLite":
        fuse = torch.ao.quantization.fuse_modules_qat if qat else torch.ao.quantization.fuse_modules
        fuse(self, [["_conv_stem", "_bn0", "relu0"], ["_conv_head", "_bn1", "relu1"]], inplace=True)
        for block in self._blocks:
            block.fuse(fuse)
        return self

    def relu6_convs(self) -> list[nn.Module]:
        return [self._conv_stem, *(m for b in self._blocks for m in b.relu6_convs()), self._conv_head]

    def set_qconfig(self, qconfig, relu6_scale: float = RELU6_STEP) -> None:
        """`qconfig` everywhere, except that every ReLU6 output gets the fixed grid 0, relu6_scale, 2 relu6_scale,
        ... (a power of two: power-of-two schemes keep it)."""
        from torch.ao.quantization import FixedQParamsObserver, QConfig

        self.qconfig = qconfig
        fixed = QConfig(activation=FixedQParamsObserver.with_args(scale=relu6_scale, zero_point=0,
                                                                  dtype=torch.quint8, quant_min=0, quant_max=255),
                        weight=qconfig.weight)
        for conv in self.relu6_convs():
            conv.qconfig = fixed


def quantizable_lite(model: EfficientNetLite) -> QuantizableEfficientNetLite:
    q = QuantizableEfficientNetLite(model)
    q.load_state_dict(model.state_dict(), strict=True)
    return q


@contextlib.contextmanager
def quantized_symbolics(opset: int):
    """While exporting: ONNX symbolics for pad and clamp on quantized tensors. PyTorch's own lack the
    quantized form ("ONNX symbolic expected ... quantized"); wrapped with quantized_args they dequantize,
    run the float op and requantize with the input's scale and zero point, which is what the eager kernels do
    (a pad by zeros and a clamp keep the input's grid)."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper, symbolic_opset11

    names = {"aten::constant_pad_nd": symbolic_helper.quantized_args(True, False, False)(
                 symbolic_opset11.constant_pad_nd),
             "aten::pad": symbolic_helper.quantized_args(True, False, False, False)(symbolic_opset11.pad),
             "aten::clamp": symbolic_helper.quantized_args(True, False, False)(symbolic_opset11.clamp)}
    for name, fn in names.items():
        torch.onnx.register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name in names:
            torch.onnx.unregister_custom_op_symbolic(name, opset)
