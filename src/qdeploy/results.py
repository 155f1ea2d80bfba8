"""Typed results: one VariantResult per evaluated variant, one RunResult per run, saved as report.json
with a schema version. The report, the app, auto search and the CLI read these types, not dict keys."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .artifacts import write_json
from .bench import BenchResult
from .errors import ModelFileError
from .recipes import AutoConfig, NncfConfig, QuantConfig, TorchQuantConfig
from .records import RecordError, from_json
from .targets import DEFAULT_TARGET
from .tasks import DEFAULT_TASK, QuantCheck, get_task
from .tasks.classification import Metrics, Paired
from .tasks.image import ImageMetrics

SCHEMA_VERSION = 5   # 5: TargetResult.reference (FP32 on a target's verification sample) and .unsupported, Environment.isa; 4: VariantResult.config typed (a recipe's config dataclass; FP32: null), recommended a Deployment
# 3: VariantResult.extra -> typed `facts`; check, paired, data, environment, studies typed


@dataclass
class NodeError:
    """One quantized node's cost (quantize/sensitivity.node_sensitivity): the output's relative error with this
    node quantized, and what it adds over what its input already carried."""

    node: str
    op: str
    kind: str
    tensor: str
    output_rel_error: float
    added_error: float


@dataclass
class KindError:
    """Node errors summed by kind of node (depthwise, pointwise, dense, ...)."""

    kind: str
    nodes: int
    mean_added_error: float
    max_added_error: float


@dataclass
class TensorError:
    """One activation quantized alone in the FP32 graph: the output's relative error, top-1 flips (classifiers)."""

    tensor: str
    kind: str
    output_rel_error: float
    flips: float | None = None


@dataclass
class Diagnosis:
    """Why a variant collapsed, on a few of its verification images (empty lists: no node-by-node comparison)."""

    images: int = 0
    by_kind: list[KindError] = field(default_factory=list)
    worst: list[NodeError] = field(default_factory=list)
    error: str | None = None           # the diagnosis itself failed (never hides the collapse)


@dataclass
class Parity:
    """A PyTorch INT8 model's ONNX export against the model itself (quantize/torch_eager.export_parity)."""

    agreement: float | None
    rel_l2: float
    verified_on: int
    rule: str                                  # agreement | rel-l2 (near-tied logits: within a share of ...
    int8_vs_fp32_rel_l2: float | None = None   # ... the INT8 model's own distance from FP32)


@dataclass
class PotScales:
    """A power-of-two variant's scales: every one an exact power of two, or the file is not kept."""

    count: int
    all_power_of_two: bool
    min_exp: int
    max_exp: int


@dataclass
class QatEpoch:
    """One row of QAT's history; epoch 0 is the PTQ starting point (no training figures)."""

    epoch: int
    note: str | None = None
    train_loss: float | None = None
    train_acc: float | None = None
    sec: float | None = None
    images: int | None = None
    device: str | None = None
    val_top1: float | None = None
    val_loss: float | None = None
    val_agreement: float | None = None
    val_kl_fp32: float | None = None


@dataclass
class TargetPick:
    """What an auto search found on one target."""

    chosen: str
    p50_ms: float
    drop_pt: float | None = None


@dataclass
class SearchSummary:
    """The part of an auto search's record a run's report carries (every candidate is in search.json)."""

    metric: str                          # drop | disagreement | psnr
    met_budget: bool
    candidates: int
    seconds: float
    budget_pt: float | None = None
    chosen: str | None = None
    chosen_target: str | None = None
    chosen_drop_pt: float | None = None
    chosen_p50_ms: float | None = None
    chosen_psnr: float | None = None
    chosen_psnr_min: float | None = None
    fp32_nodes_kept: int | None = None
    message: str | None = None
    fp32_val_top1: float | None = None
    label_free: bool | None = None
    min_psnr: float | None = None
    min_worst_psnr: float | None = None
    min_ssim: float | None = None
    floors: str | None = None
    fp32_p50_ms: float | None = None
    val_images: int | None = None
    calib_pool: int | None = None
    calib_sizes: list[int] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    per_target: dict[str, TargetPick | None] = field(default_factory=dict)
    top_sensitive: list[NodeError] = field(default_factory=list)
    top_tensors: list[TensorError] = field(default_factory=list)
    sensitivity_by_kind: list[KindError] = field(default_factory=list)


@dataclass
class VariantFacts:
    """What a recipe knows about the file it built, beyond the shared check: each handler fills its own fields."""

    ir_bytes: int | None = None                # OpenVINO IR (nncf): .xml + .bin
    calibration_items: int | None = None       # nncf
    export_parity: Parity | None = None        # PyTorch recipes: the ONNX file is the PyTorch INT8 model ...
    vs_fp32: QuantCheck | None = None          # ... and passes the collapse guard against FP32
    qat_history: list[QatEpoch] = field(default_factory=list)
    qat_epoch: int | None = None               # the epoch QAT returned (0 = the PTQ start)
    vs_ptq: dict[str, Paired] = field(default_factory=dict)  # pt-qat against pt-ptq, per runtime
    pot_scales: PotScales | None = None
    search: SearchSummary | None = None        # auto
    diagnosis: Diagnosis | None = None         # a refused variant: where its error comes from


