"""`qdeploy compile RUN_DIR --target T`: offline (compiled ahead of time) forms of a run's verified models,
side by side with their online forms, the way seed 003 compared them.

For every (variant, target): the online form (the runtime compiles the graph when it opens it) and the offline
artifact (compiled once, loaded without the compiler). Each artifact is written into a scratch folder, checked
against its online form on real images (FP32: max |diff| <= 1e-5 x max(1, |output|); INT8: identical top-1,
or for images max |diff| <= 1e-3 x max(1, |output|)), and only then gets its final name under
RUN_DIR/compiled/<target>/. One table: compile seconds, load seconds (median of a few opens), the cold first
inference, batch-1 p50/p99 and throughput (interleaved in one process), and quality on the verification images
against the ORT FP32 reference. Written as compiled/compile.json and compiled/compile.md.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import atomic_path, model_bytes, read_info, write_json
from ..bench import BenchConfig, BenchResult, Runner, benchmark_many, cpu_name, default_batches
from ..compare import compare_outputs
from ..errors import ConfigError, ModelFileError, QuantizeError
from ..formats.keys import sha256
from ..manifest import load_run_manifest, run_eval_images, versions
from ..results import RunResult, VariantResult
from ..targets import DEFAULT_TARGET, OPENVINO_CPU, Session, check_targets, get_target, open_session, run_batched
from ..tasks import get_task
from .compilers import COMPILERS, CompileContext, get_compiler

FP32_TOL = 1e-5   # an FP32 offline form against its online one, relative to the largest output


@dataclass
class CompileConfig:
    targets: tuple[str, ...] = (OPENVINO_CPU,)
    variants: tuple[str, ...] | None = None     # None: every verified variant the target can take
    verify_images: int = 128                    # real evaluation images the offline form is checked on
    loads: int = 3                              # load time = median of this many opens
    bench: BenchConfig = field(default_factory=lambda: BenchConfig(runs=100))
    threads: int | None = None

    def __post_init__(self):
        self.targets = tuple(self.targets)
        unknown = [t for t in self.targets if t not in COMPILERS]
        if not self.targets or unknown:
            raise ConfigError(f"unknown compile target {', '.join(unknown) or '(none)'}; use one or more of "
                              f"{', '.join(COMPILERS)}")
        check_targets(self.targets, online=False)
        if self.verify_images < 1 or self.loads < 1:
            raise ConfigError("--verify-images and --loads must be at least 1")


@dataclass
class CompiledForm:
    """One row: a variant on a target, online or offline."""

    variant: str
    target: str
    mode: str                         # online | offline
    file: str                         # relative to the run directory
    status: str = "ok"                # ok | failed (offline file not written) | skipped (target cannot take it)
    reason: str | None = None
    size_bytes: int | None = None
    runtime: str = ""
    compile_s: float | None = None    # offline: ahead-of-time compilation
    load_s: float | None = None       # open the file ready to run (online: includes graph compilation)
    first_ms: float | None = None     # the first, cold batch-1 inference after opening
    vs_online: dict | None = None     # offline vs its online form: n, agreement, rel_l2, max_abs_diff
    metrics: dict | None = None       # on the verification images, vs labels and the ORT FP32 reference
    bench: BenchResult | None = None


@dataclass
class CompileResult:
    run_dir: str
    images: int
    rows: list[CompiledForm]
    machine: dict
    reference: str = "fp32 @ ort-cpu online"

    def to_dict(self) -> dict:
        return asdict(self)

    def row(self, variant: str, target: str, mode: str) -> CompiledForm | None:
        return next((r for r in self.rows if (r.variant, r.target, r.mode) == (variant, target, mode)), None)


def _timed_open(open_fn, x1: np.ndarray, loads: int) -> tuple[Session, float, float]:
    """Open `loads` times; the median load seconds and cold first-inference ms; the last session stays open."""
    load, first, s = [], [], None
    for _ in range(loads):
        s = None
        t0 = time.perf_counter()
        s = open_fn()
        load.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        s.run(x1)
        first.append((time.perf_counter() - t0) * 1e3)
    return s, statistics.median(load), statistics.median(first)


def _verify(kind: str, task: str, online: np.ndarray, offline: np.ndarray) -> tuple[dict, str | None]:
    d = compare_outputs(online, offline)
    scale = max(1.0, float(np.abs(online).max()))
    if kind == "fp32":
        bad = d.max_abs_diff > FP32_TOL * scale and f"max |diff| {d.max_abs_diff:.3g} > {FP32_TOL * scale:.3g}"
    else:   # an INT8 form: the task says what must hold
        bad = get_task(task).offline_mismatch(d, scale)
    return d.as_dict(), (bad or None)


def _checkpoint(man: dict) -> dict | None:
    return (man.get("inputs") or {}).get("checkpoint")


def _torch_model_builder(run_dir: Path, man: dict):
    """(fresh=False) -> the run's PyTorch model, from the checkpoint the manifest names (its sha256 checked once).
    fresh=True loads it again: the online form's load time is building the module and loading the weights."""
    from ..models import load_model

    cache = {}

    def build(fresh: bool = False):
        ck = _checkpoint(man)
        if ck is None:
            raise ConfigError("the run started from an ONNX file: there is no PyTorch model to compile")
        if "checked" not in cache:
            if not Path(ck["path"]).is_file() or sha256(ck["path"]) != ck["sha256"]:
                raise ModelFileError(f"checkpoint {ck['path']} is missing or changed since the run (sha256 "
                                     "differs); re-run 'qdeploy run' on it")
            cache["checked"] = True
            info = read_info(run_dir / "fp32.onnx")
            cache["arch"], cache["size"] = info.extra.get("arch"), info.preprocess.size if info.preprocess else None
        if fresh or "model" not in cache:
            kwargs = man["stages"]["source"]["config"].get("arch_kwargs") or None
            cache["model"] = load_model(cache["arch"], ck["path"], arch_kwargs=kwargs, input_size=cache["size"])
        return cache["model"]

    return build


