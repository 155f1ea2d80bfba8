"""One config dataclass per quantization scheme (ORT, PyTorch eager, auto search); presets are factories
returning them, and `VARIANTS` maps every `--variants` name to its config in one place."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .errors import ConfigError
from .targets import DEFAULT_TARGET, OPENVINO_CPU
from .targets.ort import cpu_has_vnni

FORMATS = ("QDQ", "QOperator")
TYPES = ("uint8", "int8", "uint16", "int16")
METHODS = ("minmax", "entropy", "percentile")
WEIGHT_ROUNDINGS = ("nearest", "gptq")
MODES = ("static", "dynamic")
# integer kernels: (activation type, weight type). On x86 without VNNI, ORT's int8-weight kernels add
# pairs of u8*s8 products in int16 (vpmaddubsw) and saturate with 8-bit weights; 7-bit weights
# (reduce_range) avoid it, and u8u8 kernels widen to int16 first, so they keep 8-bit weights.
KERNELS = {"u8s8": ("uint8", "int8"), "s8s8": ("int8", "int8"), "u8u8": ("uint8", "uint8")}
# 16-bit activations with 8-bit weights (A16W8): no integer kernel on x86 CPUs (ORT runs the Q/DQ pairs
# around float ops), so never faster than FP32 here; a quality reference for image-to-image models, whose
# 8-bit activations cost the most (measured: the style network at 512 px, 22 dB with 8-bit activations,
# 44 dB with 16-bit ones, same weights).
WIDE_KERNELS = {"u16s8": ("uint16", "int8")}


def kernel_types(kernel: str, vnni: bool | None = None) -> dict:
    """QuantConfig fields for an integer kernel on this CPU (reduce_range where 8-bit weights saturate)."""
    table = {**KERNELS, **WIDE_KERNELS}
    if kernel not in table:
        raise ConfigError(f"integer kernel '{kernel}' is unknown; use one of {', '.join(table)}")
    if vnni is None:

        vnni = cpu_has_vnni()
    act, weight = table[kernel]
    if kernel in WIDE_KERNELS:
        return {"activation_type": act, "weight_type": weight, "reduce_range": False}
    return {"activation_type": act, "weight_type": weight, "reduce_range": weight == "int8" and not vnni}
# FP32 top-1 at or above this on validation images drawn from the training split means the model has
# memorised them: top-1 there says nothing, and agreement with FP32 is what selection compares.
MEMORIZED_AT = 0.99


@dataclass
class QuantConfig:
    name: str = "default"
    mode: str = "static"
    format: str = "QDQ"
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    method: str = "minmax"
    percentile: float = 99.999
    reduce_range: bool = False
    nodes_to_exclude: list[str] = field(default_factory=list)
    op_types: tuple[str, ...] = ()  # ONNX op types quantized (e.g. ("Conv",)); () = every op ORT can quantize
    # op types whose outputs stay float (ORT's OpTypesToExcludeOutputQuantization; QDQ only): the inputs and
    # weights of such a node are quantized, its output is not. Measured on the style network at 512 px:
    # Conv-only INT8 22 dB vs FP32, 29 dB with float Conv outputs (each feeds an instance norm).
    float_outputs: tuple[str, ...] = ()
    # rewrite each layer's INT32 bias so its mean output over the calibration images is FP32's despite rounded
    # weights (quantize/bias_correction.py; static only). Off here so that a hand-built config is ORT's plain
    # recipe; the default preset and the auto search turn it on.
    bias_correction: bool = False
    # how the integer weights are chosen: "nearest" (ORT's rounding) or "gptq" (each layer's weights rounded for its
    # output on the calibration images, quantize/weight_rounding.py; static, 8-bit weights). The default preset
    # and the auto search use "gptq"; a hand-built config is ORT's plain recipe.
    weight_rounding: str = "nearest"
    # epochs of output tuning (quantize/output_tuning.py): the INT32 biases and activation scales fitted to FP32's
    # outputs on the calibration images, kept only if held-out images get closer to FP32 (static QDQ; 0 = off).
    # Minutes at 224 px on 2 cores, so only the `tuned` preset (and --tune-epochs) turns it on.
    tune_epochs: int = 0
    min_agreement: float = 0.80  # below this on the verification batch the variant is a collapse
    description: str = ""

    def __post_init__(self):
        checks = [("mode", self.mode, MODES), ("format", self.format, FORMATS),
                  ("activation_type", self.activation_type, TYPES), ("weight_type", self.weight_type, TYPES),
                  ("method", self.method, METHODS)]
        for label, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"quantization {label} '{value}' is unknown; use one of {', '.join(allowed)}")
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise ConfigError(f"weight rounding '{self.weight_rounding}' is unknown; use one of "
                              f"{', '.join(WEIGHT_ROUNDINGS)}")
        if self.tune_epochs < 0:
            raise ConfigError(f"tune epochs {self.tune_epochs} must be >= 0 (0 = no output tuning)")
        if self.tune_epochs and (self.mode != "static" or self.format != "QDQ"):
            raise ConfigError("output tuning (tune epochs) needs static quantization in the QDQ format")
        if not (90.0 <= self.percentile < 100.0):
            raise ConfigError(f"percentile {self.percentile} must be in [90, 100), e.g. 99.999")
        self.op_types, self.float_outputs = tuple(self.op_types), tuple(self.float_outputs)
        if self.float_outputs and self.format != "QDQ":
            raise ConfigError("float outputs (OpTypesToExcludeOutputQuantization) need the QDQ format")
        if self.mode == "dynamic" and self.activation_type.endswith("16"):
            raise ConfigError("16-bit activations need static quantization")
        if not (0.0 <= self.min_agreement <= 1.0):
            raise ConfigError("min_agreement must be in [0, 1]")

    def as_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> "QuantConfig":
        return replace(self, **changes)

    # --- presets -------------------------------------------------------------------------
    @classmethod
    def default(cls) -> "QuantConfig":
        """The fast recipe on x86 (measured): QDQ, u8 activations, s8 per-channel weights, MinMax.

        Without VNNI (AVX2 only), ORT's U8S8 kernels add pairs of u8*s8 products in int16 (vpmaddubsw),
        which saturates: measured on an AVX2 EPYC, the shared ResNet18's default INT8 agreed with FP32 on
        94.3 % of images, and 99.3 % with 7-bit weights (reduce_range) at the same speed. So the recipe
        takes reduce_range exactly where the CPU lacks VNNI.

        Bias correction (free at run time) removes the mean output shift the rounded weights add: measured on the
        ImageNet EfficientNet-Lite0 in ImageNet mode, agreement with FP32 58.3 % -> 80.3 % with it. GPTQ weight
        rounding (also free at run time, weight_rounding.py) takes it on to 86.0 % (bench/bias_correction.py)."""

        vnni = cpu_has_vnni()
        return cls(name="default", **kernel_types("u8s8", vnni), bias_correction=True, weight_rounding="gptq",
                   description="QDQ, uint8 activations, int8 per-channel weights (GPTQ rounding), MinMax, bias "
                   "correction (ORT's fast "
                   "U8S8 kernels on x86" + ("" if vnni else "; 7-bit weights: this CPU has no VNNI, and 8-bit ones "
                                            "saturate") + ")")

    @classmethod
    def tuned(cls) -> "QuantConfig":
        """The default recipe, then its INT32 biases and activation scales fitted to FP32's outputs on the
        calibration images (output_tuning.py): same graph, same kernels, same speed; minutes of CPU at 224 px.
        Measured on the ImageNet EfficientNet-Lite0 in ImageNet mode: agreement with FP32 85.8 % -> 91.7 %
        (bench/output_tuning.py)."""
        base = cls.default()
        return base.with_(name="tuned", tune_epochs=2, description=base.description + "; INT32 biases and activation "
                          "scales tuned to FP32's outputs (2 epochs over the calibration images)")

    @classmethod
    def seed_lab5(cls) -> "QuantConfig":
        """Seed 001's exact call: QOperator, per-channel, QInt8 weights, MinMax, ORT's default (int8) activations."""
        return cls(name="seed-lab5", format="QOperator", activation_type="int8", weight_type="int8",
                   per_channel=True, method="minmax",
                   description="seed 001 recipe: QOperator, int8 activations (ORT default), int8 per-channel weights, MinMax")

    @classmethod
    def dynamic(cls) -> "QuantConfig":
        """Seed 004's quantize_dynamic: int8 weights, activations quantized at run time."""
        return cls(name="dynamic", mode="dynamic", format="QOperator", activation_type="uint8", weight_type="int8",
                   per_channel=False, description="seed 004 recipe: quantize_dynamic, int8 weights")

    @classmethod
    def per_tensor(cls) -> "QuantConfig":
        """The naive recipe: one scale per weight tensor (hurts depthwise-separable networks), no bias correction.
        (Bias correction rescues much of it: `qdeploy quantize --preset per-tensor --bias-correction`.)"""
        return cls.default().with_(name="per-tensor", per_channel=False, bias_correction=False, weight_rounding="nearest",
                                   description="default recipe with per-tensor weights, nearest rounding, no bias correction (the naive one)")

    @classmethod
    def conv_only(cls) -> "QuantConfig":
        """The default recipe on Conv nodes only: every other op (the style network's decomposed instance
        norms, Resize, the final Sigmoid) stays in FP32."""
        return cls.default().with_(name="conv-only", op_types=("Conv",),
                                   description="default recipe on Conv nodes only (other ops stay FP32)")

    @classmethod
    def conv_inputs(cls) -> "QuantConfig":
        """Conv inputs and weights quantized, Conv outputs left float: the instance norm after each conv of an
        image-to-image network reads full-precision values."""
        return cls.default().with_(name="conv-inputs", op_types=("Conv",), float_outputs=("Conv",),
                                   description="default recipe on Conv inputs and weights; Conv outputs stay FP32")

    @classmethod
    def transformer(cls) -> "QuantConfig":
        """The default recipe on the inputs of the matrix products alone (MatMul, Gemm; per-channel weights), their
        outputs float: LayerNorm, Softmax (it reads the attention scores), GELU, the residual adds and the
        patch-embedding Conv stay FP32. Measured on a CIFAR-10 ViT (AVX2 EPYC, 300 test images, docs/zoo.md): the
        default recipe agreed with FP32 on 93.5 % in ONNX Runtime; this one on 98.7 % in ONNX Runtime and in
        OpenVINO, and with float outputs it was also faster than with quantized ones (0.87 vs 1.11 ms in ORT). The
        patch Conv stays float because OpenVINO 2026.4 runs that QDQ Conv (4x4, stride 4) wrong: quantizing it
        alone gave 100 % agreement in ONNX Runtime and 36 % in OpenVINO, for the same file."""
        return cls.default().with_(name="transformer", op_types=("MatMul", "Gemm"), float_outputs=("MatMul", "Gemm"),
                                   description="default recipe on MatMul/Gemm inputs and weights (their outputs, "
                                   "LayerNorm, Softmax, GELU, adds and the patch Conv stay FP32)")

    @classmethod
    def a16w8(cls) -> "QuantConfig":
        """16-bit activations, 8-bit per-channel weights on Conv nodes: the quality reference of image models."""
        return cls.default().with_(name="a16w8", op_types=("Conv",), **kernel_types("u16s8"),
                                   description="QDQ, uint16 activations, int8 per-channel weights on Conv nodes "
                                   "(no integer kernel on x86: a quality reference, not a speed one)")

    @classmethod
    def entropy(cls) -> "QuantConfig":
        return cls.default().with_(name="entropy", method="entropy", description="default recipe, Entropy calibration")

    @classmethod
    def percentile_(cls) -> "QuantConfig":
        return cls.default().with_(name="percentile", method="percentile",
                                   description="default recipe, Percentile (99.999) calibration")


