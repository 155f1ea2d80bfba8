"""The handler for PyTorch-native INT8 schemes (pt-ptq, pt-qat, pot): quantize the torch model, export it
to QDQ ONNX verified against the PyTorch INT8 model, and keep the PyTorch model for its own timing."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data import open_qat_sets
from ..errors import QuantizeError
from ..recipes import TorchQuantConfig
from ..records import RecordError, from_json
from ..results import PotScales, QatEpoch, VariantFacts
from ..tasks import QuantCheck
from .base import VariantContext, register


def _qat_model(cfg: TorchQuantConfig, ctx: VariantContext, facts: VariantFacts, log):
    """Train here, or load the converted weights of a QAT run elsewhere (--qat-from)."""

    if cfg.qat_from:
        from .torch_eager import load_converted

        side = Path(cfg.qat_from).with_suffix(".json")
        if side.is_file():
            record = json.loads(side.read_text())
            try:
                facts.qat_history = from_json(list[QatEpoch], record.get("history", []), where=str(side))
            except RecordError as exc:
                raise QuantizeError(f"{side}: not a QAT history qdeploy wrote ({exc}); remove it or re-run the QAT "
                                    "script") from exc
            facts.qat_epoch = record.get("qat_epoch")
        log(f"quantize {cfg.name}: INT8 weights from the QAT run in {cfg.qat_from}")
        return load_converted(ctx.model, cfg.qat_from, cfg)
    from .torch_qat import qat

    _, train, val = open_qat_sets(replace(ctx.data, classes=ctx.classes), cfg.qat_train_limit, cfg.qat_val_size)
    qmodel, history, chosen = qat(ctx.model, train.pixels_uint8(ctx.spec, progress=True), train.labels, ctx.spec, cfg,
                                  ctx.calib_x, val=(val.load(ctx.spec), val.labels) if len(val) else None, log=log)
    facts.qat_history, facts.qat_epoch = [QatEpoch(**r) for r in history], chosen
    return qmodel


def _pot_facts(dst: Path) -> PotScales:
    """Every scale in the exported file must be an exact power of two, or the file is not kept."""
    from .pot import is_power_of_two
    from .torch_eager import onnx_scales

    scales = onnx_scales(dst)
    bad = [s for s in scales if not is_power_of_two(s)]
    if bad:
        dst.unlink()
        raise QuantizeError(f"{len(bad)} of {len(scales)} scales in the PoT ONNX file are not powers of two")
    return PotScales(count=len(scales), all_power_of_two=True, min_exp=int(np.log2(min(scales))),
                     max_exp=int(np.log2(max(scales))))


@register(TorchQuantConfig)
def build_torch(cfg: TorchQuantConfig, ctx: VariantContext, dst: Path, log) -> tuple[QuantCheck, VariantFacts]:
    from .torch_eager import export_quantized, ptq, size_bytes

    if ctx.model is None:
        raise QuantizeError(f"variant '{cfg.name}' quantizes the PyTorch model; start the run from --checkpoint, "
                            "not --onnx")
    facts = VariantFacts()
    qmodel = ptq(ctx.model, ctx.calib_x, cfg) if cfg.method == "ptq" else _qat_model(cfg, ctx, facts, log)
    _, check = export_quantized(qmodel, dst, ctx.calib_x, ctx.calib_x[:256], ctx.classes, ctx.spec, cfg,
                                fp32=ctx.fp32, facts=facts)
    if cfg.observer == "pot":
        facts.pot_scales = _pot_facts(dst)
    ctx.torch_models[cfg.name] = (qmodel, size_bytes(qmodel))
    return check, facts
