"""`qdeploy run`: checkpoint (or ONNX) -> FP32 ONNX -> INT8 variants -> evaluate -> bench -> report.

Calibration images are held in memory (bounded by --calib-size); evaluation images are streamed in
bounded batches through every variant at once, so memory is flat in the number of images.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from . import fixed_inputs
from .artifacts import atomic_path, read_info, write_onnx
from .bench import BenchConfig, Runner, benchmark_many, cpu_name, default_batches, session_runner, torch_runner
from .data import DataConfig, ImageSet, open_calib_eval
from .distributed import nodelock, ray_cluster
from .distributed.build import fetched, submit_builds
from .distributed.cluster import RayConfig
from .distributed.evaluate import evaluate_sharded
from .errors import ConfigError, DataError, ModelFileError
from .evaluate import EvalConfig, evaluate_many, sample_key
from .export import ExportConfig, export
from .formats.sessions import cpu_session
from .graph.powerdiff import rewrite, study
from .manifest import Manifest
from .quantize.base import VariantContext, build_variant
from .recipes import TORCH_VARIANTS, AutoConfig, QuantConfig, parse_variants, variant_config
from .report import ReportConfig, report
from .report.plots import image_grid
from .results import (
    Deployment,
    Environment,
    PowerDifferenceStudy,
    RunData,
    RunResult,
    TargetResult,
    TorchResult,
    VariantResult,
    gate_failures,
)
from .source import Source, SourceConfig, resolve_source
from .targets import DEFAULT_TARGET, INSTALLED, check_targets, get_target, open_session
from .targets.ort import cpu_isa
from .tasks import DEFAULT_TASK, Task, get_task
from .tasks.classification import paired
from .tasks.image import psnr, to_uint8

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
    task: str = DEFAULT_TASK   # or image-to-image: outputs judged by PSNR/SSIM against FP32's
    fixed_inputs: list[str] = field(default_factory=list)  # NAME=onehot:K|file.npy|v1,v2,... (extra model inputs)
    min_psnr: float = 30.0          # image-to-image: the recommendation's quality floor (mean dB vs FP32)
    op_types: tuple[str, ...] | None = None  # ORT static variants quantize only these op types (None: presets' own)
    # every ONNX variant also evaluated (on a sample: evaluate.verify_images) and timed on the others; default: every
    # installed online CPU target (ORT, OpenVINO, OpenVINO bf16 where the CPU has it)
    targets: tuple[str, ...] = (INSTALLED,)
    power_difference: bool = False  # seed 003's study: Sub+Pow -> PowerDifference (native / NumPy), FP32 and INT8
    study_images: int = 8           # evaluation images the PowerDifference study compares outputs on
    ray: RayConfig | None = None    # ORT variants built and evaluation sharded on a Ray cluster (distributed/)

    def __post_init__(self):
        self.targets = check_targets(self.targets)
        self.evaluate = replace(self.evaluate, task=self.task)
        self.source = replace(self.source, task=self.task)
        self.variants = parse_variants(self.variants)
        task = self.task_def  # one clear error for an unknown task, before any work
        if not task.has_classes and self.ray is not None:
            raise ConfigError("--ray shards classification evaluation only; an image-to-image model's outputs are "
                              "images, which cost more to ship back than to compute: run it without --ray")
        if not task.has_classes:
            torch_only = [v for v in self.variants if v in TORCH_VARIANTS]
            if torch_only:
                raise ConfigError(f"variants {', '.join(torch_only)} are PyTorch classifier recipes; for "
                                  f"--task {self.task} use ONNX Runtime ones (default, conv-only, a16w8, ...)")
        if self.fixed_inputs and not self.source.onnx:
            raise ConfigError("--fixed-input applies to ONNX models with extra inputs (--onnx); a PyTorch "
                              "architecture takes the image alone")
        # every variant's config is built now: bad --qat-* values fail before any heavy work
        self.configs = {name: variant_config(name, self.torch_overrides) for name in self.variants}
        if self.op_types:

            self.configs = {k: c.with_(op_types=tuple(self.op_types)) if isinstance(c, QuantConfig) else c
                            for k, c in self.configs.items()}
        if self.auto is not None:
            self.configs["auto"] = replace(self.auto, targets=self.targets)

    @property
    def task_def(self) -> Task:
        """The registered Task named by `task` (tasks.TASKS)."""
        return get_task(self.task)


def _fixed(cfg: RunConfig) -> dict:
    """--fixed-input values checked against the ONNX file's inputs (every non-image input needs one)."""

    if not cfg.source.onnx:
        return {}
    info = read_info(cfg.source.onnx)
    s = _ort_session(cfg.source.onnx)
    inputs = {i.name: (i.shape, i.type) for i in s.get_inputs()}
    if not cfg.fixed_inputs and info.fixed_inputs:
        return info.fixed_inputs  # a qdeploy file keeps the values it was made with
    return fixed_inputs.parse(cfg.fixed_inputs, inputs, s.get_inputs()[0].name)


