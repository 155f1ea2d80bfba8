"""The command line's options, each defined once as a typed alias (`Annotated[type, Option(...)]`) that every
command taking it shares, and the parsers that turn option text into config dataclasses. Defaults are read from the
config dataclasses (`default`), never repeated here.

No `from __future__ import annotations`: typer reads these aliases at run time."""
import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Optional

from typer import Option

from ..bench import BenchConfig
from ..data import DataConfig, PreprocessFlags, PreprocessSpec
from ..distributed import RayConfig
from ..errors import QDeployError
from ..pipeline import RunConfig
from ..recipes import AutoConfig, TorchQuantConfig
from ..settings import default_checkpoint, default_data
from ..source import DEFAULT_ARCH, SourceConfig


def default(cls, name: str):
    """A config dataclass's own default for one field: the CLI never repeats a default."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


# -- where the model comes from
Checkpoint = Annotated[Optional[Path], Option(help="state_dict file (default: ../shared's ResNet18); a best.json "
                                              "beside it (qdeploy train) gives arch, classes, preprocessing.")]
Onnx = Annotated[Optional[Path], Option(help="Start from this FP32 ONNX instead of a checkpoint.")]
Pretrained = Annotated[Optional[str], Option(help="With --arch: weights from an installed package, e.g. --arch "
                                             "efficientnet-lite0 --pretrained imagenet.")]
Arch = Annotated[Optional[str], Option(help=f"Built-in name or path/to/file.py:ClassName (default: the checkpoint's "
                                       f"record, else {DEFAULT_ARCH}).")]
ArchKwargs = Annotated[str, Option(help="JSON keyword arguments for the architecture.")]

# -- images: where they are, how they are preprocessed
Data = Annotated[Optional[Path], Option("--data", help="ImageFolder root (train/ test/), a folder of photos "
                                        "(label-free), or a cifar-10-batches-py dir. Default: "
                                        "../shared/datasets/cifar10 ($QDEPLOY_SHARED).")]
CalibSplit = Annotated[str, Option(help="Split the calibration images are drawn from ('' = root itself).")]
EvalSplit = Annotated[str, Option(help="Split evaluated on ('' = root itself; disjoint from calibration).")]
CalibSize = Annotated[int, Option(help="Calibration images, sampled class-balanced.")]
EvalLimit = Annotated[Optional[int], Option(help="Evaluate on at most this many images (class-balanced); default all.")]
Classes = Annotated[Optional[str], Option(help="Comma-separated class names (default: from the model's metadata or the "
                                          "data).")]
ClassesFile = Annotated[Optional[Path], Option(help="Class names, one per line (e.g. imagenet_classes.txt).")]
Size = Annotated[Optional[str], Option(help=f"Model input size: N (square) or WIDTHxHEIGHT (e.g. 768x512, "
                                       f"image-to-image). Default: from the model's metadata or record, else "
                                       f"{default(PreprocessSpec, 'size')}.")]
Mean = Annotated[Optional[str], Option(help="Normalisation mean (R,G,B). Default: as --size.")]
Std = Annotated[Optional[str], Option(help="Normalisation std (R,G,B). Default: as --size.")]
Resize = Annotated[Optional[str], Option(help="resize (stretch, as the seed) or shorter-side-crop. Default: as "
                                         "--size.")]
Norm = Annotated[Optional[str], Option(help="Preset for mean/std/resize: cifar10 or imagenet.")]
Override = Annotated[bool, Option("--override-preprocess", help="Use the flags even where they contradict the "
                                  "preprocessing/classes stored in the model file or checkpoint record.")]
CALIB_SPLIT, EVAL_SPLIT = default(DataConfig, "calib_split"), default(DataConfig, "eval_split")
CALIB_SIZE = default(DataConfig, "calib_size")

# -- the accuracy / quality budget and the --auto search
MaxDrop = Annotated[Optional[float], Option(help=f"Accuracy budget: max top-1 drop in points (default "
                                            f"{default(RunConfig, 'max_drop_pt')} for run's recommendation, "
                                            f"{default(AutoConfig, 'max_drop_pt')} with --auto).")]
MaxRelDrop = Annotated[Optional[float], Option(help="--auto: budget as a fraction of FP32 top-1.")]
Auto = Annotated[bool, Option("--auto", help="Search for the fastest INT8 within the budget (run: beside the listed "
                              "variants).")]
ValSize = Annotated[int, Option(help="--auto: validation images carved from the calibration split.")]
AutoMethods = Annotated[Optional[str], Option(help="--auto: calibration methods swept (default minmax,entropy,"
                                              "percentile; the histogram ones cost minutes per candidate at 224 px on "
                                              "2 cores).")]
AutoFallbackSteps = Annotated[Optional[int], Option(help=f"--auto: most fallback steps (one more activation kept float "
                                                    f"each) when no recipe meets the budget (default "
                                                    f"{default(AutoConfig, 'max_fallback_steps')}).")]
VAL_SIZE = default(AutoConfig, "val_size")
MinPsnr = Annotated[Optional[float], Option(help=f"image-to-image: quality floor, mean PSNR (dB) vs FP32 (default "
                                            f"{default(RunConfig, 'min_psnr')}; with --auto, its budget).")]
MinSsim = Annotated[Optional[float], Option(help="image-to-image --auto: mean SSIM floor vs FP32 (with or instead of "
                                            "--min-psnr), e.g. 0.95.")]
MinWorstPsnr = Annotated[Optional[float], Option(help=f"image-to-image --auto: also the worst image's PSNR (default "
                                                 f"{default(AutoConfig, 'min_worst_psnr')} dB).")]

# -- timing
BenchRuns = Annotated[int, Option(help="Timed batch-1 runs for the latency percentiles.")]
BenchBatches = Annotated[Optional[str], Option(help="Batch sizes for the throughput table (default: 1,32 at 32 px, "
                                               "1,8,32 at 224 px).")]
BenchSeconds = Annotated[float, Option(help="Most seconds per throughput point (each runs until its rate is known "
                                       "to 2 %, at least 0.3 s and 3 batches, or this long).")]
Threads = Annotated[Optional[int], Option(help="ORT intra-op threads (default: all cores).")]
BENCH_RUNS, BENCH_SECONDS = default(BenchConfig, "runs"), default(BenchConfig, "max_seconds")

# -- PyTorch QAT (the pt-qat variant)
QatEpochs = Annotated[Optional[int], Option(help=f"pt-qat: fine-tuning epochs (default "
                                            f"{default(TorchQuantConfig, 'qat_epochs')}).")]
QatTrainLimit = Annotated[Optional[int], Option(help=f"pt-qat: training images (default "
                                                f"{default(TorchQuantConfig, 'qat_train_limit')}; 0 = all).")]
QatValSize = Annotated[Optional[int], Option(help=f"pt-qat: held-out training images that choose the best epoch, the "
                                             f"PTQ start included (default "
                                             f"{default(TorchQuantConfig, 'qat_val_size')}; 0 = last epoch).")]
QatInit = Annotated[Optional[str], Option(help="pt-qat activation grids: ptq (PTQ's calibrated ranges, default) | "
                                          "observe (moving-average observers while training).")]
Device = Annotated[str, Option(help="pt-qat training device: auto | cpu | cuda.")]
QatFrom = Annotated[Optional[Path], Option(help="pt-qat: converted INT8 weights from a QAT run elsewhere "
                                           "(bench/gpu/qat_r18.py); skips training here.")]
DEVICE = default(TorchQuantConfig, "device")

# -- what the run does
Task = Annotated[str, Option(help="classification | image-to-image (outputs are images, judged by PSNR/SSIM against "
                             "the FP32 output).")]
FixedInput = Annotated[Optional[list[str]], Option(help="Extra model input fixed for the run, repeatable: "
                                                   "NAME=onehot:K | NAME=file.npy | NAME=v1,v2,... (stored in every "
                                                   "ONNX file's metadata).")]
OpTypes = Annotated[Optional[str], Option(help="ORT static variants quantize only these op types, e.g. Conv (default: "
                                          "every op ORT can quantize; the conv-only variant: Conv).")]
Targets = Annotated[str, Option(help="Comma list of targets every variant is evaluated and timed on: ort-cpu, "
                                "openvino-cpu (OpenVINO runs the same ONNX files, f32 pinned), openvino-cpu-bf16 (CPUs "
                                "with native bf16). Default: installed = every one this machine has.")]
VerifyImages = Annotated[int, Option(help="Evaluation images each variant is verified on on the run's other targets "
                                     "(a stratified sample, beside FP32 on the same images); 0 = all of them.")]
PowerDifference = Annotated[bool, Option("--power-difference", help="image-to-image: seed 003's study, every "
                                         "(x-y)^2 as one PowerDifference op (native and NumPy), FP32 and INT8.")]
Ray = Annotated[bool, Option("--ray", help="Build ONNX Runtime variants and shard the evaluation on a Ray cluster "
                             "(local unless --ray-address); timing stays serial on this machine.")]
RayAddress = Annotated[Optional[str], Option(help="Join this Ray cluster: auto | ray://host:10001 (implies --ray; "
                                             "RAY_AUTH_TOKEN for a token-protected one).")]
RayCpus = Annotated[Optional[int], Option(help="CPUs of the local Ray cluster (default: every core).")]


def floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise QDeployError(f"--{what} '{text}' is not a comma-separated list of numbers, e.g. 0.4914,0.4822,0.4465")


def ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise QDeployError(f"--{what} '{text}' is not a comma-separated list of integers, e.g. 1,32,256")


def names(text: Optional[str]) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c')"""
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def auto_cfg(max_drop, max_rel_drop, val_size, methods=None, fallback_steps=None) -> AutoConfig:
    if max_drop is None and max_rel_drop is None:
        max_drop = default(AutoConfig, "max_drop_pt")
    steps = default(AutoConfig, "max_fallback_steps") if fallback_steps is None else fallback_steps
    return AutoConfig(max_drop_pt=max_drop, max_rel_drop=max_rel_drop, val_size=val_size,
                      methods=names(methods) or default(AutoConfig, "methods"), max_fallback_steps=steps)