@dataclass
class TorchQuantConfig:
    name: str = "pt-ptq"
    method: str = "ptq"            # ptq | qat
    backend: str = "x86"
    observer: str = "default"      # default (x86 qconfig) | pot (power-of-two scales)
    pot_scheme: str = "affine"     # activations with pot: affine | symmetric
    max_shift: int = 8
    qat_epochs: int = 1
    qat_lr: float = 1e-4
    qat_label_smoothing: float = 0.1  # as the FP32 training; without it QAT over-fits and loses accuracy
    qat_erasing_p: float = 0.5        # cutout-like erasing, as the FP32 training
    qat_distill: float = 0.7          # weight of distillation from the FP32 model (0 = labels only): keeps
    qat_temperature: float = 2.0      # the fine-tuned INT8 model close to FP32 instead of drifting
    qat_batch_size: int = 64
    qat_train_limit: int | None = 2000  # CPU-sized default; None = the whole training split
    freeze_observer_epoch: int = 1  # observers fixed from this epoch on (0-based) ...
    # BN statistics frozen from the start: the checkpoint's were estimated on the full training set,
    # and re-estimating them on a fine-tuning subset moved the model away from FP32 (measured: QAT
    # with BN updates lost 0.2-0.4 pt against PTQ on the shared ResNet18).
    freeze_bn_epoch: int = 0
    device: str = "auto"
    # QAT's activation grids: "ptq" = PTQ's calibrated ranges, kept fixed (QAT starts at the PTQ model);
    # "observe" = moving-average min/max observed on augmented training batches (PyTorch's default recipe)
    qat_init: str = "ptq"
    qat_val_size: int = 1000        # held-out training images that choose the best epoch (0 = last epoch)
    qat_from: str | None = None     # converted INT8 weights from a QAT run elsewhere (e.g. a GPU machine)
    min_agreement: float = 0.80
    description: str = ""

    def __post_init__(self):
        if self.method not in ("ptq", "qat"):
            raise ConfigError(f"method '{self.method}' is unknown; use ptq or qat")
        if self.observer not in ("default", "pot") or self.pot_scheme not in ("affine", "symmetric"):
            raise ConfigError("observer must be default|pot and pot_scheme affine|symmetric")
        if not 1 <= self.max_shift <= 31:
            raise ConfigError(f"max_shift {self.max_shift} must be in 1..31 (seed 002 uses 8)")
        if self.qat_init not in ("ptq", "observe"):
            raise ConfigError(f"qat_init '{self.qat_init}' is unknown; use ptq or observe")
        if self.qat_val_size < 0:
            raise ConfigError(f"qat_val_size {self.qat_val_size} must be >= 0")
        if self.qat_epochs < 1 or self.qat_lr <= 0:
            raise ConfigError("QAT needs epochs >= 1 and a positive learning rate")

    def as_dict(self):
        return asdict(self)

    def with_(self, **kw) -> "TorchQuantConfig":
        return replace(self, **kw)


