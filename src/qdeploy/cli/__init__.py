"""Thin typer CLI: one command per library verb. Options are shared typed aliases (options.py); heavy imports
happen inside the commands."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ..app.config import ServeConfig, resolve_auth
from ..artifacts import read_info, write_json
from ..bench import BenchConfig, benchmark_many, session_runner
from ..bundle import BundleConfig, bundle_run
from ..bundle.verify import verify_bundle
from ..bundled import bundled_run_dir
from ..compile import CompileConfig, compile_run, table
from ..data import DataConfig, balanced_indices, open_calib, open_split
from ..distributed import RayConfig
from ..distributed.sweep import load_sweep, run_sweep
from ..errors import QDeployError, missing_extra
from ..evaluate import DEFAULT_VERIFY_IMAGES, EvalConfig, evaluate
from ..export import ExportConfig, export
from ..pipeline import DEFAULT_VARIANTS, RunConfig
from ..pipeline import run as run_pipeline
from ..quantize import preset as get_preset
from ..quantize import quantize
from ..quantize.auto import auto_quantize_from
from ..report import markdown_table, report
from ..source import SourceConfig, resolve_source
from ..targets import INSTALLED, OPENVINO_CPU, check_targets, target_for
from ..tasks import get_task
from . import options as o
from .options import default

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="qdeploy: checkpoint -> verified FP32 ONNX -> fast INT8 -> evaluated, benchmarked report.")
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _state["debug"] = debug


@app.command()
def run(
    checkpoint: o.Checkpoint = None, onnx: o.Onnx = None, pretrained: o.Pretrained = None, arch: o.Arch = None,
    arch_kwargs: o.ArchKwargs = "",
    out: Path = typer.Option(Path("runs/r18"), help="Output directory."),
    variants: str = typer.Option(",".join(DEFAULT_VARIANTS), help="Comma list of INT8 variants, or 'all'."),
    max_drop: o.MaxDrop = None, max_rel_drop: o.MaxRelDrop = None, auto: o.Auto = False,
    val_size: o.ValSize = o.VAL_SIZE, auto_methods: o.AutoMethods = None,
    auto_fallback_steps: o.AutoFallbackSteps = None,
    bench_runs: o.BenchRuns = o.BENCH_RUNS, bench_batches: o.BenchBatches = None,
    bench_seconds: o.BenchSeconds = o.BENCH_SECONDS, threads: o.Threads = None,
    qat_epochs: o.QatEpochs = None, qat_train_limit: o.QatTrainLimit = None, qat_val_size: o.QatValSize = None,
    qat_init: o.QatInit = None, device: o.Device = o.DEVICE, qat_from: o.QatFrom = None,
    task: o.Task = default(RunConfig, "task"), fixed_input: o.FixedInput = None, min_psnr: o.MinPsnr = None,
    min_ssim: o.MinSsim = None, min_worst_psnr: o.MinWorstPsnr = None, op_types: o.OpTypes = None,
    targets: o.Targets = INSTALLED, verify_images: o.VerifyImages = DEFAULT_VERIFY_IMAGES,
    power_difference: o.PowerDifference = False,
    ray: o.Ray = False, ray_address: o.RayAddress = None, ray_cpus: o.RayCpus = None,
    data: o.Data = None, calib_split: o.CalibSplit = o.CALIB_SPLIT, eval_split: o.EvalSplit = o.EVAL_SPLIT,
    calib_size: o.CalibSize = o.CALIB_SIZE, eval_limit: o.EvalLimit = None, classes: o.Classes = None,
    classes_file: o.ClassesFile = None, size: o.Size = None, mean: o.Mean = None, std: o.Std = None,
    resize: o.Resize = None, norm: o.Norm = None, override_preprocess: o.Override = False,
):
    """The whole pipeline: export, calibrate, quantize, evaluate, bench, report."""
    spec, names = o.spec_flags(size, mean, std, resize, norm), o.class_names(classes, classes_file)
    auto_cfg = _budget(task, auto, max_drop, max_rel_drop, min_psnr, min_worst_psnr, min_ssim, val_size, auto_methods,
                       auto_fallback_steps)
    cfg = RunConfig(out=str(out), data=DataConfig(root=str(o.data_root(data)), calib_split=calib_split,
                                                  eval_split=eval_split, calib_size=calib_size, eval_limit=eval_limit,
                                                  classes=names),
                    source=o.source_cfg(checkpoint, onnx, pretrained, arch, arch_kwargs, spec, names,
                                        override_preprocess),
                    variants=variants,
                    max_drop_pt=max_drop if max_drop is not None else default(RunConfig, "max_drop_pt"),
                    auto=auto_cfg, task=task, fixed_inputs=list(fixed_input or []), power_difference=power_difference,
                    targets=o.names(targets),
                    min_psnr=min_psnr if min_psnr is not None else default(RunConfig, "min_psnr"),
                    op_types=o.names(op_types) or None,
                    evaluate=EvalConfig(threads=threads, verify_images=verify_images),
                    ray=o.ray_cfg(ray, ray_address, ray_cpus),
                    torch_overrides=dict(qat_epochs=qat_epochs, device=device, qat_train_limit=qat_train_limit,
                                         qat_val_size=qat_val_size, qat_init=qat_init,
                                         qat_from=str(qat_from) if qat_from else None),
                    bench=BenchConfig(runs=bench_runs, threads=threads, max_seconds=bench_seconds,
                                      batch_sizes=o.ints(bench_batches, "bench-batches") if bench_batches else None))
    result = run_pipeline(cfg, log=lambda m: typer.echo(m, err=True))
    for (variant, target), why in result.gate_failures().items():
        typer.echo(f"warning: {variant} on {target} FAILED the gate ({why}); never recommended or bundled there",
                   err=True)
    dep = result.recommended
    rec = (f"{dep}: deploy {out / dep.file} with the {dep.target} runtime" if dep else
           "none (no faster deployment within the budget: ship FP32)")
    typer.echo(markdown_table(result) + f"\n\nrecommended: {rec}\nreport: {out / 'report.html'}")


def _budget(task, auto, max_drop, max_rel_drop, min_psnr, min_worst_psnr, min_ssim, val_size, methods, steps):
    """The --auto search's config (None without --auto), after refusing the other task's budget flags."""
    image = not get_task(task).has_classes
    if image and (max_drop is not None or max_rel_drop is not None):
        raise QDeployError("--max-drop/--max-rel-drop are top-1 budgets; an image-to-image run takes --min-psnr")
    if not image and (min_psnr is not None or min_worst_psnr is not None or min_ssim is not None):
        raise QDeployError("--min-psnr/--min-worst-psnr/--min-ssim judge image outputs; add --task image-to-image")
    if not auto:
        return None
    if image:
        return o.image_auto_cfg(min_psnr, min_worst_psnr, val_size, methods, min_ssim)
    return o.auto_cfg(max_drop, max_rel_drop, val_size, methods, steps)


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Option(..., help="state_dict file."),
    out: Path = typer.Option(Path("fp32.onnx"), help="Output ONNX file."),
    arch: o.Arch = None, arch_kwargs: o.ArchKwargs = "",
    opset: int = typer.Option(default(ExportConfig, "opset")),
    atol: float = typer.Option(default(ExportConfig, "atol"), help="Max |torch - onnx| logit difference."),
    data: o.Data = None, calib_split: o.CalibSplit = o.CALIB_SPLIT, classes: o.Classes = None,
    classes_file: o.ClassesFile = None, size: o.Size = None, mean: o.Mean = None,
    std: o.Std = None, resize: o.Resize = None, norm: o.Norm = None,
    override_preprocess: o.Override = False,
):
    """PyTorch checkpoint -> FP32 ONNX, verified against PyTorch on 64 real images."""
    from ..models import load_model

    src = resolve_source(SourceConfig(checkpoint=str(checkpoint), arch=arch, arch_kwargs=o.json_kwargs(arch_kwargs),
                                      preprocess=o.spec_flags(size, mean, std, resize, norm),
                                      classes=o.class_names(classes, classes_file),
                                      override_preprocess=override_preprocess))
    images = open_split(o.data_root(data), calib_split or None, src.classes)
    x = images.subset(balanced_indices(images.labels, 64, size=len(images))).load(src.preprocess)
    model = load_model(src.arch, checkpoint, arch_kwargs=src.arch_kwargs, input_size=src.preprocess.size)
    names = images.classes if images.labelled else src.classes
    path, parity = export(model, out, x, names, src.preprocess, ExportConfig(opset=opset, atol=atol),
                          meta={"arch": src.arch})
    typer.echo(f"{path}: max |diff| {parity.max_abs_diff:.2e}, top-1 agreement {parity.agreement:.2%} "
               f"on {parity.batch} real images")


@app.command("quantize")
def quantize_cmd(
    onnx: Path = typer.Argument(..., help="FP32 ONNX file (from 'qdeploy export')."),
    out: Path = typer.Option(Path("int8.onnx"), help="Output INT8 ONNX file."),
    preset: str = typer.Option("default", help="default | tuned | seed-lab5 | dynamic | per-tensor | entropy | "
                               "percentile"),
    format: Optional[str] = typer.Option(None, help="Override: QDQ or QOperator."),
    activation_type: Optional[str] = typer.Option(None, help="Override: uint8 or int8."),
    weight_type: Optional[str] = typer.Option(None, help="Override: int8 or uint8."),
    per_channel: Optional[bool] = typer.Option(None, "--per-channel/--per-tensor", help="Override weight granularity."),
    method: Optional[str] = typer.Option(None, help="Override: minmax | entropy | percentile."),
    percentile: Optional[float] = typer.Option(None, help="Percentile for the percentile method."),
    bias_correction: Optional[bool] = typer.Option(None, "--bias-correction/--no-bias-correction",
                                                   help="Override: rewrite INT32 biases to cancel the mean shift of "
                                                   "rounded weights (default preset: on)."),
    weight_rounding: Optional[str] = typer.Option(None, help="Override: nearest (ORT's rounding) or gptq (each "
                                                  "layer's integer weights fitted to its output on the calibration "
                                                  "images; default preset: gptq)."),
    tune_epochs: Optional[int] = typer.Option(None, help="Override: epochs of output tuning (INT32 biases and "
                                              "activation scales fitted to FP32's outputs on the calibration images; "
                                              "QDQ; 0 = off; preset 'tuned': 2)."),
    auto: o.Auto = False, max_drop: o.MaxDrop = None, max_rel_drop: o.MaxRelDrop = None,
    val_size: o.ValSize = o.VAL_SIZE, auto_methods: o.AutoMethods = None,
    auto_fallback_steps: o.AutoFallbackSteps = None,
    data: o.Data = None, calib_split: o.CalibSplit = o.CALIB_SPLIT, calib_size: o.CalibSize = o.CALIB_SIZE,
):
    """FP32 ONNX -> INT8 ONNX, calibrated on real images (preprocessing read from the ONNX metadata)."""

    info = read_info(onnx)
    overrides = {k: v for k, v in dict(format=format, activation_type=activation_type, weight_type=weight_type,
                                       per_channel=per_channel, method=method, percentile=percentile,
                                       bias_correction=bias_correction, weight_rounding=weight_rounding,
                                       tune_epochs=tune_epochs).items()
                 if v is not None}
    qcfg = get_preset(preset).with_(**overrides)
    dcfg = DataConfig(root=str(o.data_root(data)), calib_split=calib_split, calib_size=calib_size,
                      preprocess=info.require_preprocess(), classes=info.classes)
    if auto:
        _auto_quantize(onnx, out, dcfg, o.auto_cfg(max_drop, max_rel_drop, val_size, auto_methods,
                                                   auto_fallback_steps))
        return
    calib = open_calib(dcfg)
    path, check = quantize(onnx, out, qcfg, calib.load(dcfg.preprocess))
    typer.echo(f"{path}: {path.stat().st_size / 1e6:.2f} MB, agreement with FP32 {check.agreement:.2%}, "
               f"rel-L2 {check.rel_l2:.4f} on {check.n} calibration images")


def _auto_quantize(onnx: Path, out: Path, dcfg, acfg) -> None:
    rec = auto_quantize_from(onnx, out, dcfg, acfg, log=lambda m: typer.echo(m, err=True))
    if not rec["met_budget"]:
        raise QDeployError(rec["message"] + f"; every candidate is in {out.parent / 'search.json'}")
    typer.echo(f"{out}: drop {rec['chosen_drop_pt']:.2f} pt on {rec['val_images']} validation images, "
               f"{rec['chosen_p50_ms']:.2f} ms vs FP32 {rec['fp32_p50_ms']:.2f} ms, {rec['fp32_nodes_kept']} "
               f"node(s) kept in FP32; search: {out.parent / 'search.json'}")


@app.command("evaluate")
def evaluate_cmd(
    models: list[Path] = typer.Argument(..., help="ONNX files; the first is the reference for agreement."),
    data: o.Data = None, eval_split: o.EvalSplit = o.EVAL_SPLIT, eval_limit: o.EvalLimit = None,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write metrics as JSON here."),
):
    """Top-1/top-5, agreement with the first model, rel-L2, per-class accuracy on the evaluation split
    (streamed; a plain photo folder is scored against the first model only)."""

    infos = [read_info(m) for m in models]
    spec = infos[0].require_preprocess()
    images = open_split(o.data_root(data), eval_split or None, infos[0].classes)
    if eval_limit and eval_limit < len(images):
        images = images.subset(balanced_indices(images.labels, eval_limit, size=len(images)))
    classes = images.classes if images.labelled else (infos[0].classes or [])
    task = get_task(infos[0].task)
    results = evaluate([i.path for i in infos], images, spec, classes, EvalConfig(task=task.name))
    for path, m in results.items():
        typer.echo(f"{path}: {task.describe(m)}  (n={m.n})")
    if json_out:
        write_json(json_out, {k: m.as_dict() for k, m in results.items()})


@app.command("bench")
def bench_cmd(
    models: list[Path] = typer.Argument(..., help="Model files, benchmarked in this one process: ONNX, or a runtime's "
                                        "own format (.ort, .blob, .pt2 from 'qdeploy compile'; nncf .xml)."),
    target: Optional[str] = typer.Option(None, help="Where ONNX files run: ort-cpu (default) | openvino-cpu. Files in "
                                         "a runtime's own format run on that runtime."),
    runs: int = typer.Option(default(BenchConfig, "runs")), warmup: int = typer.Option(default(BenchConfig, "warmup")),
    batch_sizes: Optional[str] = typer.Option(None, help="Default: 1,32,256 at 32 px, fewer for larger inputs."),
    threads: Optional[int] = typer.Option(None),
):
    """Size, batch-1 latency p50/p90/p99 and throughput; speedups relative to the first model."""


    if target:
        check_targets([target])
    cfg = BenchConfig(runs=runs, warmup=warmup, threads=threads,
                      batch_sizes=o.ints(batch_sizes, "batch-sizes") if batch_sizes else None)
    info = read_info(models[0])
    # Latency does not depend on pixel values; the input shape comes from the model's metadata.
    spec = info.require_preprocess()
    sample = np.random.default_rng(0).standard_normal((8, 3, *spec.shape)).astype(np.float32)
    runners = {str(m): session_runner(m, threads, target=target_for(m, target)) for m in models}
    results = benchmark_many(runners, sample, cfg)
    base = results[str(models[0])].p50_ms
    batches = list(results[str(models[0])].throughput)
    typer.echo("| model | runtime | MB | p50 ms | p90 ms | p99 ms | speedup | "
               + " | ".join(f"img/s b{b}" for b in batches) + " |")
    typer.echo("|---" * (7 + len(batches)) + "|")
    for name, r in results.items():
        typer.echo(f"| {name} | {r.runtime}, {r.provider} | {r.size_bytes / 1e6:.2f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | "
                   f"{r.p99_ms:.2f} | {base / r.p50_ms:.2f}x | "
                   + " | ".join(f"{r.throughput[b]:.0f}" for b in batches) + " |")
    typer.echo(f"threads {r.threads}; latency interleaved across models")


@app.command("compile")
def compile_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory written by 'qdeploy run'."),
    target: str = typer.Option(OPENVINO_CPU, help="Comma list: ort-cpu (.ort), openvino-cpu (compiled blob), "
                               "aoti-cpu (PyTorch AOTInductor .pt2, FP32 of --checkpoint runs)."),
    variants: Optional[str] = typer.Option(None, help="Comma list of the run's variants (default: every verified one)."),
    verify_images: int = typer.Option(128, help="Evaluation images each offline form is checked on."),
    runs: int = typer.Option(100, help="Timed batch-1 runs per form (interleaved)."),
    bench_batches: Optional[str] = typer.Option(None, help="Throughput batch sizes (default by input size)."),
    threads: Optional[int] = typer.Option(None),
    data: Optional[Path] = typer.Option(None, "--data", help="The run's data root, if it moved."),
):
    """Offline forms: compile a run's models ahead of time for a target, verify them against their online form,
    and print online vs offline side by side (compile, load, cold first inference, latency, throughput)."""

    cfg = CompileConfig(targets=tuple(t.strip() for t in target.split(",") if t.strip()),
                        variants=tuple(v.strip() for v in variants.split(",") if v.strip()) if variants else None,
                        verify_images=verify_images, threads=threads,
                        bench=BenchConfig(runs=runs, threads=threads,
                                          batch_sizes=o.ints(bench_batches, "bench-batches") if bench_batches else None))
    if not (run_dir / "report.json").is_file():
        raise QDeployError(f"{run_dir} holds no report.json; pass a directory written by 'qdeploy run'")
    res = compile_run(run_dir, cfg, data_root=str(data) if data else None, log=lambda m: typer.echo(m, err=True))
    typer.echo(table(res))
    typer.echo(f"written: {run_dir / 'compiled'}")


@app.command("bundle")
def bundle_cmd(
    what: str = typer.Argument(..., help="A run directory to bundle, or 'verify' followed by a bundle directory."),
    path: Optional[Path] = typer.Argument(None, help="With 'verify': the bundle directory."),
    out: Path = typer.Option(Path("bundle"), help="Where the bundle goes (must not exist, or be empty)."),
    format: str = typer.Option("triton,ovms", "--format", help="Comma list: triton (model repository with "
                               "config.pbtxt), ovms (OpenVINO Model Server layout + config.json)."),
    variants: Optional[str] = typer.Option(None, help="Comma list of the run's variants (default: fp32 and the "
                                           "recommended one)."),
    name: Optional[str] = typer.Option(None, help="Model name prefix (default: the run directory's name)."),
    max_batch_size: int = typer.Option(32), instances: int = typer.Option(1),
    golden_images: int = typer.Option(4, help="Real preprocessed images in the golden request."),
):
    """Deployment bundles: 'qdeploy bundle RUN_DIR --format triton,ovms --out bundle/' writes serving layouts,
    a manifest with hashes and a golden request; 'qdeploy bundle verify bundle/' re-checks them."""
    if what == "verify":

        if path is None:
            raise QDeployError("give the bundle to verify: qdeploy bundle verify BUNDLE_DIR")
        res = verify_bundle(path)
        typer.echo(f"{path}: OK ({res['files']} files, models {', '.join(res['models'])}; golden request max |diff| "
                   + ", ".join(f"{k} {v:.2g}" for k, v in res["golden_max_abs_diff"].items()) + ")")
        for f, why in res["golden_unchecked"].items():
            typer.echo(f"warning: golden request not re-run on {f}: {why}", err=True)
        return

    run_dir = Path(what)
    if not (run_dir / "report.json").is_file():
        raise QDeployError(f"{run_dir} holds no report.json; pass a directory written by 'qdeploy run' (or "
                           "'verify BUNDLE_DIR')")
    cfg = BundleConfig(formats=tuple(f.strip() for f in format.split(",") if f.strip()),
                       variants=tuple(v.strip() for v in variants.split(",") if v.strip()) if variants else None,
                       name=name, max_batch_size=max_batch_size, instances=instances, golden_images=golden_images)
    man = bundle_run(run_dir, out, cfg, log=lambda m: typer.echo(m, err=True))
    for m in man["models"]:
        typer.echo(f"{m['layout']}: {m['name']} ({m['variant']}) -> {out / m['model_file']}")
    for s_ in man["skipped"]:
        typer.echo(f"skipped {s_['variant']} for {s_['format']}: {s_['reason']}")
    typer.echo(f"verified; manifest {out / 'manifest.json'}")


@app.command("sweep")
def sweep_cmd(
    sweep_file: Path = typer.Argument(..., help="YAML: models (each with its `qdeploy run` options), variants, "
                                      "targets, defaults, max_drop/min_psnr, out."),
    backend: str = typer.Option("local", help="local (a process pool on this machine) | ray."),
    workers: int = typer.Option(1, help="local: cells at once (each benchmark still takes the machine alone)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the file's `out`, else runs/sweep-NAME)."),
    ray_address: Optional[str] = typer.Option(None, help="ray: join this cluster (auto | ray://host:10001); out "
                                              "must then be on storage every node sees."),
    ray_cpus: Optional[int] = typer.Option(None, help="ray: CPUs of the local cluster (default: every core)."),
    cpus_per_cell: float = typer.Option(1.0, help="ray: CPUs one cell holds."),
):
    """Models x variants x targets, every cell a full run (resumable), then one leaderboard (md/html/json)."""

    cfg = load_sweep(sweep_file, str(out) if out else None)
    if workers < 1:
        raise QDeployError("--workers must be >= 1")
    ray_cfg = RayConfig(address=ray_address, num_cpus=ray_cpus, cpus_per_task=cpus_per_cell) \
        if backend == "ray" else None
    board = run_sweep(cfg, backend, workers, ray_cfg, log=lambda m: typer.echo(m, err=True))
    for model, m in board["models"].items():
        typer.echo(f"{model}: best {m['best'] or 'none within budget'}")
    typer.echo(f"{board['cells']} cells, {board['failed']} failed; leaderboard: {Path(cfg.out) / 'leaderboard.md'}")


@app.command("train")
def train_cmd(
    arch: str = typer.Option("resnet20-cifar", help="Built-in architecture to train (the torchvision/timm names "
                             "too, e.g. vit_tiny_patch16_224 with --arch-kwargs for a small one)."),
    arch_kwargs: o.ArchKwargs = "",
    optimizer: Optional[str] = typer.Option(None, help="sgd (default) | adamw (transformers)."),
    out: Path = typer.Option(Path("runs/train"), help="Output directory (best.pth, curves.png, history.json)."),
    preset: str = typer.Option("default", help="default | fast | seed002 (seed 002's full recipe)."),
    epochs: Optional[int] = typer.Option(None), batch_size: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None), weight_decay: Optional[float] = typer.Option(None),
    label_smoothing: Optional[float] = typer.Option(None), mixup: Optional[float] = typer.Option(None),
    schedule: Optional[str] = typer.Option(None, help="cosine | cosine-restarts | step"),
    grad_clip: Optional[float] = typer.Option(None), color_jitter: Optional[float] = typer.Option(None),
    rotation: Optional[float] = typer.Option(None), translate: Optional[float] = typer.Option(None),
    erasing: Optional[float] = typer.Option(None, help="Random-erasing probability."),
    val_size: Optional[int] = typer.Option(None, help="Validation images held out of train (default 5000)."),
    train_limit: Optional[int] = typer.Option(None, help="Train on at most this many images (CPU smoke runs)."),
    patience: Optional[int] = typer.Option(None, help="Early stopping patience in epochs (0 = off)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    seed: Optional[int] = typer.Option(None),
    resume: bool = typer.Option(False, help="Continue from out/last.pth."),
    pretrained: Optional[str] = typer.Option(None, help="Start from these weights (e.g. imagenet, with --arch "
                                             "efficientnet-lite0): frozen backbone, cached features, a new head."),
    tune: Optional[str] = typer.Option(None, help="With --pretrained: fc (linear probe) | head (+ head conv) | "
                                       "last-block (+ the last MBConv block; default)."),
    data: o.Data = None, test_split: str = typer.Option("test", help="Reported once at the end ('' = none)."),
    size: o.Size = None, mean: o.Mean = None, std: o.Std = None, resize: o.Resize = None,
    norm: o.Norm = None,
):
    """Train a CIFAR model (seed 002 recipe available), or a new head on a pretrained backbone, -> best.pth
    and best.json that feed 'qdeploy run'."""
    from ..train import PRESETS, train

    flags = o.spec_flags(size, mean, std, resize, norm)
    if pretrained:
        _train_head(arch, pretrained, out, flags, data, test_split,
                    dict(tune=tune, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         label_smoothing=label_smoothing, val_size=val_size, train_limit=train_limit, seed=seed))
        return
    if preset not in PRESETS:
        raise QDeployError(f"training preset '{preset}' is unknown; use one of {', '.join(PRESETS)}")
    overrides = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                     label_smoothing=label_smoothing, mixup_alpha=mixup, schedule=schedule, grad_clip=grad_clip,
                     color_jitter=color_jitter, rotation=rotation, translate=translate, erasing_p=erasing,
                     val_size=val_size, train_limit=train_limit, patience=patience, device=device, seed=seed,
                     optimizer=optimizer, arch_kwargs=o.json_kwargs(arch_kwargs) or None)
    cfg = PRESETS[preset](arch=arch).with_(**{k: v for k, v in overrides.items() if v is not None})
    from ..models import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise QDeployError(f"unknown architecture '{arch}' for training; use one of {', '.join(ARCHITECTURES)}")
    root = o.data_root(data)
    res = train(cfg, root, out, spec=flags.apply(), resume=resume, test_split=test_split or None,
                log=lambda m: typer.echo(m, err=True))
    _trained(res)


def _trained(res) -> None:
    test = "not measured" if res.test_acc is None else f"{res.test_acc:.2%}"
    typer.echo(f"{res.best}: best validation top-1 {res.best_val_acc:.2%} at epoch {res.best_epoch}, test top-1 {test}, "
               f"{res.epochs_run} epochs in {res.seconds:.0f}s on {res.device}")


def _train_head(arch, pretrained, out, flags, data, test_split, overrides) -> None:
    from ..models import pretrained as find_pretrained
    from ..train.head import HeadConfig, train_head

    _, stored = find_pretrained(arch, pretrained)
    # one construction, so per-tune defaults (epochs, lr) follow --tune
    cfg = HeadConfig(arch=arch, pretrained=pretrained, **{k: v for k, v in overrides.items() if v is not None})
    res = train_head(cfg, o.data_root(data), out, spec=flags.apply(stored), test_split=test_split or None,
                     log=lambda m: typer.echo(m, err=True))
    _trained(res)


@app.command("serve")
def serve_cmd(
    targets: Optional[list[Path]] = typer.Argument(None, help="Run directory, or ONNX files (FP32 first). "
                                                   "Default: the bundled model."),
    host: str = typer.Option(default(ServeConfig, "host"), help="Interface to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(default(ServeConfig, "port")),
    share: bool = typer.Option(False, help="Publish a public gradio.live link (prints a warning)."),
    auth: Optional[str] = typer.Option(None, help="Require user:password for the page and the API (visible in "
                                       "`ps`: prefer --auth-file or the QDEPLOY_AUTH variable)."),
    auth_file: Optional[Path] = typer.Option(None, help="A file whose first line is user:password (chmod 600)."),
    page: bool = typer.Option(True, "--page/--no-page", help="--no-page: the KServe v2 and JSON API alone, no Gradio "
                              "(a qdeploy[serve-api] install has no gradio, pandas or torch)."),
    max_concurrency: int = typer.Option(default(ServeConfig, "max_concurrency"), help="Inferences at once."),
    max_queue: int = typer.Option(default(ServeConfig, "max_queue"), help="Requests allowed to wait; beyond that "
                                  "the API answers 503."),
    max_batch: int = typer.Option(default(ServeConfig, "max_batch"), help="Classifiers: concurrent requests share "
                                  "one model run of up to this many images (dynamic batching; 1: off)."),
    batch_delay_ms: float = typer.Option(default(ServeConfig, "batch_delay_ms"), help="Under load, how long a lone "
                                         "request waits for others to batch with."),
    max_upload_mb: float = typer.Option(default(ServeConfig, "max_upload_mb")),
    max_megapixels: float = typer.Option(default(ServeConfig, "max_megapixels")),
    threads: Optional[int] = typer.Option(None, help="ORT intra-op threads per session."),
    target: Optional[str] = typer.Option(None, help="Where ONNX files run: ort-cpu (default) | openvino-cpu (adds the "
                                         "run's nncf IR). Compiled files (.ort, .blob, .pt2) run on their runtime."),
):
    """Web app: FP32 and INT8 side by side on any uploaded image, plus a JSON API."""
    from ..app.server import serve  # FastAPI and Gradio: extra [serve], loaded only to serve

    if not targets:
        targets = [bundled_run_dir()]
    auth, auth_warnings = resolve_auth(auth, auth_file)
    for w in auth_warnings:
        typer.echo(w, err=True)
    cfg = ServeConfig(host=host, port=port, share=share, auth=auth, max_concurrency=max_concurrency,
                      max_queue=max_queue, max_batch=max_batch, batch_delay_ms=batch_delay_ms,
                      max_upload_mb=max_upload_mb, max_megapixels=max_megapixels, threads=threads,
                      target=target, page=page)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"WARNING: binding to {host} exposes the app to other machines on that network", err=True)
    serve(targets, cfg, log=lambda m: typer.echo(m, err=True))


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="Run directory holding report.json.")):
    """(Re)build report.md, report.html and plots from a run's report.json."""

    paths = report(run_dir)
    typer.echo(f"{paths['md']}\n{paths['html']}")


def main():
    try:
        app()
    except QDeployError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        line = missing_extra(exc)
        if line is None or _state["debug"]:
            raise
        typer.echo(f"error: {line}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
