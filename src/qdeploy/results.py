"""Typed results: one VariantResult per evaluated variant, one RunResult per run, saved as report.json
with a schema version. The report, the app, auto search and the CLI read these types, not dict keys."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .artifacts import write_json
from .bench import BenchResult
from .errors import ModelFileError
from .targets import DEFAULT_TARGET
from .tasks import DEFAULT_TASK, get_task
from .tasks.classification import Metrics
from .tasks.image import ImageMetrics

SCHEMA_VERSION = 2


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
    bench: BenchResult | None = None
    load_s: float | None = None        # opening the file (parse + compile) ...
    first_ms: float | None = None      # ... and the first, cold inference at batch 1
    runtime: str | None = None


@dataclass
class VariantResult:
    name: str
    kind: str                       # fp32 | int8
    file: str
    status: str = "ok"              # ok | failed (never written under its final name)
    error: str | None = None
    target: str = DEFAULT_TARGET
    config: dict = field(default_factory=dict)
    check: dict | None = None       # verification against FP32 before the file got its name
    metrics: Metrics | ImageMetrics | None = None   # the run's task decides which
    bench: BenchResult | None = None
    torch: TorchResult | None = None
    on: dict[str, TargetResult] = field(default_factory=dict)  # other targets, by name (ort-cpu is the row itself)
    extra: dict = field(default_factory=dict)  # scheme facts: qat_history, qat_epoch, vs_ptq, pot_scales, search

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def measured(self) -> bool:
        return self.ok and self.metrics is not None and self.bench is not None

    @classmethod
    def failed(cls, name: str, file: str, error: str, **extra) -> "VariantResult":
        return cls(name=name, kind="int8", file=file, status="failed", error=error, extra=extra)


@dataclass
class RunResult:
    variants: list[VariantResult]
    classes: list[str]
    task: str = DEFAULT_TASK
    recommended: str | None = None
    max_drop_pt: float = 1.0
    min_psnr: float | None = None   # image-to-image: the recommendation's quality floor (dB vs FP32)
    data: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    studies: dict = field(default_factory=dict)   # e.g. power_difference: seed 003's custom-operator comparison
    schema_version: int = SCHEMA_VERSION

    def get(self, name: str) -> VariantResult | None:
        return next((v for v in self.variants if v.name == name), None)

    @property
    def fp32(self) -> VariantResult | None:
        return next((v for v in self.variants if v.kind == "fp32" and v.measured), None)

    @property
    def labelled(self) -> bool:
        return self.fp32 is not None and getattr(self.fp32.metrics, "top1", None) is not None

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
        return cls(**{**d, "variants": [_variant(v, task) for v in d["variants"]]})

    @classmethod
    def load(cls, path: str | Path) -> "RunResult":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"cannot read {path} ({type(exc).__name__}); re-run 'qdeploy run'") from exc
        return cls.from_dict(data, source=str(path))


def _bench(d: dict | None) -> BenchResult | None:
    if d is None:
        return None
    return BenchResult(**{**d, "throughput": {int(k): v for k, v in d.get("throughput", {}).items()}})


def _variant(d: dict, task: str = DEFAULT_TASK) -> VariantResult:
    known = {f.name for f in fields(VariantResult)}
    v = VariantResult(**{k: d[k] for k in known if k in d})
    v.metrics = get_task(task).metrics_type.from_dict(d["metrics"]) if d.get("metrics") else None
    v.bench = _bench(d.get("bench"))
    for name, t in (d.get("on") or {}).items():
        v.on[name] = TargetResult(target=t["target"], load_s=t.get("load_s"), first_ms=t.get("first_ms"),
                                  runtime=t.get("runtime"), bench=_bench(t.get("bench")),
                                  metrics=get_task(task).metrics_type.from_dict(t["metrics"]) if t.get("metrics") else None)
    if d.get("torch"):
        t = d["torch"]
        v.torch = TorchResult(metrics=Metrics.from_dict(t["metrics"]) if t.get("metrics") else None,
                              bench=_bench(t.get("bench")), size_bytes=t.get("size_bytes"))
    return v
