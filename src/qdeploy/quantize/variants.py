"""Every INT8 variant qdeploy can build, by name, and how each is built inside a run."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, QDeployError
from .config import PRESETS, preset


def torch_presets() -> dict:
    from .torch_eager import TORCH_PRESETS

    return TORCH_PRESETS


TORCH_VARIANTS = ("pt-ptq", "pt-qat", "pot")


def torch_config(name: str, overrides: dict):
    """A PyTorch variant's config with the user's overrides (None = keep the preset); bad values raise
    ConfigError here, so a run can check them before any heavy work."""
    return torch_presets()[name]().with_(**{k: v for k, v in overrides.items() if v is not None})


def known_variants() -> list[str]:
    return list(PRESETS) + list(TORCH_VARIANTS)


def parse_variants(text) -> list[str]:
    names = [v.strip() for v in (text.split(",") if isinstance(text, str) else text) if v.strip()]
    if "all" in names:
        return known_variants()
    unknown = [n for n in names if n not in known_variants()]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known_variants())} or 'all'")
    return list(dict.fromkeys(names))


@dataclass
class VariantContext:
    """What building a variant may need; PyTorch variants need the torch model (a checkpoint run)."""

    fp32: Path
    out: Path
    calib_x: np.ndarray
    classes: list[str]
    spec: object
    model: object = None                 # FP32 torch model, None when the run started from ONNX
    qat_sets: object = None              # callable (train limit, val size) -> calib, train, val ImageSets
    torch_overrides: dict = field(default_factory=dict)
    torch_models: dict = field(default_factory=dict)  # name -> (INT8 torch model, size bytes), for bench


def build_variant(name: str, ctx: VariantContext, man, log) -> dict:
    """Build one variant into ctx.out; failures are recorded in the returned dict, never half-written."""
    dst = ctx.out / f"int8_{name}.onnx"
    t0 = time.perf_counter()
    try:
        if name in PRESETS:
            cfg = preset(name)
            man.config(f"quantize:{name}", cfg)
            from .ort import quantize

            _, check = quantize(ctx.fp32, dst, cfg, ctx.calib_x)
            extra = {}
        else:
            cfg, check, extra = _torch_variant(name, ctx, dst, man, log)
    except QDeployError as exc:
        log(f"quantize {name}: FAILED: {exc}")
        return {"name": name, "kind": "int8", "file": dst.name, "status": "failed", "error": str(exc)}
    man.note(f"quantize:{name}", seconds=round(time.perf_counter() - t0, 3), check=check.as_dict())
    log(f"quantize {name}: {dst} ({dst.stat().st_size / 1e6:.1f} MB, agreement on calibration images "
        f"{check.agreement:.1%})")
    return {"name": name, "kind": "int8", "file": dst.name, "status": "ok", "config": cfg.as_dict(),
            "check": check.as_dict(), **extra}


def _torch_variant(name: str, ctx: VariantContext, dst: Path, man, log):
    from ..errors import QuantizeError
    from .torch_eager import export_quantized, ptq, size_bytes

    if ctx.model is None:
        raise QuantizeError(f"variant '{name}' quantizes the PyTorch model; start the run from --checkpoint, not --onnx")
    cfg = torch_config(name, ctx.torch_overrides)
    man.config(f"quantize:{name}", cfg)
    extra = {}
    if cfg.method == "ptq":
        qmodel = ptq(ctx.model, ctx.calib_x, cfg)
    elif cfg.qat_from:
        import json

        from .torch_eager import load_converted

        qmodel = load_converted(ctx.model, cfg.qat_from, cfg)
        side = Path(cfg.qat_from).with_suffix(".json")
        if side.is_file():
            record = json.loads(side.read_text())
            extra["qat_history"] = record.get("history", [])
            if "qat_epoch" in record:
                extra["qat_epoch"] = record["qat_epoch"]
        log(f"quantize {name}: INT8 weights from the QAT run in {cfg.qat_from}")
    else:
        from .torch_qat import qat

        _, train, val = ctx.qat_sets(cfg.qat_train_limit, cfg.qat_val_size)
        qmodel, history, chosen = qat(ctx.model, train.pixels_uint8(ctx.spec, progress=True), train.labels, ctx.spec,
                                      cfg, ctx.calib_x, val=(val.load(ctx.spec), val.labels) if len(val) else None,
                                      log=log)
        extra.update(qat_history=history, qat_epoch=chosen)
        man.note(f"quantize:{name}", qat_history=history, qat_epoch=chosen)
    _, check = export_quantized(qmodel, dst, ctx.calib_x, ctx.calib_x[:256], ctx.classes, ctx.spec, cfg)
    if cfg.observer == "pot":
        from .pot import is_power_of_two
        from .torch_eager import onnx_scales

        scales = onnx_scales(dst)
        bad = [s for s in scales if not is_power_of_two(s)]
        if bad:
            dst.unlink()
            raise QuantizeError(f"{len(bad)} of {len(scales)} scales in the PoT ONNX file are not powers of two")
        extra["pot_scales"] = {"count": len(scales), "all_power_of_two": True,
                               "min_exp": int(np.log2(min(scales))), "max_exp": int(np.log2(max(scales)))}
    ctx.torch_models[name] = (qmodel, size_bytes(qmodel))
    return cfg, check, extra
