"""The quantizer registry, keyed by config type (torchao's `quantize_(model, config)` shape).

Each scheme is one config dataclass (recipes.py) and one handler registered for its type:
`@register(QuantConfig) def build_ort(cfg, ctx, dst, log) -> (QuantCheck, VariantFacts)`. `build_variant`
dispatches on the config's type; there is no string dispatch and no if/elif over schemes.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..data import DataConfig, PreprocessSpec
from ..errors import QDeployError
from ..results import VariantFacts, VariantResult
from ..targets import DEFAULT_TARGET

if TYPE_CHECKING:   # annotations only: torch is imported where a recipe needs it
    from torch import nn

# Modules whose handlers register themselves on import (loaded on first use: they import torch or ORT).
HANDLER_MODULES = ("qdeploy.quantize.ort", "qdeploy.quantize.torch_variant", "qdeploy.quantize.auto",
                   "qdeploy.quantize.nncf_variant")
_HANDLERS: dict[type, Callable] = {}


def register(config_type: type):
    def deco(fn):
        _HANDLERS[config_type] = fn
        return fn
    return deco


def handler_for(cfg) -> Callable:
    if type(cfg) not in _HANDLERS:
        for mod in HANDLER_MODULES:
            importlib.import_module(mod)
    return _HANDLERS[type(cfg)]


@dataclass
class VariantContext:
    """What building a variant may need; PyTorch variants need the torch model (a checkpoint run)."""

    fp32: Path
    out: Path
    calib_x: np.ndarray
    classes: list[str]
    spec: PreprocessSpec | None
    data: DataConfig | None = None       # the run's data: QAT and auto draw their own disjoint sets
    model: nn.Module | None = None       # FP32 torch model, None when the run started from ONNX
    torch_models: dict = field(default_factory=dict)  # name -> (INT8 torch model, size bytes), for bench
    targets: tuple[str, ...] = (DEFAULT_TARGET,)  # where every variant is evaluated and timed


def build_variant(name: str, cfg, ctx: VariantContext, man, log, handler=None):
    """Build one variant into ctx.out; failures are recorded in the returned result, never half-written.
    handler: how (default: the config's registered builder; distributed.build fetches one built on Ray)."""

    dst = ctx.out / f"int8_{name}{getattr(cfg, 'suffix', '.onnx')}"
    target = getattr(cfg, "target", DEFAULT_TARGET)
    man.config(f"quantize:{name}", cfg)
    t0 = time.perf_counter()
    try:
        check, facts = (handler or handler_for(cfg))(cfg, ctx, dst, log)
    except QDeployError as exc:
        log(f"quantize {name}: FAILED: {exc}")
        failed = VariantResult.failed(name, dst.name, str(exc), check=exc.check, facts=exc.facts, config=cfg)
        failed.target = target
        return failed
    man.note(f"quantize:{name}", seconds=round(time.perf_counter() - t0, 3), check=check.as_dict())
    log(f"quantize {name}: {dst} ({(facts.ir_bytes or dst.stat().st_size) / 1e6:.1f} MB, {check.summary()})")
    return VariantResult(name=name, kind="int8", file=dst.name, config=cfg, check=check, facts=facts,
                         target=target)


def refuse(exc: QDeployError, check=None, facts: VariantFacts | None = None) -> QDeployError:
    """`exc` carrying what the refused file reached (its check against FP32) and why (facts.diagnosis)."""
    exc.check, exc.facts = check, facts
    return exc