@dataclass
class TorchResult:
    """A PyTorch-native INT8 model (pt-ptq, pt-qat, pot) measured in PyTorch itself."""

    metrics: Metrics | None = None
    bench: BenchResult | None = None
    size_bytes: int | None = None


@dataclass
class TargetResult:
    """The same model file on another target (e.g. OpenVINO running the ONNX file), measured in the same run."""

    target: str
    metrics: Metrics | ImageMetrics | None = None
    # FP32's metrics (ONNX Runtime) on exactly the images `metrics` counts, when the target was verified on a sample
    # of the evaluation set (EvalConfig.verify_images): the gate compares the two; None: the whole set was used
    reference: Metrics | ImageMetrics | None = None
    bench: BenchResult | None = None
    load_s: float | None = None        # opening the file (parse + compile) ...
    first_ms: float | None = None      # ... and the first, cold inference at batch 1
    runtime: str | None = None
    unsupported: str | None = None     # why this runtime cannot run the file (e.g. OpenVINO and a QOperator graph)


@dataclass(frozen=True)
class Deployment:
    """What to ship: a variant's file on a target, as the recommendation names it."""

    variant: str       # the variant's name (its row in report.json)
    target: str        # the runtime to run it with
    file: str          # the file to deploy, beside report.json
    label: str         # how the run's tables name it: "default", or "default@openvino-cpu" on another target

    def __str__(self) -> str:
        return self.label


# the config of any registered recipe (quantize.base's handlers); read back by its fields (records.from_json)
RecipeConfig = QuantConfig | TorchQuantConfig | NncfConfig | AutoConfig


@dataclass
class VariantResult:
    """One variant: its file, how it was checked, and what it measured on the run's first target."""

    name: str                       # fp32, default, auto, pt-qat, ...
    kind: str                       # fp32 | int8
    file: str                       # beside report.json (ONNX, OpenVINO IR or a compiled form)
    status: str = "ok"              # ok | failed (never written under its final name)
    error: str | None = None        # why it was refused (one line)
    target: str = DEFAULT_TARGET    # where the row's metrics and bench were measured
    config: RecipeConfig | None = None   # the recipe's config as it ran (qdeploy/recipes.py); None for FP32
    check: QuantCheck | None = None  # verification against FP32 before the file got its name (or why it was refused)
    metrics: Metrics | ImageMetrics | None = None   # the run's task decides which
    bench: BenchResult | None = None   # latency and throughput on `target`
    torch: TorchResult | None = None   # PyTorch-native recipes: the INT8 model measured in PyTorch
    on: dict[str, TargetResult] = field(default_factory=dict)  # other targets, by name (ort-cpu is the row itself)
    facts: VariantFacts = field(default_factory=VariantFacts)   # what its recipe knows beyond the check

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def measured(self) -> bool:
        return self.ok and self.metrics is not None and self.bench is not None

    @classmethod
    def failed(cls, name: str, file: str, error: str, check: QuantCheck | None = None,
               facts: VariantFacts | None = None, config: RecipeConfig | None = None) -> "VariantResult":
        return cls(name=name, kind="int8", file=file, status="failed", error=error, check=check,
                   facts=facts or VariantFacts(), config=config)


@dataclass
class StudyRow:
    """One model of the PowerDifference study against the original FP32 output, and its batch-1 latency."""

    file: str
    psnr: float | None
    psnr_min: float | None
    ssim: float | None
    max_abs_diff: float | None
    numpy_calls: int
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class PowerDifferenceStudy:
    """Seed 003's custom operator: every (x - y)^2 as one PowerDifference node, native and NumPy, FP32 and INT8."""

    images: int
    rewritten_nodes: dict[str, int]      # fp32 / int8 -> Sub->Pow pairs rewritten
    rows: dict[str, StudyRow]            # model -> its row, "fp32" (the reference) first
    native: str                          # how each implementation runs
    numpy: str
    int8_file: str | None = None
    int8_variant: str | None = None      # the best-PSNR INT8 variant that kept its Sub->Pow pairs


@dataclass
class RunData:
    """What a run was calibrated and evaluated on."""

    root: str | None = None
    calib_source: str | None = None
    calib_images: int = 0
    eval_source: str | None = None
    eval_images: int = 0
    labelled: bool = True
    preprocess: str | None = None    # the PreprocessSpec as JSON


