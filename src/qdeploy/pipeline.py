"""`qdeploy run`: checkpoint (or ONNX) -> FP32 ONNX -> INT8 variants -> evaluate -> bench -> report."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .bench import BenchConfig, benchmark_many, cpu_name
from .data import DataConfig, open_calib_eval
from .errors import ConfigError, DataError, QDeployError
from .evaluate import EvalConfig, evaluate
from .export import ExportConfig, export
from .manifest import Manifest
from .quantize import PRESETS, QuantConfig, preset, quantize
from .report import ReportConfig, report
from .runtime import atomic_path, read_info, stamp_metadata, write_json

DEFAULT_VARIANTS = ("default",)


def known_variants() -> list[str]:
    return list(PRESETS)


def parse_variants(text: str | list[str] | tuple[str, ...]) -> list[str]:
    names = [v.strip() for v in (text.split(",") if isinstance(text, str) else text) if v.strip()]
    if "all" in names:
        return known_variants()
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known_variants())} or 'all'")
    return list(dict.fromkeys(names))


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
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self):
        if bool(self.checkpoint) == bool(self.onnx):
            raise ConfigError("give exactly one of --checkpoint (a state_dict) or --onnx (an FP32 ONNX file)")
        self.variants = parse_variants(self.variants)


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
    with man.stage("quantize"):
        for name in cfg.variants:
            variants.append(_quantize_variant(name, fp32, out, calib_x, man, log))
    with man.stage("evaluate"):
        _evaluate_all(variants, out, eval_x, evalset.labels, calib.classes, cfg.evaluate, log)
    with man.stage("bench"):
        _bench_all(variants, out, eval_x[:256], cfg.bench, log)
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


def _quantize_variant(name: str, fp32: Path, out: Path, calib_x, man: Manifest, log) -> dict:
    qcfg: QuantConfig = preset(name)
    man.config(f"quantize:{name}", qcfg)
    dst = out / f"int8_{name}.onnx"
    t0 = time.perf_counter()
    try:
        _, check = quantize(fp32, dst, qcfg, calib_x)
    except QDeployError as exc:
        log(f"quantize {name}: FAILED: {exc}")
        return {"name": name, "kind": "int8", "file": dst.name, "status": "failed", "error": str(exc),
                "config": qcfg.as_dict()}
    man.note(f"quantize:{name}", seconds=round(time.perf_counter() - t0, 3), check=check.as_dict())
    log(f"quantize {name}: {dst} ({dst.stat().st_size / 1e6:.1f} MB, agreement on calibration images "
        f"{check.agreement:.1%})")
    return {"name": name, "kind": "int8", "file": dst.name, "status": "ok", "config": qcfg.as_dict(),
            "check": check.as_dict()}


def _evaluate_all(variants, out: Path, x, labels, classes, cfg: EvalConfig, log) -> None:
    ref = None
    for v in variants:
        if v["status"] != "ok":
            continue
        metrics, logits = evaluate(out / v["file"], x, labels, classes, reference=ref, cfg=cfg)
        ref = logits if ref is None else ref
        v["metrics"] = metrics.as_dict()
        agree = "" if metrics.agreement is None else f", agreement {metrics.agreement:.2%}"
        log(f"evaluate {v['name']}: top-1 {metrics.top1:.2%}{agree}")


def _bench_all(variants, out: Path, sample, cfg: BenchConfig, log) -> None:
    ok = {v["name"]: v for v in variants if v["status"] == "ok"}
    results = benchmark_many({k: out / v["file"] for k, v in ok.items()}, sample, cfg)
    for k, res in results.items():
        ok[k]["bench"] = res.as_dict()
        log(f"bench {k}: p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms")


def recommend(variants: list[dict], max_drop_pt: float) -> str | None:
    """Fastest INT8 variant whose top-1 drop stays within `max_drop_pt` and which beats FP32."""
    ok = [v for v in variants if v["status"] == "ok" and "bench" in v and "metrics" in v]
    fp32 = next((v for v in ok if v["kind"] == "fp32"), None)
    if fp32 is None:
        return None
    good = [v for v in ok if v["kind"] != "fp32"
            and 100 * (fp32["metrics"]["top1"] - v["metrics"]["top1"]) <= max_drop_pt
            and v["bench"]["p50_ms"] < fp32["bench"]["p50_ms"]]
    return min(good, key=lambda v: v["bench"]["p50_ms"])["name"] if good else None


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