def _ort_session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return cpu_session(str(path), opts)


def _fp32_from_onnx(cfg: RunConfig, src: Source, classes, out: Path, man: Manifest, fixed: dict) -> Path:
    meta = {"variant": "fp32", "classes": classes, "preprocess": src.preprocess.to_json(), "task": cfg.task}
    if fixed:
        meta["fixed_inputs"] = fixed
    dst, _ = write_onnx(cfg.source.onnx, out / "fp32.onnx", meta)
    man.note("export", skipped=f"ONNX given ({Path(cfg.source.onnx).name})", origin=src.origin)
    return dst


def _model_outputs(cfg: RunConfig, model, size: int) -> int:
    """Number of outputs the model predicts, found before any heavy work."""
    if model is not None:
        import torch

        with torch.no_grad():
            return int(model(torch.zeros(1, 3, size, size)).shape[-1])
    s = _ort_session(cfg.source.onnx)
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
    with atomic_path(out / ".write-test") as tmp:
        tmp.write_text("ok")
    (out / ".write-test").unlink()


@dataclass
class _Prepared:
    """What the cheap checks before heavy work found (see _prepare)."""

    src: Source
    model: object            # the FP32 torch model, None when the run starts from ONNX
    data: DataConfig         # the run's data config, with the source's preprocessing and classes
    calib: ImageSet
    evalset: ImageSet
    classes: list[str]       # [] when outputs are images
    fixed: dict              # --fixed-input name -> array


def _prepare(cfg: RunConfig) -> _Prepared:
    """Cheap checks before heavy work: output writable, source resolved, checkpoint fits, data found,
    class count."""
    _check_writable(Path(cfg.out))
    src = resolve_source(cfg.source)
    model = None
    if src.checkpoint is not None:
        from .models import load_model

        model = load_model(src.arch, src.checkpoint, arch_kwargs=src.arch_kwargs, input_size=src.preprocess.size)
    fixed = _fixed(cfg)
    data = replace(cfg.data, preprocess=src.preprocess, classes=src.classes,
                   holdout=cfg.auto.val_size if cfg.auto is not None else 0)
    calib, evalset = open_calib_eval(data)
    if not cfg.task_def.has_classes:
        return _Prepared(src, model, data, calib, evalset, [], fixed)  # outputs are images: no classes to match
    classes = _classes(src, calib, _model_outputs(cfg, model, src.preprocess.size))
    return _Prepared(src, model, replace(data, classes=classes if calib.labelled else data.classes), calib, evalset,
                     classes, fixed)


def run(cfg: RunConfig, log=print) -> RunResult:
    """The whole pipeline; returns the typed result (also written as report.json)."""

    with nodelock.working():   # a sweep's cell shares its machine; its benchmark below takes it alone
        return _run(cfg, log)