@dataclass
class NncfConfig:
    """OpenVINO's own post-training quantizer (nncf.quantize) on the FP32 model, calibrated on the run's images:
    the anchor every report can show beside qdeploy's recipes. Writes OpenVINO IR (.xml + .bin) run by the
    openvino-cpu target."""

    name: str = "nncf"
    preset: str = "performance"          # performance (symmetric activations) | mixed
    fast_bias_correction: bool = True
    # auto: NNCF's transformer model type (its attention patterns, SmoothQuant) when the graph has attention
    # (a Softmax over a MatMul of two activations), else its default; transformer | cnn force one
    model_type: str = "auto"
    min_agreement: float = 0.80
    target: str = OPENVINO_CPU
    suffix: str = ".xml"
    description: str = "OpenVINO NNCF post-training INT8 (nncf.quantize), same calibration images"

    def __post_init__(self):
        if self.preset not in ("performance", "mixed"):
            raise ConfigError(f"nncf preset '{self.preset}' is unknown; use performance or mixed")
        if self.model_type not in ("auto", "transformer", "cnn"):
            raise ConfigError(f"nncf model type '{self.model_type}' is unknown; use auto, transformer or cnn")

    def as_dict(self):
        return asdict(self)


TORCH_PRESETS = {
    "pt-ptq": lambda: TorchQuantConfig(name="pt-ptq", description="PyTorch eager PTQ, x86 backend, per-channel weights"),
    "pt-qat": lambda: TorchQuantConfig(name="pt-qat", method="qat",
                                       description="PyTorch eager QAT fine-tuned from the FP32 checkpoint"),
    "pot": lambda: TorchQuantConfig(name="pot", observer="pot",
                                    description="PyTorch PTQ with power-of-two scales (seed 002), max shift 8"),
}


