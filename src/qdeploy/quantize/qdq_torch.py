"""A QDQ ONNX file run in PyTorch, its INT32 biases and activation scales trainable (for output tuning).

Each QuantizeLinear becomes fake quantization (round, clamp to the integer type) with a straight-through
gradient, each DequantizeLinear (x - zero point) * scale, every other node its float op: the file's own integers,
scales and zero points, nothing re-derived. ORT fuses DQ -> Conv -> Q into integer kernels whose requantization
rounds a little differently, so the module matches ORT's outputs to rounding, not bit for bit (measured on the
ImageNet EfficientNet-Lite0: top-1 equal on 95 % of images, as ORT with and without its graph optimizations are).

What can train: each INT32 bias (in output units; it stays an integer multiple of its scale) and each activation
scale, as a multiplier that may only shrink (a smaller step clips more of the calibrated range, never widens it:
a ReLU6 folded into its QuantizeLinear keeps its upper bound). Integer weights stay fixed: fitted jointly by
straight-through gradients they flipped and made the output worse (measured), and GPTQ has already chosen them.
"""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from ..errors import QuantizeError


class Unsupported(QuantizeError):
    """The graph has an op this module cannot run (the caller skips tuning and says why)."""


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ste_round(x):
    import torch

    return x + (torch.round(x) - x).detach()


def _per_axis(v, ndim: int, axis: int):
    if v.ndim == 1 and v.numel() > 1:
        shape = [1] * ndim
        shape[axis] = -1
        return v.reshape(shape)
    return v.reshape(())


def _conv(x, w, b, a):
    import torch.nn.functional as F

    p = a.get("pads", [0] * (2 * (w.ndim - 2)))
    k = len(p) // 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise Unsupported("Conv with auto_pad")
    if any(p[i] != p[i + k] for i in range(k)):
        x = F.pad(x, [v for i in reversed(range(k)) for v in (p[i], p[i + k])])
        p = [0] * (2 * k)
    conv = F.conv2d if w.ndim == 4 else F.conv1d
    return conv(x, w, b, a.get("strides", 1), p[:k], a.get("dilations", 1), a.get("group", 1))


def _gemm(x, w, b, a):
    x = x.T if a.get("transA", 0) else x
    w = w.T if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if b is None else y + a.get("beta", 1.0) * b


def _pad(x, pads, value, a):
    import torch.nn.functional as F

    if a.get("mode", b"constant") not in (b"constant", "constant"):
        raise Unsupported("Pad other than constant")
    pads = [int(v) for v in pads.tolist()]
    k = len(pads) // 2
    return F.pad(x, [v for i in reversed(range(k)) for v in (pads[i], pads[i + k])],
                 value=0.0 if value is None else float(value))


def _pool(kind):
    def run(x, a):
        import torch.nn.functional as F

        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or a.get("ceil_mode", 0):
            raise Unsupported(f"{kind} with auto_pad or ceil_mode")
        k, p = a["kernel_shape"], a.get("pads", [0] * 4)
        if p[0] != p[2] or p[1] != p[3]:
            raise Unsupported(f"{kind} with asymmetric pads")
        if kind == "MaxPool":
            return F.max_pool2d(x, k, a.get("strides", k), p[:2])
        return F.avg_pool2d(x, k, a.get("strides", k), p[:2], count_include_pad=bool(a.get("count_include_pad", 0)))
    return run


def _ops():
    """op type -> f(inputs..., attrs): the float ops the quantized classifiers and image models here use."""
    import torch

    def clip(x, lo=None, hi=None, a=None):
        return torch.clamp(x, None if lo is None else float(lo), None if hi is None else float(hi))

    return {
        "Conv": lambda x, w, b=None, a=None: _conv(x, w, b, a),
        "Gemm": lambda x, w, b=None, a=None: _gemm(x, w, b, a),
        "MatMul": lambda x, y, a=None: x @ y,
        "Add": lambda x, y, a=None: x + y,
        "Sub": lambda x, y, a=None: x - y,
        "Mul": lambda x, y, a=None: x * y,
        "Div": lambda x, y, a=None: x / y,
        "Pow": lambda x, y, a=None: x ** y,
        "Sqrt": lambda x, a=None: torch.sqrt(x),
        "Relu": lambda x, a=None: torch.relu(x),
        "Sigmoid": lambda x, a=None: torch.sigmoid(x),
        "Clip": clip,
        "Identity": lambda x, a=None: x,
        "Pad": lambda x, pads, value=None, a=None: _pad(x, pads, value, a),
        "GlobalAveragePool": lambda x, a=None: x.mean(tuple(range(2, x.ndim)), keepdim=True),
        "AveragePool": lambda x, a=None: _pool("AveragePool")(x, a),
        "MaxPool": lambda x, a=None: _pool("MaxPool")(x, a),
        "Flatten": lambda x, a=None: x.flatten(a.get("axis", 1)) if a.get("axis", 1) == 1 else
        x.reshape(int(np.prod(x.shape[:a["axis"]])), -1),
        "Reshape": lambda x, shape, a=None: x.reshape([x.shape[i] if int(v) == 0 else int(v)
                                                       for i, v in enumerate(shape.tolist())]),
        "Concat": lambda *xs, a=None: torch.cat(xs, a["axis"]),
        "ReduceMean": lambda x, axes=None, a=None: x.mean(
            [int(v) for v in (axes.tolist() if axes is not None else a["axes"])], keepdim=bool(a.get("keepdims", 1))),
    }