def _run(cfg: RunConfig, log) -> RunResult:
    t_start = time.perf_counter()
    out = Path(cfg.out)
    p = _prepare(cfg)
    src, model, data, calib, evalset, classes, fixed = p.src, p.model, p.data, p.calib, p.evalset, p.classes, p.fixed
    log(f"source: {src.arch or Path(cfg.source.onnx).name}; " + ", ".join(f"{k} from {v}" for k, v in src.origin.items())
        + (f"; fixed inputs {fixed_inputs.describe(fixed)}" if fixed else ""))
    man = Manifest(out)
    man.input("checkpoint" if src.checkpoint else "onnx", src.checkpoint or cfg.source.onnx)
    for name, c in (("source", cfg.source), ("data", data), ("export", cfg.export), ("evaluate", cfg.evaluate),
                    ("bench", cfg.bench), ("ray", cfg.ray)):
        if c is not None:
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
                                  meta={"arch": src.arch}, task=cfg.task)
            man.note("export", parity=parity.as_dict(), origin=src.origin)
        else:
            fp32 = _fp32_from_onnx(cfg, src, classes, out, man, fixed)
    log(f"export: {fp32} ({fp32.stat().st_size / 1e6:.1f} MB)")
    variants = [VariantResult(name="fp32", kind="fp32", file=fp32.name)]
    ctx = VariantContext(fp32=fp32, out=out, calib_x=calib_x, classes=classes, spec=data.preprocess, data=data,
                         model=model, targets=cfg.targets)


    with ray_cluster(cfg.ray, log) if cfg.ray else nullcontext(None) as ray:
        with man.stage("quantize"):
            variants += _build_all(cfg, ctx, man, log, ray)
        with man.stage("evaluate"):
            _evaluate(variants, ctx, evalset, cfg.evaluate, log, ray, cfg.ray)
    if not cfg.task_def.has_classes:   # outputs are images: FP32 and INT8 side by side
        with man.stage("grids"):
            _image_grids(variants, ctx, evalset, out, cfg.evaluate.threads)
    with man.stage("bench"):

        most = max(cfg.bench.batch_sizes or default_batches(data.preprocess.side))
        sample = evalset.subset(range(min(most, len(evalset)))).load(data.preprocess)
        with nodelock.timing() as facts:
            _bench_all(variants, out, sample, cfg.bench, ctx, log)
        man.note("bench", **facts)
        if facts["exclusive"]:
            log(f"bench: had {facts['node']} to itself (waited {facts['waited_s']:.1f}s for other work to finish)")
    result = _result(cfg, variants, calib, evalset, classes, data.preprocess)
    if cfg.power_difference:
        with man.stage("power-difference"):
            result.power_difference = _power_difference(cfg, variants, evalset, data, out, log)
    result.save(out / "report.json")
    with man.stage("report"):
        report(out / "report.json", out, cfg.report)
    _finish_manifest(man, out, variants, t_start)
    return result


GRID_IMAGES = 2  # the first evaluation images in each grid, plus the variant's worst image


def _image_grids(variants, ctx: VariantContext, evalset: ImageSet, out: Path, threads) -> None:
    """Per INT8 variant: input | FP32 | INT8 | error heat map on a few evaluation images, its worst one included
    (recomputed here for those images only: evaluation keeps no outputs)."""

    ref = open_session(out / "fp32.onnx", threads).run
    for v in variants:
        if v.kind == "fp32" or not v.ok or v.metrics is None or v.metrics.worst is None:
            continue
        idx = list(dict.fromkeys(list(range(min(GRID_IMAGES, len(evalset)))) + [v.metrics.worst]))
        sub = evalset.subset(idx)
        pix = sub.pixels_uint8(ctx.spec)
        x = ctx.spec.normalize(pix)
        run = open_session(out / v.file, threads, target=v.target).run
        rows = []
        for i, k in enumerate(idx):
            f, q = ref(x[i:i + 1])[0], run(x[i:i + 1])[0]
            name = sub.paths[i].name if sub.paths is not None else str(k)
            rows.append({"name": name + (" (worst)" if k == v.metrics.worst else ""), "input": pix[i],
                         "fp32": to_uint8(f), "int8": to_uint8(q), "psnr": psnr(f, q)})
        image_grid(rows, f"{v.name}: input | FP32 | INT8 | error", out / "plots" / f"grid_{v.name}.png")


def _power_difference(cfg: RunConfig, variants, evalset: ImageSet, data, out: Path, log) -> PowerDifferenceStudy:
    """Seed 003's comparison on the FP32 file and the best-PSNR INT8 variant that still has its Sub->Pow pairs."""


    def keeps_pairs(v):
        return rewrite(onnx.load(str(out / v.file)))[1] > 0

    int8 = [v for v in variants if v.kind == "int8" and v.measured and getattr(v.metrics, "psnr_mean", None)
            and v.file.endswith(".onnx")]
    int8 = [v for v in sorted(int8, key=lambda v: -v.metrics.psnr_mean) if keeps_pairs(v)][:1]
    images = evalset.subset(range(min(cfg.study_images, len(evalset)))).load(data.preprocess)
    rec = study(out / "fp32.onnx", out / int8[0].file if int8 else None, images, out,
                runs=max(10, min(cfg.bench.runs, 30)), threads=cfg.bench.threads, log=log)
    rec.int8_variant = int8[0].name if int8 else None
    return rec