def image_auto_cfg(min_psnr, min_worst, val_size, methods=None, min_ssim=None) -> AutoConfig:
    """--auto for image-to-image: the PSNR floors are the budget; the validation set defaults to a few photos."""
    if min_psnr is None and min_ssim is None:
        min_psnr = default(RunConfig, "min_psnr")
    return AutoConfig.for_images(min_psnr, min_worst, None if val_size == VAL_SIZE else val_size,
                                 names(methods) or None, min_ssim)


def spec_flags(size, mean, std, resize, norm) -> PreprocessFlags:
    """The preprocessing flags as given (each None when absent): they adjust a stored spec field by field."""
    width = None
    if isinstance(size, str):
        w, sep, h = size.lower().partition("x")
        try:
            size, width = (int(h), int(w)) if sep else (int(size), None)
        except ValueError:
            raise QDeployError(f"--size '{size}' is not N or WIDTHxHEIGHT, e.g. 224 or 768x512") from None
        if width == size:
            width = None
    return PreprocessFlags(size=size, mean=mean and floats(mean, "mean"), std=std and floats(std, "std"),
                           resize=resize, norm=norm, width=width)


def class_names(classes: Optional[str], classes_file: Optional[Path]) -> Optional[list[str]]:
    if classes and classes_file:
        raise QDeployError("give --classes or --classes-file, not both")
    if classes_file:
        try:
            found = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise QDeployError(f"cannot read --classes-file {classes_file} ({exc.strerror}); pass a text file, "
                               "one class name per line") from exc
        if not found:
            raise QDeployError(f"--classes-file {classes_file} is empty; one class name per line")
        return found
    return [c.strip() for c in classes.split(",")] if classes else None