class QDQModule:
    """The file as a differentiable function of its inputs. `parameters()`: the trainable tensors; `write(model)`
    puts the trained integers and scales back into a loaded ONNX model (same graph, same initializer names)."""

    def __init__(self, model, fixed: dict | None = None):
        import torch

        self.nodes = list(model.graph.node)
        self.attrs = [_attrs(n) for n in self.nodes]
        self.ops = _ops()
        bad = sorted({n.op_type for n in self.nodes} - set(self.ops) - {"QuantizeLinear", "DequantizeLinear"})
        if bad:
            raise Unsupported(f"ops {', '.join(bad)}")
        self.arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.const = {k: torch.from_numpy(v.astype(np.float32) if v.dtype != np.int64 else v.copy())
                      for k, v in self.arrays.items()}
        self.fixed = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in (fixed or {}).items()}
        self.outputs = [o.name for o in model.graph.output]
        self.inputs = [i.name for i in model.graph.input if i.name not in self.arrays and i.name not in self.fixed]
        # INT32 biases feeding DequantizeLinear: trained in output units (value = int * scale)
        self.bias = {}
        for n in self.nodes:
            if (n.op_type == "DequantizeLinear" and n.input[0] in self.arrays
                    and self.arrays[n.input[0]].dtype == np.int32):
                s = self.arrays[n.input[1]].astype(np.float32)
                self.bias[n.input[0]] = (torch.nn.Parameter(torch.from_numpy(
                    self.arrays[n.input[0]].astype(np.float32) * s)), torch.from_numpy(s), n.input[1])
        # activation scales (QuantizeLinear's scale, shared by the DequantizeLinear after it): log multipliers <= 0
        self.scales = {n.input[1]: torch.nn.Parameter(torch.zeros(()))
                       for n in self.nodes if n.op_type == "QuantizeLinear" and n.input[1] in self.arrays
                       and self.arrays[n.input[1]].size == 1}

    def parameters(self) -> dict[str, list]:
        return {"bias": [p for p, _, _ in self.bias.values()], "scale": list(self.scales.values())}

    def project(self) -> None:
        """Keep every scale multiplier <= 1 (called after each optimizer step)."""
        import torch

        with torch.no_grad():
            for p in self.scales.values():
                p.clamp_(max=0.0)

    def _value(self, name: str, env: dict):
        import torch

        if name in env:
            return env[name]
        if name in self.scales:
            return self.const[name] * torch.exp(self.scales[name])
        return self.const[name] if name in self.const else self.fixed[name]

    def _dequantize(self, n, env, a):
        src = n.input[0]
        if src in self.bias:
            p, s, _ = self.bias[src]
            return s * _ste_round(p / s)
        q, s = self._value(src, env), self._value(n.input[1], env)
        z = self._value(n.input[2], env) if len(n.input) > 2 and n.input[2] else 0.0 * s
        axis = a.get("axis", 1) % max(q.ndim, 1)
        return (q - _per_axis(z, q.ndim, axis)) * _per_axis(s, q.ndim, axis)

    def _quantize(self, n, env):
        import torch

        if len(n.input) < 3 or not n.input[2] or n.input[2] not in self.arrays:
            raise Unsupported("QuantizeLinear without a zero point initializer")
        x, s, z = self._value(n.input[0], env), self._value(n.input[1], env), self._value(n.input[2], env)
        info = np.iinfo(self.arrays[n.input[2]].dtype)
        return torch.clamp(_ste_round(x / s) + z, info.min, info.max)

    def __call__(self, *xs):
        env = dict(zip(self.inputs, xs))
        env.update(self.fixed)
        for n, a in zip(self.nodes, self.attrs):
            if n.op_type == "DequantizeLinear":
                y = self._dequantize(n, env, a)
            elif n.op_type == "QuantizeLinear":
                y = self._quantize(n, env)
            else:
                args = [self._value(i, env) if i else None for i in n.input]
                y = self.ops[n.op_type](*args, a=a)
            env[n.output[0]] = y
        return [env[o] for o in self.outputs]

    def write(self, model) -> None:
        """The trained scales, and each bias as an integer of its layer's new scale (input scale x weight scale,
        as ORT's fused kernels assume), into `model`'s initializers."""
        import torch

        inits = {i.name: i for i in model.graph.initializer}
        with torch.no_grad():
            new_scale = {k: (self.const[k] * torch.exp(p)).numpy().astype(np.float32).reshape(self.arrays[k].shape)
                         for k, p in self.scales.items()}
        for k, v in new_scale.items():
            inits[k].CopyFrom(numpy_helper.from_array(v, k))
        producer = {o: n for n in self.nodes for o in n.output}
        for n in self.nodes:
            b = producer.get(n.input[2]) if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] else None
            if b is None or b.op_type != "DequantizeLinear" or b.input[0] not in self.bias:
                continue
            p, _, s_name = self.bias[b.input[0]]
            dx, dw = producer.get(n.input[0]), producer.get(n.input[1])
            s = self.arrays[s_name].astype(np.float32)
            if (dx is not None and dx.op_type == "DequantizeLinear" and dw is not None
                    and dw.op_type == "DequantizeLinear" and dx.input[1] in new_scale):
                s = (new_scale[dx.input[1]].reshape(()) * self.arrays[dw.input[1]].astype(np.float32)).astype(
                    np.float32).reshape(s.shape)
                inits[s_name].CopyFrom(numpy_helper.from_array(s, s_name))
            value = p.detach().numpy().astype(np.float64)
            q = np.clip(np.round(value / s.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int32)
            inits[b.input[0]].CopyFrom(numpy_helper.from_array(q, b.input[0]))