def _finish_manifest(man: Manifest, out: Path, variants, t_start: float) -> None:
    for v in variants:
        if v.ok:
            man.output(out / v.file)
    for f in ("report.json", "report.md", "report.html"):
        man.output(out / f)
    man.note("total", seconds=round(time.perf_counter() - t_start, 3))
    man.write()


def _runners(variants, ctx: VariantContext, threads, files: dict | None = None, log=print) -> dict:
    """name -> batch function: every ONNX variant (FP32 first, the reference) and every PyTorch INT8 model.
    `files`, when given, receives name -> (model file, target) for the runners that are model files."""

    files = {} if files is None else files
    fns = {v.name: open_session(ctx.out / v.file, threads, target=v.target).run for v in variants if v.ok}
    files.update({v.name: (ctx.out / v.file, v.target) for v in variants if v.ok})
    for v in variants:
        for target, s in _other_sessions(ctx, v, threads, log):
            fns[f"{v.name}@{target}"] = s.run
            files[f"{v.name}@{target}"] = (ctx.out / v.file, target)
    for name, (qmodel, _) in ctx.torch_models.items():
        if name in fns:
            from .models.logits import torch_logits

            fns[f"{name}@torch"] = lambda x, m=qmodel: torch_logits(m, x).numpy()
    return fns


def _build_all(cfg: RunConfig, ctx: VariantContext, man, log, ray) -> list[VariantResult]:
    """Every configured variant; with Ray, the ONNX Runtime recipes build on the cluster while the rest (PyTorch,
    auto, nncf) build here."""
    refs = {}
    if ray is not None:

        refs = submit_builds(ray, cfg.configs, ctx, cfg.ray)
        if refs:
            log(f"quantize on ray: {', '.join(refs)}")
    return [build_variant(name, qcfg, ctx, man, log, handler=fetched(ray, refs[name], log) if name in refs else None)
            for name, qcfg in cfg.configs.items()]


def _evaluate(variants, ctx: VariantContext, evalset: ImageSet, cfg: EvalConfig, log, ray=None, rcfg=None) -> None:
    files: dict = {}
    runners = _runners(variants, ctx, cfg.threads, files, log)
    # a variant's file on another target is the same graph on another runtime: verified on a sample of the set
    # (EvalConfig.verify_images) beside FP32's outputs on the same images; on Ray every file sees the whole set
    others = [k for k in runners if k.partition("@")[2] in ctx.targets]
    if ray is None:
        scorers = evaluate_many(runners, evalset, ctx.spec, ctx.classes, cfg, sampled=others)
    else:
        scorers = _evaluate_on_ray(runners, files, ctx, evalset, cfg, log, ray, rcfg)
    by_name, task = {v.name: v for v in variants}, get_task(cfg.task)
    sample_ref = scorers.pop(sample_key(next(iter(runners))), None)
    reference = sample_ref.result() if sample_ref is not None else None
    if reference is not None and others and reference.n < len(evalset):
        log(f"evaluate on {', '.join(t for t in ctx.targets if t != DEFAULT_TARGET)}: {reference.n} of {len(evalset)} "
            "images (a stratified sample; --verify-images), beside FP32 on the same images")
    for key, scorer in scorers.items():
        name, _, runtime = key.partition("@")
        m = scorer.result()
        if runtime in ctx.targets:
            by_name[name].on[runtime].metrics = m
            by_name[name].on[runtime].reference = reference
        elif runtime:
            by_name[name].torch = TorchResult(metrics=m, size_bytes=ctx.torch_models[name][1])
        else:
            by_name[name].metrics = m
        log(f"evaluate {key}: {task.describe(m)}")
    _qat_vs_ptq(by_name, scorers)


