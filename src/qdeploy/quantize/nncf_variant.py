"""The `nncf` variant: OpenVINO's post-training quantizer, the anchor beside qdeploy's own recipes.

Same FP32 model, same calibration images (and fixed extra inputs) as every other variant. The IR (.xml +
.bin) carries qdeploy's metadata in its rt_info, is verified against FP32 on real images like every INT8 file
(agreement or PSNR, by the task), and only then gets its final name (.bin first, the .xml last).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..artifacts import model_bytes, read_info
from ..errors import QuantizeError
from ..fixed_inputs import arrays
from ..formats.ir import META_KEY
from ..graph.attention import has_attention
from ..recipes import NncfConfig
from ..results import VariantFacts
from ..targets import open_session, run_batched
from ..tasks import QuantCheck
from .base import VariantContext, register
from .ort import batch_one, collapse_guard


def _dataset(ctx: VariantContext, fp32: Path):
    import nncf


    info = read_info(fp32)
    fixed = arrays(info.fixed_inputs)
    step = 1 if batch_one(fp32) else 8
    x = ctx.calib_x
    items = [{info.input_name: x[i:i + step], **fixed} for i in range(0, len(x), step)]
    return nncf.Dataset(items), len(items)


@register(NncfConfig)
def build_nncf(cfg: NncfConfig, ctx: VariantContext, dst: Path, log) -> tuple[QuantCheck, VariantFacts]:
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise QuantizeError("the nncf variant needs OpenVINO and NNCF; pip install 'qdeploy[openvino]'") from exc

    info = read_info(ctx.fp32)
    dataset, n = _dataset(ctx, ctx.fp32)
    preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[cfg.preset]
    transformer = cfg.model_type == "transformer" or (cfg.model_type == "auto" and has_attention(ctx.fp32))
    extra = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    log(f"quantize {cfg.name}: NNCF model type {'transformer' if transformer else 'default (CNN)'}")
    try:
        model = ov.Core().read_model(str(ctx.fp32))
        q = nncf.quantize(model, dataset, preset=preset, subset_size=n, fast_bias_correction=cfg.fast_bias_correction,
                          **extra)
    except Exception as exc:
        raise QuantizeError(f"nncf.quantize failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
    meta = {"variant": cfg.name, "task": info.task, "preprocess": info.preprocess.to_json() if info.preprocess else "",
            "classes": json.dumps(info.classes or []), "fixed_inputs": json.dumps(info.fixed_inputs)}
    for k, v in meta.items():
        q.set_rt_info(v, [META_KEY, k])
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".nncf-", dir=dst.parent) as tmp:
        tmp_xml = Path(tmp) / dst.name
        ov.save_model(q, str(tmp_xml), compress_to_fp16=False)
        ref = run_batched(open_session(ctx.fp32), ctx.calib_x)
        got = run_batched(open_session(tmp_xml, target=cfg.target), ctx.calib_x)
        check = collapse_guard(ctx.fp32, tmp_xml, ctx.calib_x, cfg, out=got, ref=ref, diagnosis=False)
        os.replace(tmp_xml.with_suffix(".bin"), dst.with_suffix(".bin"))
        os.replace(tmp_xml, dst)
    return check, VariantFacts(calibration_items=n, ir_bytes=model_bytes(dst))