@dataclass
class Environment:
    """The machine and runtime the latencies were measured on."""

    cpu: str | None = None
    threads: int | None = None
    runtime: str | None = None
    provider: str | None = None
    runs: int | None = None
    isa: list[str] | None = None    # the CPU's recipe-deciding flags (targets.ort.ISA_FLAGS it has); None: unrecorded

    def isa_summary(self) -> str:
        """'avx2, avx512f; VNNI yes, BF16 no, AMX no' (or '' when unrecorded)."""
        if self.isa is None:
            return ""
        has = set(self.isa)
        yes = lambda *f: "yes" if has & set(f) else "no"  # noqa: E731
        return (f"{', '.join(f for f in self.isa if f in ('avx2', 'avx512f')) or 'no AVX2'}; "
                f"VNNI {yes('avx512_vnni', 'avx_vnni', 'amx_int8')}, BF16 {yes('avx512_bf16', 'amx_bf16')}, "
                f"AMX {yes('amx_bf16', 'amx_int8')}")


@dataclass
class RunResult:
    """One `qdeploy run`: every variant measured, what to deploy, what it was measured on."""

    variants: list[VariantResult]   # FP32 first, then each INT8 variant (refused ones too)
    classes: list[str]              # class names in output order ([] for image-to-image)
    task: str = DEFAULT_TASK        # a name in tasks.TASKS
    recommended: Deployment | None = None  # the fastest verified (variant, target) within the gate
    max_drop_pt: float = 1.0        # the classification gate: top-1 (or agreement) drop in points
    min_psnr: float | None = None   # image-to-image: the recommendation's quality floor (dB vs FP32)
    data: RunData = field(default_factory=RunData)
    environment: Environment = field(default_factory=Environment)
    power_difference: PowerDifferenceStudy | None = None   # --power-difference: seed 003's study
    schema_version: int = SCHEMA_VERSION   # this file's layout (docs/report-schema.md)

    def get(self, name: str) -> VariantResult | None:
        return next((v for v in self.variants if v.name == name), None)

    @property
    def fp32(self) -> VariantResult | None:
        return next((v for v in self.variants if v.kind == "fp32" and v.measured), None)

    @property
    def labelled(self) -> bool:
        return self.fp32 is not None and getattr(self.fp32.metrics, "top1", None) is not None

    def gate_failures(self) -> dict[tuple[str, str], str]:
        """(variant, target) -> why that row is outside the run's gate (see gate_failures below)."""
        return gate_failures(self.variants, get_task(self.task), get_task(self.task).gate(self.max_drop_pt, self.min_psnr),
                             self.labelled)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict, source: str = "report.json") -> "RunResult":
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ModelFileError(f"{source} was written by {'an older' if (version or 0) < SCHEMA_VERSION else 'a newer'} "
                                 f"qdeploy (report schema {version or 1}, this one reads {SCHEMA_VERSION}); re-run "
                                 "'qdeploy run' to rebuild it")
        task = d.get("task", DEFAULT_TASK)
        try:
            run = from_json(cls, {**d, "variants": []}, where="report")
            run.variants = [_variant(v, task) for v in d["variants"]]   # metrics by the run's task
            return run
        except (RecordError, TypeError) as exc:
            raise ModelFileError(f"{source} does not match report schema {SCHEMA_VERSION} ({exc}); re-run "
                                 "'qdeploy run' to rebuild it") from exc

    @classmethod
    def load(cls, path: str | Path) -> "RunResult":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"cannot read {path} ({type(exc).__name__}); re-run 'qdeploy run'") from exc
        return cls.from_dict(data, source=str(path))


def _variant(d: dict, task: str = DEFAULT_TASK) -> VariantResult:
    """A variant as report.json holds it; metrics by the run's task (a classifier's or an image model's)."""
    metrics_type = get_task(task).metrics_type
    on = {name: {**t, "metrics": None} for name, t in (d.get("on") or {}).items()}
    v = from_json(VariantResult, {**d, "metrics": None, "on": on}, where=f"variant {d.get('name')}")
    v.metrics = metrics_type.from_dict(d["metrics"]) if d.get("metrics") else None
    for name, t in (d.get("on") or {}).items():
        v.on[name].metrics = metrics_type.from_dict(t["metrics"]) if t.get("metrics") else None
    return v


def gate_failures(variants: list[VariantResult], task, gate, labelled: bool = True) -> dict[tuple[str, str], str]:
    """(variant, target) -> why that row is outside the gate: the one place the rule lives. Each row is judged
    against ONNX Runtime's FP32 on the same images (a sampled target: TargetResult.reference). FP32 on ONNX Runtime
    is the reference itself; every other row, FP32 on another runtime included, is judged. A failed row is never
    recommended (pipeline.recommend excludes these rows) nor bundled for that runtime; gate None: no gate."""
    fp32 = next((v for v in variants if v.kind == "fp32" and v.measured), None)
    if fp32 is None or gate is None:
        return {}
    rows = [(v, v.target, v.metrics, None) for v in variants if v.measured and v is not fp32]
    rows += [(v, t, r.metrics, r.reference) for v in variants if v.measured
             for t, r in v.on.items() if r.metrics is not None]
    out = {}
    for v, target, m, ref in rows:
        ref = ref or fp32.metrics
        if not task.acceptable(m, ref, gate):
            out[(v.name, target)] = (f"{task.describe(m)} against FP32's {task.describe(ref)} on the same "
                                     f"{m.n} images, where a deployment {task.rule(gate, labelled)}")
    return out