def _evaluate_on_ray(runners: dict, files: dict, ctx: VariantContext, evalset: ImageSet, cfg: EvalConfig, log,
                     ray, rcfg):
    """Model files sharded over Ray; what is not a file (PyTorch models) streams locally beside the FP32 file, as
    its reference. Same scorers, same order as evaluate_many: the metrics equal a local run's."""

    t0 = time.perf_counter()
    scorers = evaluate_sharded(files, evalset, ctx.spec, ctx.classes, cfg, rcfg, ray, progress=cfg.progress)
    log(f"evaluate on ray: {len(files)} model file(s) x {len(evalset)} images in "
        f"{time.perf_counter() - t0:.1f}s ({len(evalset) * len(files) / (time.perf_counter() - t0):.0f} "
        "image-inferences/s)")
    local = [k for k in runners if k not in files]
    if local:
        first = next(iter(runners))
        mine = evaluate_many({first: runners[first], **{k: runners[k] for k in local}}, evalset, ctx.spec,
                             ctx.classes, cfg)
        scorers.update({k: mine[k] for k in local})
    return {k: scorers[k] for k in runners}


def _qat_vs_ptq(by_name: dict, scorers: dict) -> None:
    """QAT starts from PTQ: whether it ends better is a paired question on the same images, per runtime."""

    qat = by_name.get("pt-qat")
    labels = scorers["pt-ptq"].seen_labels() if "pt-ptq" in scorers else None
    if qat is None or not qat.ok or labels is None:
        return
    qat.facts.vs_ptq = {rt: paired(scorers["pt-qat" + sfx].predictions(), scorers["pt-ptq" + sfx].predictions(), labels)
                        for rt, sfx in (("onnxruntime", ""), ("torch", "@torch"))
                        if "pt-qat" + sfx in scorers and "pt-ptq" + sfx in scorers}


def _other_targets(ctx: VariantContext, v: VariantResult) -> list[str]:
    """The run's other targets an ONNX variant is also evaluated and timed on (a file in another runtime's own
    format, the nncf variant's IR, runs on its target only)."""
    if not v.ok or v.target != DEFAULT_TARGET:
        return []
    return [t for t in ctx.targets if t != DEFAULT_TARGET]


def _other_sessions(ctx: VariantContext, v: VariantResult, threads, log=print):
    """(target, session) for each other target of the run that can open the variant's file; one that cannot (OpenVINO
    and a QOperator or dynamic graph) is recorded as unsupported there, once, and the run goes on without it."""
    for target in _other_targets(ctx, v):
        if target in v.on and v.on[target].unsupported:
            continue
        try:
            yield target, _open_timed(ctx, v, target, threads)
        except ModelFileError as exc:
            v.on[target] = TargetResult(target=target, unsupported=str(exc))
            log(f"{v.name} on {target}: not run ({exc})")


def _open_timed(ctx: VariantContext, v: VariantResult, target: str, threads):
    """Open a variant's file on another target, recording load time and the cold first inference once."""

    t0 = time.perf_counter()
    s = open_session(ctx.out / v.file, threads, target=target)
    load = time.perf_counter() - t0
    if target not in v.on:
        x = np.zeros((1, 3, *ctx.spec.shape), np.float32)
        t0 = time.perf_counter()
        s.run(x)
        v.on[target] = TargetResult(target=target, load_s=load, first_ms=(time.perf_counter() - t0) * 1e3,
                                    runtime=s.runtime)
    return s


def _bench_all(variants, out: Path, sample, cfg: BenchConfig, ctx: VariantContext, log) -> None:
    ok = {v.name: v for v in variants if v.ok}
    models = {k: out / v.file if v.target == DEFAULT_TARGET else session_runner(out / v.file, cfg.threads, target=v.target)
              for k, v in ok.items()}
    for name, (qmodel, size) in ctx.torch_models.items():
        if name in ok:
            models[f"{name}@torch"] = torch_runner(qmodel, size, cfg.threads)
    if ctx.torch_models and ctx.model is not None:
        from .quantize.torch_eager import size_bytes

        models["fp32@torch"] = torch_runner(ctx.model, size_bytes(ctx.model), cfg.threads)
        ok["fp32"].torch = TorchResult(size_bytes=models["fp32@torch"].size_bytes)
    for name, v in ok.items():
        for target, s in _other_sessions(ctx, v, cfg.threads, log):
            models[f"{name}@{target}"] = Runner(fn=s.run, size_bytes=(out / v.file).stat().st_size,
                                                runtime=s.runtime, provider=s.provider, threads=s.threads)
    for k, res in benchmark_many(models, sample, cfg).items():
        name, _, runtime = k.partition("@")
        if runtime in ctx.targets:
            ok[name].on[runtime].bench = res
        elif runtime:
            ok[name].torch.bench = res
        else:
            ok[k].bench = res
        log(f"bench {k}: p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms ({res.runtime})")


