"""torch -> ONNX, then verify the ONNX model against PyTorch on a real batch."""
from __future__ import annotations

import io
import re
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from .artifacts import write_onnx
from .compare import compare_outputs
from .data import PreprocessSpec
from .errors import ConfigError, ExportError
from .targets import open_session, run_batched
from .tasks import DEFAULT_TASK, get_task


@dataclass
class ExportConfig:
    opset: int = 17
    input_name: str = "input"
    output_name: str | None = None   # None: the task's (tasks.Task.output_name: logits, output)
    dynamic_batch: bool = True
    atol: float = 1e-3          # max |logit_torch - logit_onnx| allowed
    min_agreement: float = 0.999  # top-1 agreement allowed on the parity batch

    def __post_init__(self):
        if self.opset < 17:
            raise ConfigError(f"opset {self.opset} is too old; qdeploy exports opset >= 17")
        if not (0 < self.min_agreement <= 1):
            raise ConfigError("min_agreement must be in (0, 1]")


@dataclass
class Parity:
    max_abs_diff: float
    agreement: float
    batch: int

    def as_dict(self):
        return asdict(self)


def _torch_export(model, example, cfg: ExportConfig) -> bytes:
    import torch

    dyn = {cfg.input_name: {0: "batch"}, cfg.output_name: {0: "batch"}} if cfg.dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # The TorchScript exporter writes one self-contained file, which ORT's quantizer
            # handles directly; the dynamo exporter is the fallback for models it cannot trace.
            torch.onnx.export(model, (example,), buf, input_names=[cfg.input_name], output_names=[cfg.output_name],
                              opset_version=cfg.opset, dynamic_axes=dyn, dynamo=False)
            return buf.getvalue()
        except Exception as first:
            try:
                prog = torch.onnx.export(model, (example,), dynamo=True, opset_version=cfg.opset,
                                         input_names=[cfg.input_name], output_names=[cfg.output_name],
                                         dynamic_axes=dyn, verbose=False)
                return prog.model_proto.SerializeToString()
            except Exception as second:
                op = unsupported_op(first)
                if op:
                    where = locate_op(model, example, op)
                    raise ExportError(f"the operator aten::{op}{f' in layer {where}' if where else ''} has no ONNX "
                                      f"export at opset {cfg.opset} (neither the TorchScript nor the dynamo exporter "
                                      "converts it); replace it in that layer's forward, or keep that part out of "
                                      "the deployed model") from None
                raise ExportError(f"torch.onnx.export failed ({type(first).__name__}: {str(first)[:150]}; "
                                  f"dynamo: {type(second).__name__}); simplify the model's forward") from second


_UNSUPPORTED = re.compile(r"operator '(?:aten::)?([\w.]+)'")


def unsupported_op(exc: Exception) -> str | None:
    """The aten operator the TorchScript exporter names in its UnsupportedOperatorError, if that was the failure."""
    m = _UNSUPPORTED.search(str(exc)) if "not supported" in str(exc) else None
    return m.group(1) if m else None


def locate_op(model, example, op: str) -> str | None:
    """The innermost module (dotted name and class) whose forward calls torch's `op`, found by running the model
    once with a function mode that watches every torch call; None when no call of that name is seen."""
    import torch
    from torch.overrides import TorchFunctionMode

    names = {m: n for n, m in model.named_modules()}
    stack: list = []
    found: list[str] = []

    def enter(m, _inputs):
        stack.append(m)

    def leave(m, _inputs, _output):
        stack.pop()

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if not found and getattr(func, "__name__", "") == op and stack:
                found.append(f"'{names[stack[-1]] or '(top level)'}' ({type(stack[-1]).__name__})")
            return func(*args, **(kwargs or {}))

    handles = [m.register_forward_pre_hook(enter) for m in names] + [m.register_forward_hook(leave) for m in names]
    try:
        with torch.no_grad(), Watch():
            model(example)
    except Exception:  # the model ran before export; a failure here only means no location
        pass
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def check_parity(model, onnx_path: Path, batch: np.ndarray, cfg: ExportConfig) -> Parity:
    from .models.logits import torch_logits  # torch: optional (serving installs have none)

    ref = torch_logits(model, batch).numpy()
    d = compare_outputs(ref, run_batched(open_session(onnx_path), batch))
    return Parity(max_abs_diff=d.max_abs_diff, agreement=d.agreement, batch=d.n)


def export(model, out: str | Path, batch: np.ndarray, classes: list[str], spec: PreprocessSpec,
           cfg: ExportConfig | None = None, meta: dict | None = None, task: str = DEFAULT_TASK) -> tuple[Path, Parity]:
    """Export `model` to `out`, check it, verify parity on the real `batch`; raise ExportError past tolerance.
    An image-to-image model is checked on max |diff| of its output images alone (top-1 means nothing there)."""

    task_def = get_task(task)
    import torch

    cfg = cfg or ExportConfig()
    cfg = cfg if cfg.output_name else replace(cfg, output_name=task_def.output_name)
    model = model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(batch[:2]))
    wrong = task_def.output_error(tuple(logits.shape), len(classes))
    if wrong:
        raise ExportError(wrong)
    proto = onnx.load_from_string(_torch_export(model, torch.from_numpy(batch[:1]), cfg))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"exported graph fails onnx.checker: {str(exc)[:200]}") from exc

    def verify(tmp: Path) -> Parity:
        parity = check_parity(model, tmp, batch, cfg)
        agreement = task_def.top1_agreement(parity)
        if parity.max_abs_diff > cfg.atol or (agreement is not None and agreement < cfg.min_agreement):
            raise ExportError(
                f"ONNX disagrees with PyTorch on {parity.batch} real images: max |diff| {parity.max_abs_diff:.2e} "
                f"(allowed {cfg.atol:.0e})" + ("" if agreement is None else f", top-1 agreement {agreement:.2%}")
                + "; check for ops that export "
                "differently (e.g. training-mode layers) or raise --atol"
            )
        return parity

    return write_onnx(proto, out, {"variant": "fp32", "classes": classes, "preprocess": spec.to_json(), "task": task,
                                   **(meta or {})},
                      verify=verify)
