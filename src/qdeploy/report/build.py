"""Turn a run's typed result (report.json) into report.md, a self-contained report.html and plots."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import atomic_path
from ..errors import QDeployError
from ..results import RunResult, VariantResult
from ..targets import DEFAULT_TARGET, get_target
from ..tasks import get_task
from . import plots
from .html import to_html
from .tables import (
    auto_section,
    comparison_rows,
    failure_section,
    markdown_table,
    paired_table,
    per_class_table,
    power_difference_section,
    qat_section,
    targets_table,
    torch_table,
)


@dataclass
class ReportConfig:
    title: str = "qdeploy report"
    confusion_plots: bool = True


def _warnings(res: RunResult) -> list[str]:
    notes = [f"**{v.name}: FAILED / NOT WRITTEN** — {v.error or 'unknown error'}" for v in res.variants if not v.ok]
    for r in comparison_rows(res):
        if r["kind"] == "fp32":
            continue
        if r.get("speedup") is not None and r["speedup"] < 1:
            notes.append(f"**{r['name']} is slower than FP32 on this machine**: {r['p50_ms']:.2f} ms vs FP32 "
                         f"({1 / r['speedup']:.1f}x slower at batch 1). Do not deploy it here for speed.")
        if r.get("agreement") is not None and r["agreement"] < 90:
            notes.append(f"**{r['name']} collapsed**: agreement with FP32 only {r['agreement']:.1f} %.")
    # the same file may pass on one runtime and fail on another (a CIFAR-10 ViT's default INT8 file: 93.5 %
    # agreement with FP32 in ONNX Runtime, 43 % in OpenVINO 2026.4): each (variant, runtime) row is judged
    notes += [f"**{v} on {t}: FAILED the gate**, never recommended or bundled for {t}: {why}."
              for (v, t), why in res.gate_failures().items()]
    return notes


def _plots(res: RunResult, out: Path, cfg: ReportConfig) -> dict[str, Path]:
    rows = [v for v in res.variants if v.measured]
    pdir = out / "plots"
    made = {"size": plots.size_plot(rows, pdir / "size.png"),
            "latency": plots.latency_plot(rows, pdir / "latency.png"),
            **plots.task_plots(get_task(res.task), rows, pdir)}
    # figures earlier stages drew (the auto search; image grids of the variants' outputs)
    for extra in ["search_pareto", "sensitivity"] + [f"grid_{v.name}" for v in rows]:
        if (pdir / f"{extra}.png").is_file():
            made[extra] = pdir / f"{extra}.png"
    if cfg.confusion_plots and res.labelled:
        for v in rows:
            made[f"confusion_{v.name}"] = plots.confusion_plot(v, res.classes, pdir / f"confusion_{v.name}.png")
    return made


def _header(res: RunResult, cfg: ReportConfig) -> list[str]:
    d, env = res.data, res.environment
    scored = "" if d.labelled else " (no labels: every variant is scored against FP32)"
    return [f"# {cfg.title}", "",
            f"Evaluated on **{d.eval_images}** images of `{d.eval_source}`{scored}; calibrated on "
            f"{d.calib_images} {'class-balanced images' if d.labelled else 'photos'} of `{d.calib_source}`.",
            f"Machine: {env.cpu or '?'}{f' ({env.isa_summary()})' if env.isa is not None else ''}, "
            f"{env.threads or '?'} threads, {env.runtime or ''} "
            f"({env.provider or ''}). Latency: batch 1, p50/p99 over {env.runs or '?'} runs after warm-up.",
            "", markdown_table(res), ""]


def _sections(res: RunResult) -> list[str]:
    parts = []
    warns = _warnings(res)
    if warns:
        parts += ["## Warnings", ""] + [f"- {w}" for w in warns] + [""]
    parts += failure_section(res)
    pt = paired_table(res)
    if pt:
        parts += ["## Accuracy change vs FP32, image by image", "",
                  "A top-1 difference between two models on the same images is only evidence when the images "
                  "one model alone gets right clearly outnumber the other's (exact McNemar test, p < 0.05).", "", pt, ""]
    dep = res.recommended
    rec = res.get(dep.variant) if dep else None
    where = "" if dep is None or dep.target == DEFAULT_TARGET else \
        f" — deploy `{dep.file}` with the `{dep.target}` runtime"
    reduced = get_target(dep.target).reduced_float if rec is not None and rec.kind == "fp32" else None
    what = f"{reduced} float deployment (no INT8 file)" if reduced else "INT8 variant"
    task = get_task(res.task)
    rule = task.rule(task.gate(res.max_drop_pt, res.min_psnr), res.labelled)
    if res.recommended:
        parts += [f"**Recommended {what} on this machine: `{res.recommended}`**{where} (the fastest that {rule}).",
                  ""]
    elif res.fp32 is not None:
        parts += [f"**No INT8 or reduced-float deployment is recommended on this machine**: none is both faster than "
                  f"FP32 and {rule}. "
                  "Ship FP32 here.", ""]
    tt = torch_table(res)
    if tt:
        parts += ["## PyTorch-native INT8 (measured in PyTorch, same process)", "", tt, ""]
        for v in res.variants:
            parts += _torch_facts(v)
    tg = targets_table(res)
    if tg:
        parts += ["## Targets: the same files on every runtime of the run", "",
                  "Quality on another target is measured against ONNX Runtime's FP32 outputs (the reference); "
                  "latencies are interleaved in one process. OpenVINO's precision is in its runtime column (f32 "
                  "pinned: on CPUs with bf16 its default \"FP32\" is bf16).", "", tg, ""]
    parts += power_difference_section(res)
    auto = next((v for v in res.variants if v.facts.search is not None), None)
    if auto:
        parts += auto_section(auto.facts.search)
    return parts


def _torch_facts(v: VariantResult) -> list[str]:
    """A PyTorch recipe's own facts: QAT's epochs, the export's parity with its PyTorch model, PoT's scales."""
    f, parts = v.facts, []
    if f.qat_history:
        parts += qat_section(v)
    par = f.export_parity
    if par:
        how = (f"top-1 agreement {100 * par.agreement:.1f} %" if par.rule == "agreement" else
               f"top-1 agreement {100 * par.agreement:.1f} % (near-ties), logits rel-L2 {par.rel_l2:.3f} "
               f"within half its INT8 model's own {par.int8_vs_fp32_rel_l2:.3f} from FP32")
        vs = f.vs_fp32.agreement if f.vs_fp32 is not None else None
        parts += [f"Export of `{v.name}`: the ONNX file matches its PyTorch INT8 model on {par.verified_on} "
                  f"verification images ({how})" + (f"; against FP32 {100 * vs:.1f} % agreement." if vs is not None
                                                    else "."), ""]
    if f.pot_scales:
        p = f.pot_scales
        parts += [f"PoT `{v.name}`: all {p.count} scales in the ONNX file are exact powers of two "
                  f"(2^{p.min_exp} .. 2^{p.max_exp}).", ""]
    return parts


def _markdown(res: RunResult, images: dict[str, Path], out: Path, cfg: ReportConfig) -> str:
    parts = _header(res, cfg) + _sections(res)
    parts += ["## Plots", ""] + [f"![{k}]({p.relative_to(out).as_posix()})" for k, p in images.items()] + [""]
    pc = per_class_table(res)
    if pc:
        parts += ["## Per-class top-1 (%)", "", pc, ""]
    return "\n".join(parts)


def report(report_json: str | Path, out: str | Path | None = None, cfg: ReportConfig | None = None) -> dict[str, Path]:
    """Write report.md, report.html and plots/ next to (or into `out` from) a report.json."""
    cfg = cfg or ReportConfig()
    report_json = Path(report_json)
    if report_json.is_dir():
        report_json = report_json / "report.json"
    if not report_json.is_file():
        raise QDeployError(f"{report_json} not found; run 'qdeploy run' first")
    res = RunResult.load(report_json)
    out = Path(out) if out else report_json.parent
    if not any(v.measured for v in res.variants):
        raise QDeployError(f"{report_json} has no evaluated and benchmarked variant to report")
    images = _plots(res, out, cfg)
    md = _markdown(res, images, out, cfg)
    paths = {"md": out / "report.md", "html": out / "report.html"}
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(md)
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(to_html(md, images, out, cfg.title))
    return {**paths, **images}