def data_root(data: Optional[Path]) -> Path:
    root = data or default_data()
    if root is None:
        raise QDeployError("no --data given and no ../shared/datasets/cifar10 found; pass --data path/to/images")
    return root


def ray_cfg(ray: bool, address: Optional[str], cpus: Optional[int]) -> Optional[RayConfig]:
    if not (ray or address):
        if cpus is not None:
            raise QDeployError("--ray-cpus sizes the local Ray cluster; add --ray")
        return None
    return RayConfig(address=address, num_cpus=cpus)


def json_kwargs(text: str) -> dict:
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise QDeployError(f"--arch-kwargs is not valid JSON ({exc.msg}); pass e.g. '{{\"width\": 2}}'") from exc


def source_cfg(checkpoint, onnx, pretrained, arch, arch_kwargs, spec, classes, override) -> SourceConfig:
    if not (checkpoint or onnx or pretrained) and arch in (None, DEFAULT_ARCH):  # another arch needs its weights
        checkpoint = default_checkpoint()
        if checkpoint is None:
            raise QDeployError("no --checkpoint/--onnx given and no ../shared checkpoint found; pass --checkpoint")
    return SourceConfig(checkpoint=str(checkpoint) if checkpoint else None, onnx=str(onnx) if onnx else None,
                        arch=arch, arch_kwargs=json_kwargs(arch_kwargs), preprocess=spec, classes=classes,
                        override_preprocess=override, pretrained=pretrained)
