"""Latency percentiles and throughput of ONNX models, all variants in one process."""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from .artifacts import model_bytes
from .data import batch_for
from .errors import ConfigError
from .targets import open_session


@dataclass
class BenchConfig:
    warmup: int = 20
    runs: int = 200                 # timed batch-1 runs for the latency percentiles
    # None: 1 and 32, and the batch evaluation uses at this input size (data.batch_for) where it is smaller: 1/32 at
    # 32 px, 1/8/32 at 224 px (a 256-image throughput point at 224 px took a ResNet-20 run to 7.7 GB)
    batch_sizes: tuple[int, ...] | None = None
    # a throughput point runs until it is stable: at least min_seconds and min_iters batches, then until the 95 %
    # interval of its rate is within rel_ci of it, or max_seconds have passed (max_seconds wins over min_seconds)
    min_seconds: float = 0.3
    min_iters: int = 3
    rel_ci: float = 0.02
    max_seconds: float = 2.0
    threads: int | None = None      # None: ONNX Runtime's default (all physical cores)

    def __post_init__(self):
        if self.runs < 10 or self.warmup < 0:
            raise ConfigError("bench needs runs >= 10 and warmup >= 0 (defaults: 200 runs after 20 warm-up)")
        if self.min_seconds < 0 or self.min_iters < 1 or self.rel_ci <= 0:
            raise ConfigError("bench needs min_seconds >= 0, min_iters >= 1 and rel_ci > 0")
        if self.batch_sizes is None:
            return
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError("batch sizes must be positive integers, e.g. 1,32,256")


@dataclass
class BenchResult:
    name: str
    size_bytes: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    runs: int
    throughput: dict[int, float] = field(default_factory=dict)  # batch size -> images/s
    threads: int = 0
    runtime: str = ""
    provider: str = ""

    def as_dict(self):
        return asdict(self)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _latencies(fns: dict, warmup: int, runs: int, chunk: int = 50, rewarm: int = 10, settle: float = 0.05) -> dict[str, np.ndarray]:
    """Batch-1 latencies, interleaved in chunks across models so machine noise hits all of them alike.

    Each ONNX Runtime session owns a thread pool whose threads spin after a run; right after a switch
    those spinning threads steal the cores (measured here: FP32 p50 doubled with 10-run chunks), so
    every chunk starts with `rewarm` untimed runs. Between chunks the process idles `settle` seconds so the
    previous runtime's pool threads (ORT's spin, OpenVINO's TBB workers) have parked: without it, the OpenVINO
    row timed right after an ORT row read 1.17 ms and the same network's next OpenVINO row 0.90 ms; with 50 ms,
    1.06 and 1.03 (ResNet-20, 2 cores).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    while len(next(iter(times.values()))) < runs:
        for k, fn in fns.items():
            time.sleep(settle)
            for _ in range(rewarm):
                fn()
            for _ in range(min(chunk, runs - len(times[k]))):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: np.asarray(v) * 1e3 for k, v in times.items()}


def stable(times: list[float], rel_ci: float) -> bool:
    """Whether the mean of these per-batch times is known to within rel_ci (the 95 % interval's half-width over the
    mean); one time cannot say, so it is taken as it is."""
    if len(times) < 2:
        return True
    t = np.asarray(times)
    return 1.96 * t.std(ddof=1) / np.sqrt(len(t)) <= rel_ci * t.mean()


def _throughput(fn, batch: int, cfg: BenchConfig) -> float:
    """Images/s at `batch`: after one warm-up batch, batches until the rate is stable (BenchConfig) or
    max_seconds."""
    fn()  # warm-up at this shape
    times, t0 = [], time.perf_counter()
    while True:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        spent = time.perf_counter() - t0
        if len(times) >= cfg.min_iters and ((spent >= cfg.min_seconds and stable(times, cfg.rel_ci))
                                            or spent >= cfg.max_seconds):
            return batch * len(times) / spent


@dataclass
class Runner:
    """Something to time that is not an ONNX file: e.g. a PyTorch INT8 model in the same process."""

    fn: object            # callable(x: np.ndarray) -> anything
    size_bytes: int
    runtime: str
    provider: str = "CPU"
    threads: int = 0


def session_runner(path, threads: int | None = None, target: str | None = None) -> Runner:
    """A model file opened on a target (default: ONNX Runtime CPU)."""

    s = open_session(path, threads, target=target)
    return Runner(fn=s.run, size_bytes=model_bytes(path), runtime=s.runtime, provider=s.provider,
                  threads=s.threads)


def torch_runner(model, size_bytes: int, threads: int | None = None) -> Runner:
    import torch

    if threads:
        torch.set_num_threads(threads)

    def fn(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    return Runner(fn=fn, size_bytes=size_bytes, runtime=f"torch {torch.__version__} ({torch.backends.quantized.engine})",
                  threads=torch.get_num_threads())


def default_batches(size: int) -> tuple[int, ...]:
    # batch 32 is a throughput point up to 224 px; above that it is minutes of input per iteration. Evaluation's own
    # batch is a point where it is smaller than 32; a larger one (256 at 32 px) adds seconds per model and little news
    evaluation = batch_for(size)
    return tuple(sorted({1} | ({32} if size <= 256 else set()) | ({evaluation} if evaluation < 32 or size > 256
                                                                    else set())))


def benchmark_many(models: dict[str, "str | Path | Runner"], sample: np.ndarray, cfg: BenchConfig | None = None
                   ) -> dict[str, BenchResult]:
    """Benchmark several models in one process: latency interleaved, throughput per batch size.

    Values are ONNX paths (run in ONNX Runtime) or Runners (e.g. PyTorch INT8 models).
    """
    cfg = cfg or BenchConfig()
    runners = {k: v if isinstance(v, Runner) else session_runner(v, cfg.threads) for k, v in models.items()}
    x1 = np.ascontiguousarray(sample[:1])
    lat = _latencies({k: (lambda r=r: r.fn(x1)) for k, r in runners.items()}, cfg.warmup, cfg.runs)
    tput = {k: {} for k in runners}
    batches = cfg.batch_sizes or default_batches(sample.shape[-1])
    inputs = {b: np.ascontiguousarray(np.resize(sample, (b,) + sample.shape[1:])) for b in batches}
    # Throughput one model at a time, each ONNX file in a session of its own that is closed afterwards:
    # an ORT session keeps the arena its largest batch needed, and five EfficientNet-Lite0 sessions that
    # had each run a 32-image batch at 224 px held 2.7 GB between them.
    for k, model in models.items():
        r = runners[k] if isinstance(model, Runner) else session_runner(model, cfg.threads)
        tput[k] = {b: _throughput(partial(r.fn, xb), b, cfg) for b, xb in inputs.items()}
        del r
    return {k: BenchResult(name=k, size_bytes=r.size_bytes, p50_ms=float(np.percentile(lat[k], 50)),
                           p90_ms=float(np.percentile(lat[k], 90)), p99_ms=float(np.percentile(lat[k], 99)),
                           mean_ms=float(lat[k].mean()), runs=len(lat[k]), throughput=tput[k], threads=r.threads,
                           runtime=r.runtime, provider=r.provider)
            for k, r in runners.items()}