@dataclass
class AutoConfig:
    max_drop_pt: float | None = 0.3       # allowed top-1 drop in points on the validation split ...
    max_rel_drop: float | None = None     # ... or as a fraction of FP32 top-1 (0.01 = 1 %)
    val_size: int = 2000
    # the speed screen scores its candidates (those not dominated on speed) on this many validation images, a
    # class-balanced prefix: enough to rank kernels and catch a saturating one; the kept ones are scored on all
    screen_images: int = 500
    formats: tuple[str, ...] = ("QDQ", "QOperator")
    kernels: tuple[str, ...] = ("u8s8", "s8s8", "u8u8")  # integer kernels screened (see KERNELS)
    methods: tuple[str, ...] = ("minmax", "entropy", "percentile")
    per_channel: tuple[bool, ...] = (True, False)
    # calibration sizes tried, as fractions of the run's --calib-size (which is the largest): the sweep
    # is relative to what the user asked for, and search.json records the sizes used
    calib_fractions: tuple[float, ...] = (1 / 3, 1.0)
    keep_most_accurate: bool = True       # the speed screen keeps the fastest kernel and also the most accurate
    dominated_ratio: float = 1.5          # slower than this x the fastest INT8 -> dropped
    max_fallback_steps: int = 8
    # node sensitivity (the report's "most sensitive nodes" and its plot) even when a candidate meets the budget;
    # without a pick it is always measured (the fallback follows it)
    explain: bool = False
    tensor_sens_images: int = 64          # validation images each activation's end-to-end cost is measured on
    bias_correction: bool = True          # every static candidate bias-corrected (QuantConfig.bias_correction)
    weight_rounding: str = "gptq"         # and its weights rounded so (QuantConfig.weight_rounding)
    # the speed screen builds its candidates with nearest rounding and no bias correction (the same ops, so the
    # same latency) and rebuilds only the ones it keeps with the full recipe: GPTQ and bias correction are most of
    # a candidate's build time (8.8 + 3.6 s of 18 s for the shared ResNet18 here)
    cheap_screen: bool = True             # screen builds: nearest rounding, no bias correction; kept ones rebuilt
    # the calibration sweep raced the same way: every point built cheap and ranked, only the winner rebuilt in full
    race_sweep: bool = True
    # classifiers, when nothing meets the budget after the fallback: the closest candidates faster than FP32 (up to
    # tune_candidates, QDQ ones only) output-tuned for tune_epochs and measured again (0 = no tuning stage)
    tune_epochs: int = 2
    tune_candidates: int = 2
    bench_runs: int = 60
    collapse_agreement: float = 0.80
    memorized_at: float = MEMORIZED_AT    # FP32 validation top-1 at/above this: the model has seen these images
    # image-to-image budget (instead of a top-1 drop): mean PSNR and worst-image PSNR against FP32's outputs
    min_psnr: float | None = None
    min_worst_psnr: float = 27.0          # applies with min_psnr
    min_ssim: float | None = None         # mean SSIM floor, with or instead of min_psnr
    image_val_size: int = 6               # validation photos for an image-to-image search (each is 512 px or so)
    # (quantized op types, op types with float outputs) screened for images; () = every op ORT quantizes
    image_op_types: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (((), ()), (("Conv",), ()),
                                                                          (("Conv",), ("Conv",)))
    name: str = "auto"
    # targets the search scores and times every candidate on (the run's --targets); the pick is the fastest
    # (candidate, target) within the budget, and the record names the runtime to deploy with
    targets: tuple[str, ...] = (DEFAULT_TARGET,)

    @property
    def image(self) -> bool:
        return self.min_psnr is not None or self.min_ssim is not None

    def __post_init__(self):
        image_budget = self.min_psnr if self.min_psnr is not None else self.min_ssim
        budgets = [b for b in (self.max_drop_pt, self.max_rel_drop, image_budget) if b is not None]
        if len(budgets) != 1:
            raise ConfigError("give exactly one budget: --max-drop (points) or --max-rel-drop (fraction) for a "
                              "classifier, --min-psnr (dB) for an image-to-image model")
        if (self.max_drop_pt is not None and self.max_drop_pt < 0) or (self.max_rel_drop is not None and self.max_rel_drop < 0):
            raise ConfigError("the accuracy budget must be >= 0")
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise ConfigError(f"auto weight rounding '{self.weight_rounding}' is unknown; use one of "
                              f"{', '.join(WEIGHT_ROUNDINGS)}")
        if self.min_ssim is not None and not 0 < self.min_ssim <= 1:
            raise ConfigError(f"--min-ssim {self.min_ssim} must be in (0, 1], e.g. 0.95")
        if self.min_psnr is not None and not (0 < self.min_psnr <= 100 and 0 < self.min_worst_psnr <= 100):
            raise ConfigError(f"--min-psnr {self.min_psnr} / --min-worst-psnr {self.min_worst_psnr} must be in (0, 100] dB")
        if self.image and self.val_size < 2:
            raise ConfigError(f"validation size {self.val_size} is too small; use >= 2 images")
        if self.screen_images < 50:
            raise ConfigError(f"screen images {self.screen_images} is too few to rank kernels; use >= 50")
        if not self.image and self.val_size < 50:
            raise ConfigError(f"validation size {self.val_size} is too small to measure a budget; use >= 500")
        if self.tune_epochs < 0 or self.tune_candidates < 0:
            raise ConfigError("auto tune epochs / candidates must be >= 0 (0: no tuning stage)")
        if self.max_fallback_steps < 0:
            raise ConfigError(f"--auto-fallback-steps {self.max_fallback_steps} must be >= 0 (0: no fallback)")
        for k in self.kernels:
            kernel_types(k, vnni=True)  # validates the name
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(f"auto calibration methods {', '.join(bad) or '(none)'} not usable; give --auto-methods "
                              f"a comma list of {', '.join(METHODS)}")
        if not self.calib_fractions or not all(0 < f <= 1 for f in self.calib_fractions):
            raise ConfigError("auto calibration fractions must be in (0, 1], e.g. 0.33,1")

    @classmethod
    def for_images(cls, min_psnr: float | None, min_worst_psnr: float | None = None, val_size: int | None = None,
                   methods: tuple[str, ...] | None = None, min_ssim: float | None = None) -> "AutoConfig":
        """The image-to-image search: PSNR floors as the budget, a few validation photos, the 16-bit activation
        reference beside the 8-bit kernels, MinMax unless asked (histograms of 512-px activations are slow),
        shorter latency runs (a 512-px image is 100x a CIFAR one)."""
        d = cls(max_drop_pt=None, min_psnr=30.0)
        return cls(max_drop_pt=None, min_psnr=min_psnr, min_ssim=min_ssim,
                   min_worst_psnr=min_worst_psnr or d.min_worst_psnr,
                   val_size=val_size or d.image_val_size, kernels=("u8s8", "u8u8", "u16s8"),
                   methods=methods or ("minmax",), bench_runs=20)

    def calib_sizes(self, calib_size: int) -> tuple[int, ...]:
        return tuple(sorted({max(1, round(f * calib_size)) for f in self.calib_fractions}))

    def budget_pt(self, fp32_top1: float) -> float:
        return self.max_drop_pt if self.max_drop_pt is not None else 100 * fp32_top1 * self.max_rel_drop