def _chosen(rep: RunResult, names) -> list[VariantResult]:
    ok = [v for v in rep.variants if v.ok and v.file]
    if names is None:
        return ok
    missing = [n for n in names if rep.get(n) is None or not rep.get(n).ok]
    if missing:
        raise ConfigError(f"variant(s) {', '.join(missing)} not verified in this run; choose from "
                          f"{', '.join(v.name for v in ok)}")
    return [v for v in ok if v.name in names]


class _Rows:
    """The rows, the open sessions the bench times, and the scoring of every form's outputs."""

    def __init__(self, rep: RunResult, x, labels, names, ref, threads):
        self.rep, self.x, self.labels, self.names, self.ref, self.threads = rep, x, labels, names, ref, threads
        self.task = get_task(rep.task)
        self.rows: list[CompiledForm] = []
        self.runners: dict[str, Runner] = {}

    def score(self, out: np.ndarray) -> dict:
        s = self.task.scorer(self.rep.classes, self.labels is not None, with_reference=True, names=self.names)
        s.update(out, self.labels, self.ref)
        return s.result().as_dict()

    def add(self, row: CompiledForm, s: Session | None = None) -> CompiledForm:
        self.rows.append(row)
        if s is not None:
            self.runners[f"{row.variant}@{row.target}/{row.mode}"] = Runner(
                fn=s.run, size_bytes=row.size_bytes or 0, runtime=s.runtime, provider=s.provider, threads=s.threads)
        return row


