"""`qdeploy run`: checkpoint (or ONNX) -> FP32 ONNX -> INT8 variants -> evaluate -> bench -> report.

Calibration images are held in memory (bounded by --calib-size); evaluation images are streamed in
bounded batches through every variant at once, so memory is flat in the number of images.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .bench import BenchConfig, benchmark_many, cpu_name
from .data import DataConfig, ImageSet, open_calib_eval
from .errors import DataError
from .evaluate import EvalConfig, evaluate_many
from .export import ExportConfig, export
from .manifest import Manifest
from .quantize.base import VariantContext, build_variant
from .quantize.config import AutoConfig, parse_variants, variant_config
from .report import ReportConfig, report
from .results import RunResult, TorchResult, VariantResult
from .source import Source, SourceConfig, resolve_source

DEFAULT_VARIANTS = ("default",)


@dataclass
class RunConfig:
    out: str
    data: DataConfig
    source: SourceConfig
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    max_drop_pt: float = 1.0  # the recommendation picks the fastest INT8 variant within this drop
    torch_overrides: dict = field(default_factory=dict)  # e.g. qat_epochs, qat_train_limit, device
    auto: AutoConfig | None = None  # also search for the fastest INT8 within its budget
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self):
        self.variants = parse_variants(self.variants)
        # every variant's config is built now: bad --qat-* values fail before any heavy work
        self.configs = {name: variant_config(name, self.torch_overrides) for name in self.variants}
        if self.auto is not None:
            self.configs["auto"] = self.auto


def _fp32_from_onnx(cfg: RunConfig, src: Source, classes, out: Path, man: Manifest) -> Path:
    from .artifacts import write_onnx

    meta = {"variant": "fp32", "classes": classes, "preprocess": src.preprocess.to_json()}
    dst, _ = write_onnx(cfg.source.onnx, out / "fp32.onnx", meta)
    man.note("export", skipped=f"ONNX given ({Path(cfg.source.onnx).name})", origin=src.origin)
    return dst


def _model_outputs(cfg: RunConfig, model, size: int) -> int:
    """Number of outputs the model predicts, found before any heavy work."""
    if model is not None:
        import torch

        with torch.no_grad():
            return int(model(torch.zeros(1, 3, size, size)).shape[-1])
    from .targets import open_session

    s = open_session(cfg.source.onnx).info["ort_session"]
    dim = s.get_outputs()[0].shape[-1]
    return int(dim) if isinstance(dim, int) else -1


def _classes(src: Source, calib: ImageSet, n_out: int) -> list[str]:
    """Labelled data names the classes (in the model's order, checked); label-free data takes them from
    the model's metadata/record/flags, else numbers them."""
    classes = calib.classes if calib.labelled else (src.classes or [str(i) for i in range(max(n_out, 0))])
    if n_out >= 0 and n_out != len(classes):
        raise DataError(f"the model has {n_out} outputs but {'the data has' if calib.labelled else 'there are'} "
                        f"{len(classes)} classes ({', '.join(classes[:5])}...); use data with matching classes "
                        "or pass --classes/--classes-file")
    return classes


def _check_writable(out: Path) -> None:
    from .artifacts import atomic_path

    with atomic_path(out / ".write-test") as tmp:
        tmp.write_text("ok")
    (out / ".write-test").unlink()


def _prepare(cfg: RunConfig):
    """Cheap checks before heavy work: output writable, source resolved, checkpoint fits, data found,
    class count. Returns (source, torch model or None, data config, calib, eval, classes)."""
    _check_writable(Path(cfg.out))
    src = resolve_source(cfg.source)
    model = None
    if src.checkpoint is not None:
        from .models import load_model

        model = load_model(src.arch, src.checkpoint, arch_kwargs=src.arch_kwargs)
    data = replace(cfg.data, preprocess=src.preprocess, classes=src.classes)
    calib, evalset = open_calib_eval(data)
    classes = _classes(src, calib, _model_outputs(cfg, model, src.preprocess.size))
    return src, model, replace(data, classes=classes if calib.labelled else data.classes), calib, evalset, classes


def run(cfg: RunConfig, log=print) -> RunResult:
    """The whole pipeline; returns the typed result (also written as report.json)."""
    t_start = time.perf_counter()
    out = Path(cfg.out)
    src, model, data, calib, evalset, classes = _prepare(cfg)
    log(f"source: {src.arch or Path(cfg.source.onnx).name}; " + ", ".join(f"{k} from {v}" for k, v in src.origin.items()))
    man = Manifest(out)
    man.input("checkpoint" if src.checkpoint else "onnx", src.checkpoint or cfg.source.onnx)
    for name, c in (("source", cfg.source), ("data", data), ("export", cfg.export), ("evaluate", cfg.evaluate),
                    ("bench", cfg.bench)):
        man.config(name, c)
    man.note("source", origin=src.origin, record=str(src.record) if src.record else None)
    with man.stage("data"):
        calib_x = calib.load(data.preprocess, progress=True)
    log(f"data: {len(calib)} calibration images ({calib.source}), {len(evalset)} evaluation images ({evalset.source}"
        f"{'' if evalset.labelled else ', no labels: scored against FP32'})"
        + (f", skipped {evalset.skipped} non-image files" if evalset.skipped else ""))
    with man.stage("export"):
        if model is not None:
            fp32, parity = export(model, out / "fp32.onnx", calib_x[:64], classes, data.preprocess, cfg.export,
                                  meta={"arch": src.arch})
            man.note("export", parity=parity.as_dict(), origin=src.origin)
        else:
            fp32 = _fp32_from_onnx(cfg, src, classes, out, man)
    log(f"export: {fp32} ({fp32.stat().st_size / 1e6:.1f} MB)")
    variants = [VariantResult(name="fp32", kind="fp32", file=fp32.name)]
    ctx = VariantContext(fp32=fp32, out=out, calib_x=calib_x, classes=classes, spec=data.preprocess, data=data,
                         model=model)
    with man.stage("quantize"):
        variants += [build_variant(name, qcfg, ctx, man, log) for name, qcfg in cfg.configs.items()]
    with man.stage("evaluate"):
        _evaluate(variants, ctx, evalset, cfg.evaluate, log)
    with man.stage("bench"):
        sample = evalset.subset(range(min(256, len(evalset)))).load(data.preprocess)
        _bench_all(variants, out, sample, cfg.bench, ctx, log)
    result = _result(cfg, variants, calib, evalset, classes, data.preprocess)
    result.save(out / "report.json")
    with man.stage("report"):
        report(out / "report.json", out, cfg.report)
    _finish_manifest(man, out, variants, t_start)
    return result


def _finish_manifest(man: Manifest, out: Path, variants, t_start: float) -> None:
    for v in variants:
        if v.ok:
            man.output(out / v.file)
    for f in ("report.json", "report.md", "report.html"):
        man.output(out / f)
    man.note("total", seconds=round(time.perf_counter() - t_start, 3))
    man.write()


def _runners(variants, ctx: VariantContext, threads) -> dict:
    """name -> batch function: every ONNX variant (FP32 first, the reference) and every PyTorch INT8 model."""
    from .targets import open_session

    fns = {v.name: open_session(ctx.out / v.file, threads).run for v in variants if v.ok}
    for name, (qmodel, _) in ctx.torch_models.items():
        if name in fns:
            from .quantize.torch_eager import torch_logits

            fns[f"{name}@torch"] = lambda x, m=qmodel: torch_logits(m, x).numpy()
    return fns


def _evaluate(variants, ctx: VariantContext, evalset: ImageSet, cfg: EvalConfig, log) -> None:
    scorers = evaluate_many(_runners(variants, ctx, cfg.threads), evalset, ctx.spec, ctx.classes, cfg)
    by_name = {v.name: v for v in variants}
    for key, scorer in scorers.items():
        name, _, runtime = key.partition("@")
        m = scorer.result()
        if runtime:
            by_name[name].torch = TorchResult(metrics=m, size_bytes=ctx.torch_models[name][1])
        else:
            by_name[name].metrics = m
        acc = "" if m.top1 is None else f"top-1 {m.top1:.2%}"
        agree = "" if m.agreement is None else f", agreement {m.agreement:.2%}"
        log(f"evaluate {key}: {acc or 'no labels'}{agree}")
    _qat_vs_ptq(by_name, scorers)


def _qat_vs_ptq(by_name: dict, scorers: dict) -> None:
    """QAT starts from PTQ: whether it ends better is a paired question on the same images, per runtime."""
    from .tasks.classification import paired

    qat = by_name.get("pt-qat")
    labels = scorers["pt-ptq"].seen_labels() if "pt-ptq" in scorers else None
    if qat is None or not qat.ok or labels is None:
        return
    qat.extra["vs_ptq"] = {rt: paired(scorers["pt-qat" + sfx].predictions(), scorers["pt-ptq" + sfx].predictions(),
                                      labels)
                           for rt, sfx in (("onnxruntime", ""), ("torch", "@torch"))
                           if "pt-qat" + sfx in scorers and "pt-ptq" + sfx in scorers}


def _bench_all(variants, out: Path, sample, cfg: BenchConfig, ctx: VariantContext, log) -> None:
    from .bench import torch_runner

    ok = {v.name: v for v in variants if v.ok}
    models = {k: out / v.file for k, v in ok.items()}
    for name, (qmodel, size) in ctx.torch_models.items():
        if name in ok:
            models[f"{name}@torch"] = torch_runner(qmodel, size, cfg.threads)
    if ctx.torch_models and ctx.model is not None:
        from .quantize.torch_eager import size_bytes

        models["fp32@torch"] = torch_runner(ctx.model, size_bytes(ctx.model), cfg.threads)
        ok["fp32"].torch = TorchResult(size_bytes=models["fp32@torch"].size_bytes)
    for k, res in benchmark_many(models, sample, cfg).items():
        name, _, runtime = k.partition("@")
        if runtime:
            ok[name].torch.bench = res
        else:
            ok[k].bench = res
        log(f"bench {k}: p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms ({res.runtime})")


def _score(v: VariantResult) -> float:
    """Top-1 where there are labels, else agreement with FP32 (FP32 itself: 1)."""
    m = v.metrics
    if m.top1 is not None:
        return m.top1
    return 1.0 if m.agreement is None else m.agreement


def recommend(variants: list[VariantResult], max_drop_pt: float, tie: float = 0.05) -> str | None:
    """Fastest INT8 variant whose top-1 drop (or, without labels, disagreement with FP32) stays within
    `max_drop_pt` and which beats FP32. Latencies within `tie` (5 %) of the fastest are timing noise on
    a shared machine: among those, the most accurate wins."""
    ok = [v for v in variants if v.measured]
    fp32 = next((v for v in ok if v.kind == "fp32"), None)
    if fp32 is None:
        return None
    good = [v for v in ok if v.kind != "fp32" and 100 * (_score(fp32) - _score(v)) <= max_drop_pt
            and v.bench.p50_ms < fp32.bench.p50_ms]
    if not good:
        return None
    fastest = min(v.bench.p50_ms for v in good)
    near = [v for v in good if v.bench.p50_ms <= fastest * (1 + tie)]
    return max(near, key=lambda v: (_score(v), -v.bench.p50_ms)).name


def _result(cfg: RunConfig, variants, calib, evalset, classes, spec) -> RunResult:
    first = next((v.bench for v in variants if v.bench is not None), None)
    return RunResult(
        variants=variants, classes=classes, task=cfg.evaluate.task, recommended=recommend(variants, cfg.max_drop_pt),
        max_drop_pt=cfg.max_drop_pt,
        data={"root": cfg.data.root, "calib_source": calib.source, "calib_images": len(calib),
              "eval_source": evalset.source, "eval_images": len(evalset), "labelled": evalset.labelled,
              "preprocess": spec.to_json()},
        environment={"cpu": cpu_name(), "threads": first.threads if first else None,
                     "runtime": first.runtime if first else None, "provider": first.provider if first else None,
                     "runs": cfg.bench.runs})