@dataclass
class _Option:
    """One deployable (variant, target) pair the recommendation weighs: a variant's own row or its run on
    another target of the run (e.g. qdeploy's QDQ file executed by OpenVINO)."""

    label: str          # "default", or "conv-inputs@openvino-cpu"
    kind: str
    metrics: object
    bench: object
    deployment: Deployment
    reference: object = None   # FP32's metrics on the same images, when the option was verified on a sample


def _kind_on(kind: str, target: str) -> str:
    """What a variant is when it runs on `target`: the FP32 file on a reduced-float target (bf16) is a deployment of
    that precision, a candidate like the INT8 files; anything else stays what it is."""
    reduced = get_target(target).reduced_float
    return reduced if kind == "fp32" and reduced else kind


def _options(variants: list[VariantResult]) -> list[_Option]:
    out = []
    for v in variants:
        if v.measured:
            out.append(_Option(v.name, v.kind, v.metrics, v.bench, Deployment(v.name, v.target, v.file, v.name)))
            out += [_Option(f"{v.name}@{t}", _kind_on(v.kind, t), r.metrics, r.bench,
                            Deployment(v.name, t, v.file, f"{v.name}@{t}"), r.reference)
                    for t, r in v.on.items() if r.metrics is not None and r.bench is not None]
    return out


def _pick(good: list[_Option], key, tie: float) -> Deployment | None:
    if not good:
        return None
    fastest = min(o.bench.p50_ms for o in good)
    return max((o for o in good if o.bench.p50_ms <= fastest * (1 + tie)), key=key).deployment


def recommend(variants: list[VariantResult], gate: float, task: Task | None = None,
              tie: float = 0.05) -> Deployment | None:
    """Fastest INT8 or reduced-float (variant, target) that the task accepts within `gate` of FP32 (a classifier: top-1 drop, or
    without labels disagreement, in points; image-to-image: mean PSNR in dB) and which beats ONNX Runtime's FP32.
    Latencies within `tie` (5 %) of the fastest are timing noise on a shared machine: among those, the task's
    rank_key wins (the least top-1 lost against FP32 on the same images, the highest PSNR). A target verified on a
    sample is gated and ranked against FP32 on that sample (TargetResult.reference)."""
    task = task or get_task()
    opts = _options(variants)
    fp32 = next((o for o in opts if o.label == "fp32"), None)
    if fp32 is None:
        return None
    failed = gate_failures(variants, task, gate, getattr(fp32.metrics, "top1", None) is not None)
    good = [o for o in opts if o.kind != "fp32" and (o.deployment.variant, o.deployment.target) not in failed
            and o.bench.p50_ms < fp32.bench.p50_ms]
    return _pick(good, lambda o: task.rank_key(o.metrics, o.reference or fp32.metrics, o.bench.p50_ms), tie)


def _result(cfg: RunConfig, variants, calib, evalset, classes, spec) -> RunResult:
    first = next((v.bench for v in variants if v.bench is not None), None)
    task = cfg.task_def
    return RunResult(
        variants=variants, classes=classes, task=cfg.task,
        recommended=recommend(variants, task.gate(cfg.max_drop_pt, cfg.min_psnr), task),
        max_drop_pt=cfg.max_drop_pt, min_psnr=None if task.has_classes else cfg.min_psnr,
        data=RunData(root=cfg.data.root, calib_source=calib.source, calib_images=len(calib),
                     eval_source=evalset.source, eval_images=len(evalset), labelled=evalset.labelled,
                     preprocess=spec.to_json()),
        environment=Environment(cpu=cpu_name(), isa=cpu_isa(), threads=first.threads if first else None,
                                runtime=first.runtime if first else None,
                                provider=first.provider if first else None, runs=cfg.bench.runs))