def _online(rows: _Rows, comp, v: VariantResult, ctx: CompileContext, loads: int) -> tuple[CompiledForm, np.ndarray]:
    x1 = rows.x[:1]
    s, load_s, first_ms = _timed_open(lambda: comp.online(v, ctx), x1, loads)
    out = run_batched(s, rows.x)
    size = model_bytes(ctx.run_dir / v.file) if not comp.from_checkpoint else Path(ctx.checkpoint["path"]).stat().st_size
    row = rows.add(CompiledForm(variant=v.name, target=comp.target, mode="online",
                                file=v.file if not comp.from_checkpoint else ctx.checkpoint["path"],
                                size_bytes=size, runtime=s.runtime, load_s=load_s, first_ms=first_ms,
                                metrics=rows.score(out)), s)
    return row, out


def _offline(rows: _Rows, comp, v: VariantResult, ctx: CompileContext, online: np.ndarray, loads: int, log
             ) -> CompiledForm:
    """Build into a scratch folder, verify against the online outputs, then give the files their names."""

    out_dir = ctx.run_dir / "compiled" / comp.target
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / (Path(v.file).stem + comp.suffix)
    rel = str(final.relative_to(ctx.run_dir))
    facts = {"target": comp.target, "from": v.file, "from_sha256": sha256(ctx.run_dir / v.file),
             "cpu": cpu_name(), "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    row = CompiledForm(variant=v.name, target=comp.target, mode="offline", file=rel)
    with tempfile.TemporaryDirectory(prefix=".compile-", dir=out_dir) as tmp:
        t0 = time.perf_counter()
        try:
            files = comp.build(v, ctx, Path(tmp) / final.name, facts)
        except (ModelFileError, QuantizeError) as exc:
            row.status, row.reason = "failed", str(exc)
            return rows.add(row)
        row.compile_s = time.perf_counter() - t0
        target = get_target(comp.target)
        s, row.load_s, row.first_ms = _timed_open(lambda: target.open(files[-1], threads=ctx.threads), rows.x[:1],
                                                  loads)
        got = run_batched(s, rows.x)
        row.vs_online, bad = _verify(v.kind, rows.rep.task, online, got)
        if bad:
            row.status, row.reason = "failed", f"offline form disagrees with the online one: {bad}; not written"
            log(f"compile {v.name} for {comp.target}: FAILED ({bad})")
            return rows.add(row)
        for f in files:
            os.replace(f, out_dir / f.name)
    row.metrics, row.size_bytes, row.runtime = rows.score(got), final.stat().st_size, s.runtime
    del s
    log(f"compile {v.name} for {comp.target}: {rel} ({row.size_bytes / 1e6:.1f} MB) in {row.compile_s:.1f}s, "
        f"verified on {len(rows.x)} images (max |diff| vs online {row.vs_online['max_abs_diff']:.2g})")
    return rows.add(row, target.open(final, threads=ctx.threads))


def compile_run(run_dir: str | Path, cfg: CompileConfig | None = None, data_root: str | None = None,
                log=print) -> CompileResult:
    """Compile a run's verified variants for each target, verify, time online vs offline; write the table."""

    cfg = cfg or CompileConfig()
    run_dir = Path(run_dir)
    rep = RunResult.load(run_dir / "report.json")
    man = load_run_manifest(run_dir)
    chosen = _chosen(rep, cfg.variants)
    x, labels, names = run_eval_images(man, cfg.verify_images, data_root)
    ref_session = open_session(run_dir / "fp32.onnx", cfg.threads)
    ref = run_batched(ref_session, x)
    rows = _Rows(rep, x, labels, names, ref, cfg.threads)
    ctx = CompileContext(run_dir=run_dir, example=x, threads=cfg.threads, torch_model=_torch_model_builder(run_dir, man),
                         checkpoint=_checkpoint(man))
    log(f"compile: {len(chosen)} variant(s) x {', '.join(cfg.targets)}, verified on {len(x)} evaluation images")
    for target in dict.fromkeys((DEFAULT_TARGET, *cfg.targets)):
        comp = get_compiler(target)
        for v in chosen:
            if target not in cfg.targets and v.name != "fp32":
                continue  # the ORT FP32 online row is the reference of every table
            reason = comp.refuse(v, ctx)
            if reason:
                if target in cfg.targets:
                    rows.add(CompiledForm(variant=v.name, target=target, mode="offline", file="", status="skipped",
                                          reason=reason))
                continue
            _, online = _online(rows, comp, v, ctx, cfg.loads)
            if target in cfg.targets:
                _offline(rows, comp, v, ctx, online, cfg.loads, log)
    del ref_session
    _bench(rows, x, cfg.bench, log)
    res = CompileResult(run_dir=str(run_dir), images=len(x), rows=rows.rows,
                        machine={"cpu": cpu_name(), "cores": os.cpu_count()})
    write_json(run_dir / "compiled" / "compile.json", res.to_dict())

    with atomic_path(run_dir / "compiled" / "compile.md") as tmp:
        tmp.write_text(table(res) + "\n")
    return res


def _bench(rows: _Rows, x: np.ndarray, cfg: BenchConfig, log) -> None:
    most = max(cfg.batch_sizes or default_batches(x.shape[-1]))
    sample = np.resize(x, (most,) + x.shape[1:]) if len(x) < most else x[:most]
    results = benchmark_many(rows.runners, np.ascontiguousarray(sample), cfg)
    for row in rows.rows:
        key = f"{row.variant}@{row.target}/{row.mode}"
        if key in results:
            row.bench = results[key]
            log(f"bench {key}: p50 {row.bench.p50_ms:.2f} ms, p99 {row.bench.p99_ms:.2f} ms ({row.runtime})")


def _fmt(v, f: str, none: str = "") -> str:
    return none if v is None else format(v, f)


def table(res: CompileResult) -> str:
    """Markdown: every form of every variant on every target, online beside offline, ratios to ORT FP32."""
    ref = res.row("fp32", DEFAULT_TARGET, "online")
    base = ref.bench.p50_ms if ref is not None and ref.bench else None
    batches = sorted({b for r in res.rows if r.bench for b in r.bench.throughput})
    image = any(r.metrics and "psnr_mean" in r.metrics for r in res.rows)
    quality = ["PSNR dB vs ORT FP32", "worst dB"] if image else ["top-1", "agree vs ORT FP32"]
    head = (["variant", "target", "form", "runtime", "MB", "compile s", "load s", "first ms", "p50 ms", "p99 ms",
             "x ORT FP32"] + [f"img/s b{b}" for b in batches] + quality + ["max |diff| vs online"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res.rows:
        if r.status != "ok":
            lines.append(f"| {r.variant} | {r.target} | {r.mode} | {r.status.upper()}: {r.reason} |"
                         + " |" * (len(head) - 4))
            continue
        b, m = r.bench, r.metrics or {}
        q = ([_fmt(m.get("psnr_mean"), ".2f", "ref"), _fmt(m.get("psnr_min"), ".2f", "ref")] if image else
             [_fmt(m.get("top1"), ".2%", "n/a"), _fmt(m.get("agreement"), ".2%")])
        cells = [r.variant, r.target, r.mode, r.runtime, _fmt(r.size_bytes and r.size_bytes / 1e6, ".2f"),
                 _fmt(r.compile_s, ".1f"), _fmt(r.load_s, ".3f"), _fmt(r.first_ms, ".1f"),
                 _fmt(b and b.p50_ms, ".2f"), _fmt(b and b.p99_ms, ".2f"),
                 _fmt(base / b.p50_ms if b and base else None, ".2f") + ("x" if b and base else "")]
        cells += [_fmt(b.throughput.get(bs) if b else None, ".0f") for bs in batches]
        cells += q + [_fmt((r.vs_online or {}).get("max_abs_diff"), ".2g")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\n{res.images} verification images; latency interleaved in one process ({res.machine['cpu']}, "
                 f"{res.machine['cores']} cores); load s = median of opens; x ORT FP32 = p50 speedup over the "
                 "ORT FP32 online row.")
    return "\n".join(lines)


__all__ = ["CompileConfig", "CompileResult", "CompiledForm", "compile_run", "table"]
