"""Thin typer CLI: one command per library verb. Heavy imports happen inside the commands."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import QDeployError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="qdeploy: checkpoint -> verified FP32 ONNX -> fast INT8 -> evaluated, benchmarked report.")
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _state["debug"] = debug


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise QDeployError(f"--{what} '{text}' is not a comma-separated list of numbers, e.g. 0.4914,0.4822,0.4465")


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise QDeployError(f"--{what} '{text}' is not a comma-separated list of integers, e.g. 1,32,256")


def _auto_cfg(max_drop, max_rel_drop, val_size):
    from .quantize.auto import AutoConfig

    if max_drop is None and max_rel_drop is None:
        max_drop = 0.3
    return AutoConfig(max_drop_pt=max_drop, max_rel_drop=max_rel_drop, val_size=val_size)


def _spec(size: int, mean: str, std: str, resize: str, preset_name: str | None):
    from .data import PreprocessSpec

    if preset_name == "imagenet":
        return PreprocessSpec.imagenet(size)
    if preset_name not in (None, "cifar10"):
        raise QDeployError(f"--norm '{preset_name}' is unknown; use cifar10 or imagenet (or --mean/--std)")
    return PreprocessSpec(size=size, mean=_floats(mean, "mean"), std=_floats(std, "std"), resize=resize)


def _data_root(data: Path | None) -> Path:
    from .settings import default_data

    root = data or default_data()
    if root is None:
        raise QDeployError("no --data given and no ../shared/datasets/cifar10 found; pass --data path/to/images")
    return root


def _data_cfg(data, calib_split, eval_split, calib_size, eval_limit, classes, size, mean, std, resize, norm):
    from .data import DataConfig

    root = _data_root(data)
    return DataConfig(root=str(root), calib_split=calib_split, eval_split=eval_split, calib_size=calib_size,
                      eval_limit=eval_limit, classes=[c.strip() for c in classes.split(",")] if classes else None,
                      preprocess=_spec(size, mean, std, resize, norm))


# Options shared by the commands that read images.
DATA = typer.Option(None, "--data", help="ImageFolder root (train/ test/) or cifar-10-batches-py dir. "
                    "Default: ../shared/datasets/cifar10 ($QDEPLOY_SHARED).")
CALIB_SPLIT = typer.Option("train", help="Split the calibration images are drawn from ('' = root itself).")
EVAL_SPLIT = typer.Option("test", help="Split evaluated on ('' = root itself; disjoint from calibration).")
CALIB_SIZE = typer.Option(300, help="Calibration images, sampled class-balanced.")
EVAL_LIMIT = typer.Option(None, help="Evaluate on at most this many images (class-balanced); default all.")
CLASSES = typer.Option(None, help="Comma-separated class names (default: from the data).")
SIZE = typer.Option(32, help="Model input size (square).")
MEAN = typer.Option("0.4914,0.4822,0.4465", help="Normalisation mean (R,G,B).")
STD = typer.Option("0.2470,0.2435,0.2616", help="Normalisation std (R,G,B).")
RESIZE = typer.Option("resize", help="resize (stretch, as the seed) or shorter-side-crop.")
NORM = typer.Option(None, help="Preset for mean/std/resize: cifar10 or imagenet.")


@app.command()
def run(
    checkpoint: Optional[Path] = typer.Option(None, help="state_dict file (default: ../shared's ResNet18)."),
    onnx: Optional[Path] = typer.Option(None, help="Start from this FP32 ONNX instead of a checkpoint."),
    arch: str = typer.Option("resnet18-cifar", help="Built-in name or path/to/file.py:ClassName."),
    arch_kwargs: str = typer.Option("", help="JSON keyword arguments for the architecture."),
    out: Path = typer.Option(Path("runs/r18"), help="Output directory."),
    variants: str = typer.Option("default", help="Comma list of INT8 variants, or 'all'."),
    max_drop: Optional[float] = typer.Option(None, help="Accuracy budget: max top-1 drop in points (default 1.0 for "
                                             "the recommendation, 0.3 with --auto)."),
    max_rel_drop: Optional[float] = typer.Option(None, help="Budget as a fraction of FP32 top-1 (with --auto)."),
    auto: bool = typer.Option(False, "--auto", help="Also search for the fastest INT8 within the budget."),
    val_size: int = typer.Option(2000, help="--auto: validation images carved from the calibration split."),
    bench_runs: int = typer.Option(200, help="Timed batch-1 runs for the latency percentiles."),
    bench_batches: str = typer.Option("1,32,256", help="Batch sizes for the throughput table."),
    bench_seconds: float = typer.Option(1.0, help="Minimum seconds per throughput point."),
    threads: Optional[int] = typer.Option(None, help="ORT intra-op threads (default: all cores)."),
    qat_epochs: Optional[int] = typer.Option(None, help="pt-qat: fine-tuning epochs (default 1)."),
    qat_train_limit: Optional[int] = typer.Option(None, help="pt-qat: training images (default 2000; 0 = all)."),
    qat_val_size: Optional[int] = typer.Option(None, help="pt-qat: held-out training images that choose the "
                                               "best epoch, the PTQ start included (default 1000; 0 = last epoch)."),
    qat_init: Optional[str] = typer.Option(None, help="pt-qat activation grids: ptq (PTQ's calibrated ranges, "
                                           "default) | observe (moving-average observers while training)."),
    device: str = typer.Option("auto", help="pt-qat training device: auto | cpu | cuda."),
    qat_from: Optional[Path] = typer.Option(None, help="pt-qat: converted INT8 weights from a QAT run elsewhere "
                                            "(bench/gpu/qat_r18.py); skips training here."),
    data: Optional[Path] = DATA, calib_split: str = CALIB_SPLIT, eval_split: str = EVAL_SPLIT,
    calib_size: int = CALIB_SIZE, eval_limit: Optional[int] = EVAL_LIMIT, classes: Optional[str] = CLASSES,
    size: int = SIZE, mean: str = MEAN, std: str = STD, resize: str = RESIZE, norm: Optional[str] = NORM,
):
    """The whole pipeline: export, calibrate, quantize, evaluate, bench, report."""
    import json

    from .bench import BenchConfig
    from .evaluate import EvalConfig
    from .pipeline import RunConfig
    from .pipeline import run as run_pipeline
    from .report import markdown_table
    from .settings import default_checkpoint

    if checkpoint is None and onnx is None:
        checkpoint = default_checkpoint()
        if checkpoint is None:
            raise QDeployError("no --checkpoint/--onnx given and no ../shared checkpoint found; pass --checkpoint")
    dcfg = _data_cfg(data, calib_split, eval_split, calib_size, eval_limit, classes, size, mean, std, resize, norm)
    auto_cfg = _auto_cfg(max_drop, max_rel_drop, val_size) if auto else None
    cfg = RunConfig(out=str(out), data=dcfg, checkpoint=str(checkpoint) if checkpoint else None,
                    onnx=str(onnx) if onnx else None, arch=arch,
                    arch_kwargs=json.loads(arch_kwargs) if arch_kwargs.strip() else {}, variants=variants,
                    max_drop_pt=max_drop if max_drop is not None else 1.0, auto=auto_cfg,
                    evaluate=EvalConfig(threads=threads),
                    torch_overrides={"qat_epochs": qat_epochs, "device": device,
                                     "qat_train_limit": qat_train_limit, "qat_val_size": qat_val_size,
                                     "qat_init": qat_init,
                                     "qat_from": str(qat_from) if qat_from else None},
                    bench=BenchConfig(runs=bench_runs, threads=threads, min_seconds=bench_seconds,
                                      batch_sizes=_ints(bench_batches, "bench-batches")))
    result = run_pipeline(cfg, log=lambda m: typer.echo(m, err=True))
    typer.echo(markdown_table(result))
    typer.echo(f"\nrecommended: {result['recommended']}\nreport: {out / 'report.html'}")


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Option(..., help="state_dict file."),
    out: Path = typer.Option(Path("fp32.onnx"), help="Output ONNX file."),
    arch: str = typer.Option("resnet18-cifar"), arch_kwargs: str = typer.Option(""),
    opset: int = typer.Option(17), atol: float = typer.Option(1e-3, help="Max |torch - onnx| logit difference."),
    data: Optional[Path] = DATA, calib_split: str = CALIB_SPLIT, classes: Optional[str] = CLASSES,
    size: int = SIZE, mean: str = MEAN, std: str = STD, resize: str = RESIZE, norm: Optional[str] = NORM,
):
    """PyTorch checkpoint -> FP32 ONNX, verified against PyTorch on 64 real images."""
    from .data import balanced_indices, open_split
    from .export import ExportConfig, export
    from .models import load_model

    dcfg = _data_cfg(data, calib_split, "", 64, None, classes, size, mean, std, resize, norm)
    images = open_split(dcfg.root, calib_split or None, dcfg.classes)
    x = images.subset(balanced_indices(images.labels, 64)).load(dcfg.preprocess)
    model = load_model(arch, checkpoint, arch_kwargs=arch_kwargs)
    path, parity = export(model, out, x, images.classes, dcfg.preprocess, ExportConfig(opset=opset, atol=atol),
                          meta={"arch": arch})
    typer.echo(f"{path}: max |diff| {parity.max_abs_diff:.2e}, top-1 agreement {parity.agreement:.2%} "
               f"on {parity.batch} real images")


@app.command("quantize")
def quantize_cmd(
    onnx: Path = typer.Argument(..., help="FP32 ONNX file (from 'qdeploy export')."),
    out: Path = typer.Option(Path("int8.onnx"), help="Output INT8 ONNX file."),
    preset: str = typer.Option("default", help="default | seed-lab5 | dynamic | entropy | percentile"),
    format: Optional[str] = typer.Option(None, help="Override: QDQ or QOperator."),
    activation_type: Optional[str] = typer.Option(None, help="Override: uint8 or int8."),
    weight_type: Optional[str] = typer.Option(None, help="Override: int8 or uint8."),
    per_channel: Optional[bool] = typer.Option(None, "--per-channel/--per-tensor", help="Override weight granularity."),
    method: Optional[str] = typer.Option(None, help="Override: minmax | entropy | percentile."),
    percentile: Optional[float] = typer.Option(None, help="Percentile for the percentile method."),
    auto: bool = typer.Option(False, "--auto", help="Search for the fastest INT8 that meets --max-drop."),
    max_drop: Optional[float] = typer.Option(None, help="--auto: max top-1 drop in points (default 0.3)."),
    max_rel_drop: Optional[float] = typer.Option(None, help="--auto: max drop as a fraction of FP32 top-1."),
    val_size: int = typer.Option(2000, help="--auto: validation images carved from the calibration split."),
    data: Optional[Path] = DATA, calib_split: str = CALIB_SPLIT, calib_size: int = CALIB_SIZE,
):
    """FP32 ONNX -> INT8 ONNX, calibrated on real images (preprocessing read from the ONNX metadata)."""
    from .data import DataConfig, balanced_indices, open_split
    from .quantize import preset as get_preset
    from .quantize import quantize
    from .runtime import read_info

    info = read_info(onnx)
    overrides = {k: v for k, v in dict(format=format, activation_type=activation_type, weight_type=weight_type,
                                       per_channel=per_channel, method=method, percentile=percentile).items()
                 if v is not None}
    qcfg = get_preset(preset).with_(**overrides)
    root = _data_root(data)
    dcfg = DataConfig(root=str(root), calib_split=calib_split, calib_size=calib_size, preprocess=info.preprocess,
                      classes=info.classes)
    if auto:
        from .quantize.auto import auto_quantize_from

        rec = auto_quantize_from(onnx, out, dcfg, _auto_cfg(max_drop, max_rel_drop, val_size),
                                 log=lambda m: typer.echo(m, err=True))
        if not rec["met_budget"]:
            raise QDeployError(rec["message"] + f"; every candidate is in {out.parent / 'search.json'}")
        typer.echo(f"{out}: drop {rec['chosen_drop_pt']:.2f} pt on {rec['val_images']} validation images, "
                   f"{rec['chosen_p50_ms']:.2f} ms vs FP32 {rec['fp32_p50_ms']:.2f} ms, {rec['fp32_nodes_kept']} "
                   f"node(s) kept in FP32; search: {out.parent / 'search.json'}")
        return
    images = open_split(dcfg.root, calib_split or None, info.classes)
    x = images.subset(balanced_indices(images.labels, calib_size)).load(info.preprocess)
    path, check = quantize(onnx, out, qcfg, x)
    typer.echo(f"{path}: {path.stat().st_size / 1e6:.2f} MB, agreement with FP32 {check.agreement:.2%}, "
               f"rel-L2 {check.rel_l2:.4f} on {check.batch} calibration images")


@app.command("evaluate")
def evaluate_cmd(
    models: list[Path] = typer.Argument(..., help="ONNX files; the first is the reference for agreement."),
    data: Optional[Path] = DATA, eval_split: str = EVAL_SPLIT, eval_limit: Optional[int] = EVAL_LIMIT,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write metrics as JSON here."),
):
    """Top-1/top-5, agreement with the first model, rel-L2, per-class accuracy on the evaluation split."""
    from .data import balanced_indices, open_split
    from .evaluate import evaluate
    from .runtime import read_info, write_json

    infos = [read_info(m) for m in models]
    root = _data_root(data)
    images = open_split(root, eval_split or None, infos[0].classes)
    if eval_limit and eval_limit < len(images):
        images = images.subset(balanced_indices(images.labels, eval_limit))
    x = images.load(infos[0].preprocess, progress=True)
    ref, results = None, {}
    for info in infos:
        m, logits = evaluate(info.path, x, images.labels, images.classes, reference=ref)
        ref = logits if ref is None else ref
        results[str(info.path)] = m.as_dict()
        agree = "" if m.agreement is None else f"  agreement {m.agreement:.2%}  rel-L2 {m.rel_l2:.4f}"
        typer.echo(f"{info.path}: top-1 {m.top1:.2%}  top-5 {m.top5:.2%}{agree}  (n={m.n})")
    if json_out:
        write_json(json_out, results)


@app.command("bench")
def bench_cmd(
    models: list[Path] = typer.Argument(..., help="ONNX files, benchmarked in this one process."),
    runs: int = typer.Option(200), warmup: int = typer.Option(20),
    batch_sizes: str = typer.Option("1,32,256"), threads: Optional[int] = typer.Option(None),
):
    """Size, batch-1 latency p50/p90/p99 and throughput; speedups relative to the first model."""
    import numpy as np

    from .bench import BenchConfig, benchmark_many
    from .runtime import read_info

    cfg = BenchConfig(runs=runs, warmup=warmup, threads=threads,
                      batch_sizes=_ints(batch_sizes, "batch-sizes"))
    info = read_info(models[0])
    # Latency does not depend on pixel values; the input shape comes from the ONNX metadata.
    sample = np.random.default_rng(0).standard_normal((8, 3, info.preprocess.size, info.preprocess.size))
    results = benchmark_many({str(m): m for m in models}, sample.astype(np.float32), cfg)
    base = results[str(models[0])].p50_ms
    typer.echo("| model | MB | p50 ms | p90 ms | p99 ms | speedup | "
               + " | ".join(f"img/s b{b}" for b in cfg.batch_sizes) + " |")
    typer.echo("|---" * (6 + len(cfg.batch_sizes)) + "|")
    for name, r in results.items():
        typer.echo(f"| {name} | {r.size_bytes / 1e6:.2f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | "
                   f"{base / r.p50_ms:.2f}x | " + " | ".join(f"{r.throughput[b]:.0f}" for b in cfg.batch_sizes) + " |")
    typer.echo(f"threads {r.threads}, {r.runtime}, {r.provider}; latency interleaved across models")


@app.command("train")
def train_cmd(
    arch: str = typer.Option("resnet20-cifar", help="Built-in architecture to train."),
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
    data: Optional[Path] = DATA, test_split: str = typer.Option("test", help="Reported once at the end ('' = none)."),
    size: int = SIZE, mean: str = MEAN, std: str = STD, resize: str = RESIZE, norm: Optional[str] = NORM,
):
    """Train a CIFAR model (seed 002 recipe available) -> best.pth that feeds 'qdeploy run'."""
    from .train import PRESETS, train

    if preset not in PRESETS:
        raise QDeployError(f"training preset '{preset}' is unknown; use one of {', '.join(PRESETS)}")
    overrides = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                     label_smoothing=label_smoothing, mixup_alpha=mixup, schedule=schedule, grad_clip=grad_clip,
                     color_jitter=color_jitter, rotation=rotation, translate=translate, erasing_p=erasing,
                     val_size=val_size, train_limit=train_limit, patience=patience, device=device, seed=seed)
    cfg = PRESETS[preset](arch=arch).with_(**{k: v for k, v in overrides.items() if v is not None})
    from .models import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise QDeployError(f"unknown architecture '{arch}' for training; use one of {', '.join(ARCHITECTURES)}")
    root = _data_root(data)
    res = train(cfg, root, out, spec=_spec(size, mean, std, resize, norm), resume=resume,
                test_split=test_split or None, log=lambda m: typer.echo(m, err=True))
    test = "not measured" if res.test_acc is None else f"{res.test_acc:.2%}"
    typer.echo(f"{res.best}: best validation top-1 {res.best_val_acc:.2%} at epoch {res.best_epoch}, test top-1 {test}, "
               f"{res.epochs_run} epochs in {res.seconds:.0f}s on {res.device}")


@app.command("serve")
def serve_cmd(
    targets: Optional[list[Path]] = typer.Argument(None, help="Run directory, or ONNX files (FP32 first). "
                                                   "Default: the bundled model."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(7860),
    share: bool = typer.Option(False, help="Publish a public gradio.live link (prints a warning)."),
    auth: Optional[str] = typer.Option(None, help="Require user:password for the page and the API."),
    max_concurrency: int = typer.Option(4, help="Inferences at once."),
    max_queue: int = typer.Option(64, help="Requests allowed to wait; beyond that the API answers 503."),
    max_upload_mb: float = typer.Option(10.0), max_megapixels: float = typer.Option(40.0),
    threads: Optional[int] = typer.Option(None, help="ORT intra-op threads per session."),
):
    """Web app: FP32 and INT8 side by side on any uploaded image, plus a JSON API."""
    from .app.server import ServeConfig, serve
    from .bundled import bundled_run_dir

    if not targets:
        targets = [bundled_run_dir()]
    cfg = ServeConfig(host=host, port=port, share=share, auth=auth, max_concurrency=max_concurrency,
                      max_queue=max_queue, max_upload_mb=max_upload_mb, max_megapixels=max_megapixels, threads=threads)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"WARNING: binding to {host} exposes the app to other machines on that network", err=True)
    serve(targets, cfg, log=lambda m: typer.echo(m, err=True))


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="Run directory holding report.json.")):
    """(Re)build report.md, report.html and plots from a run's report.json."""
    from .report import report

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
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
