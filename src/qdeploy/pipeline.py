"""`qdeploy run`: checkpoint (or ONNX) -> FP32 ONNX -> INT8 variants -> evaluate -> bench -> report."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .bench import BenchConfig, benchmark_many, cpu_name
from .data import DataConfig, open_calib_eval, open_qat_sets
from .errors import ConfigError, DataError
from .evaluate import EvalConfig, evaluate
from .export import ExportConfig, export
from .manifest import Manifest
from .quantize.variants import TORCH_VARIANTS, VariantContext, build_variant, parse_variants, torch_config
from .report import ReportConfig, report
from .runtime import atomic_path, read_info, stamp_metadata, write_json

DEFAULT_VARIANTS = ("default",)


@dataclass
class RunConfig:
    out: str
    data: DataConfig
    checkpoint: str | None = None
    onnx: str | None = None
    arch: str = "resnet18-cifar"
    arch_kwargs: dict = field(default_factory=dict)
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    max_drop_pt: float = 1.0  # the recommendation picks the fastest INT8 variant within this drop
    torch_overrides: dict = field(default_factory=dict)  # e.g. qat_epochs, qat_train_limit, device
    auto: object = None  # an AutoConfig: also search for the fastest INT8 within its budget
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self):
        if bool(self.checkpoint) == bool(self.onnx):
            raise ConfigError("give exactly one of --checkpoint (a state_dict) or --onnx (an FP32 ONNX file)")
        self.variants = parse_variants(self.variants)
        for name in self.variants:
            if name in TORCH_VARIANTS:
                torch_config(name, self.torch_overrides)  # bad --qat-* values fail now, not after export


def _fp32_from_checkpoint(cfg: RunConfig, model, calib_x, classes, out: Path, man: Manifest) -> Path:
    path, parity = export(model, out / "fp32.onnx", calib_x[:64], classes, cfg.data.preprocess, cfg.export,
                          meta={"arch": cfg.arch})
    man.note("export", parity=parity.as_dict())
    return path


def _fp32_from_onnx(cfg: RunConfig, classes, out: Path, man: Manifest) -> Path:
    import onnx

    proto = onnx.load(cfg.onnx)
    stamp_metadata(proto, {"variant": "fp32", "classes": classes, "preprocess": cfg.data.preprocess.to_json()})
    dst = out / "fp32.onnx"
    with atomic_path(dst) as tmp:
        onnx.save(proto, str(tmp))
    man.note("export", skipped=f"ONNX given ({Path(cfg.onnx).name})")
    return dst


def _model_outputs(cfg: RunConfig, model) -> int:
    """Number of classes the model predicts, found before any heavy work."""
    if model is not None:
        import torch

        size = cfg.data.preprocess.size
        with torch.no_grad():
            return int(model(torch.zeros(1, 3, size, size)).shape[-1])
    read_info(cfg.onnx)  # a clear error for a missing or corrupt file
    from .runtime import open_session

    dim = open_session(cfg.onnx).get_outputs()[0].shape[-1]
    return int(dim) if isinstance(dim, int) else -1


def _check_head(classes: list[str], n_out: int) -> None:
    if n_out >= 0 and n_out != len(classes):
        raise DataError(f"the model has {n_out} outputs but the data has {len(classes)} classes "
                        f"({', '.join(classes[:5])}...); use data with matching classes or pass --classes")


def _check_writable(out: Path) -> None:
    with atomic_path(out / ".write-test") as tmp:
        tmp.write_text("ok")
    (out / ".write-test").unlink()


def run(cfg: RunConfig, log=print) -> dict:
    """The whole pipeline; returns the report dict (also written as report.json).

    Cheap checks (output writable, checkpoint fits, data found, class count) run before any heavy work.
    """
    t_start = time.perf_counter()
    out = Path(cfg.out)
    _check_writable(out)
    model = None
    if cfg.checkpoint:
        from .models import load_model

        model = load_model(cfg.arch, cfg.checkpoint, arch_kwargs=cfg.arch_kwargs)
    calib, evalset = open_calib_eval(cfg.data)
    _check_head(calib.classes, _model_outputs(cfg, model))
    man = Manifest(out)
    man.input("checkpoint" if cfg.checkpoint else "onnx", cfg.checkpoint or cfg.onnx)
    for name, c in (("data", cfg.data), ("export", cfg.export), ("evaluate", cfg.evaluate), ("bench", cfg.bench)):
        man.config(name, c)
    with man.stage("data"):
        calib_x = calib.load(cfg.data.preprocess, progress=True)
        eval_x = evalset.load(cfg.data.preprocess, progress=True)
    log(f"data: {len(calib)} calibration images ({calib.source}), {len(evalset)} evaluation images ({evalset.source})"
        + (f", skipped {evalset.skipped} non-image files" if evalset.skipped else ""))
    with man.stage("export"):
        fp32 = (_fp32_from_checkpoint(cfg, model, calib_x, calib.classes, out, man) if model is not None
                else _fp32_from_onnx(cfg, calib.classes, out, man))
    log(f"export: {fp32} ({fp32.stat().st_size / 1e6:.1f} MB)")
    variants = [{"name": "fp32", "kind": "fp32", "file": fp32.name, "status": "ok"}]
    ctx = VariantContext(fp32=fp32, out=out, calib_x=calib_x, classes=calib.classes, spec=cfg.data.preprocess,
                         model=model, qat_sets=lambda n, v: open_qat_sets(replace(cfg.data, classes=calib.classes), n, v),
                         torch_overrides=cfg.torch_overrides)
    with man.stage("quantize"):
        for name in cfg.variants:
            variants.append(build_variant(name, ctx, man, log))
    if cfg.auto is not None:
        with man.stage("auto"):
            variants.append(_auto_variant(cfg, fp32, out, man, log))
    with man.stage("evaluate"):
        preds: dict = {}  # variant (or variant@torch) -> top-1 predictions, for paired comparisons
        fp32_logits = _evaluate_all(variants, out, eval_x, evalset.labels, calib.classes, cfg.evaluate, preds, log)
        _evaluate_torch(variants, ctx, eval_x, evalset.labels, fp32_logits, preds, log)
        _qat_vs_ptq(variants, preds, evalset.labels)
    with man.stage("bench"):
        _bench_all(variants, out, eval_x[:256], cfg.bench, ctx, log)
    data = _report_dict(cfg, variants, calib, evalset)
    write_json(out / "report.json", data)
    with man.stage("report"):
        report(out / "report.json", out, cfg.report)
    for v in variants:
        if v["status"] == "ok":
            man.output(out / v["file"])
    for f in ("report.json", "report.md", "report.html"):
        man.output(out / f)
    man.note("total", seconds=round(time.perf_counter() - t_start, 3))
    man.write()
    return data


def _evaluate_all(variants, out: Path, x, labels, classes, cfg: EvalConfig, preds: dict, log):
    ref = None
    for v in variants:
        if v["status"] != "ok":
            continue
        metrics, logits = evaluate(out / v["file"], x, labels, classes, reference=ref, cfg=cfg)
        ref = logits if ref is None else ref
        preds[v["name"]] = logits.argmax(1)
        v["metrics"] = metrics.as_dict()
        agree = "" if metrics.agreement is None else f", agreement {metrics.agreement:.2%}"
        log(f"evaluate {v['name']}: top-1 {metrics.top1:.2%}{agree}")
    return ref


def _evaluate_torch(variants, ctx: VariantContext, x, labels, fp32_logits, preds: dict, log) -> None:
    """PyTorch INT8 models themselves (not only their ONNX exports), on the same images."""
    from .evaluate import metrics_from_logits
    from .quantize.torch_eager import torch_logits

    for v in variants:
        if v["status"] != "ok" or v["name"] not in ctx.torch_models:
            continue
        qmodel, size = ctx.torch_models[v["name"]]
        logits = torch_logits(qmodel, x).numpy()
        m = metrics_from_logits(logits, labels, ctx.classes, fp32_logits)
        preds[v["name"] + "@torch"] = logits.argmax(1)
        v["torch"] = {"metrics": m.as_dict(), "size_bytes": size}
        log(f"evaluate {v['name']} (PyTorch INT8): top-1 {m.top1:.2%}, agreement {m.agreement:.2%}")


def _auto_variant(cfg: RunConfig, fp32: Path, out: Path, man: Manifest, log) -> dict:
    """Accuracy-aware search on a validation split carved from the calibration split."""
    from .quantize.auto import auto_quantize_from

    man.config("auto", cfg.auto)
    rec = auto_quantize_from(fp32, out / "int8_auto.onnx", cfg.data, cfg.auto, log)
    summary = {k: rec.get(k) for k in ("budget_pt", "metric", "met_budget", "chosen", "chosen_drop_pt", "fp32_nodes_kept",
                                       "seconds", "message", "fp32_val_top1")}
    summary["candidates"] = len(rec["candidates"])
    summary["top_sensitive"] = rec["sensitivity"][:5]
    man.note("auto", search=summary)
    if not rec["met_budget"]:
        return {"name": "auto", "kind": "int8", "file": "int8_auto.onnx", "status": "failed",
                "error": rec["message"], "search": summary}
    chosen = next(c for c in rec["candidates"] if c["name"] == rec["chosen"])
    return {"name": "auto", "kind": "int8", "file": "int8_auto.onnx", "status": "ok", "config": chosen["config"],
            "search": summary}


def _qat_vs_ptq(variants, preds: dict, labels) -> None:
    """QAT starts from PTQ: whether it ends better is a paired question on the same images, per runtime."""
    from .evaluate import paired

    qat = next((v for v in variants if v["name"] == "pt-qat" and v["status"] == "ok"), None)
    if qat is None or "pt-ptq" not in preds:
        return
    qat["vs_ptq"] = {rt: paired(preds["pt-qat" + sfx], preds["pt-ptq" + sfx], labels)
                     for rt, sfx in (("onnxruntime", ""), ("torch", "@torch"))
                     if "pt-qat" + sfx in preds and "pt-ptq" + sfx in preds}


def _bench_all(variants, out: Path, sample, cfg: BenchConfig, ctx: VariantContext, log) -> None:
    from .bench import torch_runner

    ok = {v["name"]: v for v in variants if v["status"] == "ok"}
    models = {k: out / v["file"] for k, v in ok.items()}
    for name, (qmodel, size) in ctx.torch_models.items():
        if name in ok:
            models[f"{name}@torch"] = torch_runner(qmodel, size, cfg.threads)
    if ctx.torch_models and ctx.model is not None:
        from .quantize.torch_eager import size_bytes

        models["fp32@torch"] = torch_runner(ctx.model, size_bytes(ctx.model), cfg.threads)
    results = benchmark_many(models, sample, cfg)
    for k, res in results.items():
        name, _, runtime = k.partition("@")
        if runtime:
            target = ok[name]
            target.setdefault("torch", {}).update(bench=res.as_dict(), size_bytes=res.size_bytes)
        else:
            ok[k]["bench"] = res.as_dict()
        log(f"bench {k}: p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms ({res.runtime})")


def recommend(variants: list[dict], max_drop_pt: float, tie: float = 0.05) -> str | None:
    """Fastest INT8 variant whose top-1 drop stays within `max_drop_pt` and which beats FP32.

    Latencies within `tie` (5 %) of the fastest are timing noise on a shared machine: among those,
    the most accurate wins.
    """
    ok = [v for v in variants if v["status"] == "ok" and "bench" in v and "metrics" in v]
    fp32 = next((v for v in ok if v["kind"] == "fp32"), None)
    if fp32 is None:
        return None
    good = [v for v in ok if v["kind"] != "fp32"
            and 100 * (fp32["metrics"]["top1"] - v["metrics"]["top1"]) <= max_drop_pt
            and v["bench"]["p50_ms"] < fp32["bench"]["p50_ms"]]
    if not good:
        return None
    fastest = min(v["bench"]["p50_ms"] for v in good)
    near = [v for v in good if v["bench"]["p50_ms"] <= fastest * (1 + tie)]
    return max(near, key=lambda v: (v["metrics"]["top1"], -v["bench"]["p50_ms"]))["name"]


def _report_dict(cfg: RunConfig, variants, calib, evalset) -> dict:
    first = next((v["bench"] for v in variants if "bench" in v), {})
    return {
        "classes": calib.classes,
        "variants": variants,
        "recommended": recommend(variants, cfg.max_drop_pt),
        "max_drop_pt": cfg.max_drop_pt,
        "data": {"root": cfg.data.root, "calib_source": calib.source, "calib_images": len(calib),
                 "eval_source": evalset.source, "eval_images": len(evalset),
                 "preprocess": cfg.data.preprocess.to_json()},
        "environment": {"cpu": cpu_name(), "threads": first.get("threads"), "runtime": first.get("runtime"),
                        "provider": first.get("provider"), "runs": cfg.bench.runs},
    }