PRESETS = {
    "default": QuantConfig.default,
    "seed-lab5": QuantConfig.seed_lab5,
    "tuned": QuantConfig.tuned,
    "dynamic": QuantConfig.dynamic,
    "per-tensor": QuantConfig.per_tensor,
    "conv-only": QuantConfig.conv_only,
    "conv-inputs": QuantConfig.conv_inputs,
    "transformer": QuantConfig.transformer,
    "a16w8": QuantConfig.a16w8,
    "entropy": QuantConfig.entropy,
    "percentile": QuantConfig.percentile_,
}


def preset(name: str) -> QuantConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown quantization preset '{name}'; use one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def _torch(name: str):
    def make(overrides: dict):
        # None = keep the preset; bad values raise ConfigError here, before any heavy work
        return TORCH_PRESETS[name]().with_(**{k: v for k, v in overrides.items() if v is not None})
    return make


# Every name --variants accepts -> a factory (torch overrides) -> that scheme's config.
VARIANTS = {**{name: (lambda overrides, f=f: f()) for name, f in PRESETS.items()},
            **{name: _torch(name) for name in TORCH_PRESETS},
            "nncf": lambda overrides: NncfConfig()}
TORCH_VARIANTS = tuple(TORCH_PRESETS)


def parse_variants(text) -> list[str]:
    names = [v.strip() for v in (text.split(",") if isinstance(text, str) else text) if v.strip()]
    if "all" in names:
        return list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)} or 'all'")
    return list(dict.fromkeys(names))


def variant_config(name: str, torch_overrides: dict | None = None):
    return VARIANTS[name](torch_overrides or {})
