"""The tables the seeds wrote by hand, from a typed RunResult."""
from __future__ import annotations

from ..results import KindError, RunResult, SearchSummary, TensorError, VariantResult
from ..targets import DEFAULT_TARGET
from ..tasks import get_task
from ..tasks.base import fmt, pct
from ..tasks.classification import Paired


def comparison_rows(res: RunResult) -> list[dict]:
    """One flat row per measured variant: size, latency and throughput, relative to FP32 (the task's quality columns
    come from its metrics, see markdown_table)."""
    fp32 = res.fp32
    out = []
    for v in (v for v in res.variants if v.measured):
        b = v.bench
        label = v.name if v.target == DEFAULT_TARGET else f"{v.name} ({v.target})"
        row = {"name": label, "kind": v.kind, "variant": v, "size_mb": b.size_bytes / 1e6, "agreement": None,
               "p50_ms": b.p50_ms, "p90_ms": b.p90_ms, "p99_ms": b.p99_ms, "throughput": b.throughput}
        if getattr(v.metrics, "agreement", None) is not None:
            row["agreement"] = 100 * v.metrics.agreement
        if fp32:
            row["compression"] = fp32.bench.size_bytes / b.size_bytes
            row["speedup"] = fp32.bench.p50_ms / b.p50_ms
        out.append(row)
    return out


def markdown_table(res: RunResult) -> str:
    """Every variant: size, the task's quality columns, latency and throughput; refused variants with what they
    reached on their verification images."""
    task, rows = get_task(res.task), comparison_rows(res)
    ref = res.fp32.metrics if res.fp32 else None
    batches = sorted({b for r in rows for b in r["throughput"]})
    head = ("| variant | size MB | compression | " + " | ".join(c.head for c in task.columns)
            + " | b1 p50 ms | p99 ms | speedup | " + " | ".join(f"img/s b{b}" for b in batches) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        t, m = r["throughput"], r["variant"].metrics
        lines.append(f"| {r['name']} | {r['size_mb']:.2f} | {fmt(r.get('compression'), '.2f')}x | "
                     + " | ".join(c.cell(m, ref) for c in task.columns)
                     + f" | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {fmt(r.get('speedup'), '.2f')}x | "
                     + " | ".join(fmt(t.get(b), task.rate_format) for b in batches) + " |")
    return "\n".join(lines + _failed_rows(res, task, batches))


def _failed_rows(res: RunResult, task, batches) -> list[str]:
    """One row per refused variant: 'FAILED, not written' and, in the task's refused_column, the quality it reached
    on its verification images (agreement or PSNR)."""
    rows = []
    for v in res.variants:
        if v.ok:
            continue
        row = ["–"] * (len(task.columns) + 4) + ["–" for _ in batches]
        reached = task.refused(v.check) if v.check is not None else None
        if reached is not None:
            row[1 + task.refused_column] = f"{reached} (on {v.check.n} verification images)"
        rows.append(f"| {v.name} | FAILED, not written | " + " | ".join(row) + " |")
    return rows


def failure_section(res: RunResult) -> list[str]:
    """Why each refused variant collapsed: the error its quantized nodes add, by kind and worst first."""
    parts = []
    for v in res.variants:
        d = v.facts.diagnosis
        if v.ok or d is None or not d.by_kind:
            continue
        parts += [f"### Why `{v.name}` collapsed", "",
                  f"Relative output error each quantized node adds over what its input already carried, on "
                  f"{d.images} verification images, summed by kind of node:", ""]
        parts += _kind_table(d.by_kind)
        if d.worst:
            parts += ["| worst nodes | kind | output rel. error | added |", "|---|---|---|---|"] + [
                f"| `{w.node}` | {w.kind} | {w.output_rel_error:.3f} | {w.added_error:.3f} |"
                for w in d.worst] + [""]
    return (["## Refused variants: where the error comes from", ""] + parts) if parts else []


def torch_table(res: RunResult) -> str | None:
    """PyTorch-native INT8 models measured in PyTorch itself, beside their ONNX exports in ORT."""
    rows = [v for v in res.variants if v.ok and v.torch is not None and v.torch.bench is not None]
    if not any(v.kind != "fp32" for v in rows):
        return None
    fp32 = next((v for v in rows if v.kind == "fp32"), None)
    base = fp32.torch.bench.p50_ms if fp32 else None
    lines = ["| variant | runtime | size MB | top-1 % | loss | agreement % | b1 p50 ms | speedup vs torch FP32 | "
             "same model in ORT: b1 p50 ms |", "|---|---|---|---|---|---|---|---|---|"]
    for v in rows:
        t, m = v.torch, v.torch.metrics or v.metrics
        lines.append(f"| {v.name} | {t.bench.runtime} | {t.bench.size_bytes / 1e6:.2f} | {fmt(pct(m.top1), '.2f')} | "
                     f"{fmt(m.loss, '.4f')} | {fmt(pct(m.agreement), '.2f')} | {t.bench.p50_ms:.2f} | "
                     f"{fmt(base / t.bench.p50_ms if base else None, '.2f')}x | {v.bench.p50_ms:.2f} |")
    return "\n".join(lines)


def verdict(p: Paired, alpha: float = 0.05) -> str:
    if p.p_value >= alpha:
        return "no detectable difference"
    return "better" if p.diff_pt > 0 else "worse"


def paired_table(res: RunResult) -> str | None:
    """Each INT8 variant against FP32 on the same images: how many it breaks and fixes, and whether the
    net top-1 change is more than chance (exact McNemar test)."""
    rows = [v for v in res.variants if v.ok and v.metrics is not None and getattr(v.metrics, "paired", None)]
    if not rows:
        return None
    lines = ["| variant | FP32 right, INT8 wrong | INT8 right, FP32 wrong | net top-1 pt | McNemar p | verdict |",
             "|---|---|---|---|---|---|"]
    for v in rows:
        p = v.metrics.paired
        lines.append(f"| {v.name} | {p.only_ref} | {p.only_this} | {p.diff_pt:+.2f} | {p.p_value:.3f} | "
                     f"{verdict(p)} |")
    return "\n".join(lines)


def per_class_table(res: RunResult) -> str | None:
    rows = [v for v in res.variants if v.measured and getattr(v.metrics, "per_class", None)]
    if not rows:
        return None
    lines = ["| class | " + " | ".join(v.name for v in rows) + " |", "|---|" + "---|" * len(rows)]
    for c in res.classes:
        vals = [fmt(pct(v.metrics.per_class.get(c)), ".1f") for v in rows]
        lines.append(f"| {c} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def qat_section(v: VariantResult) -> list[str]:
    """QAT's per-epoch table; epoch 0 is the PTQ starting point, and the chosen epoch is marked."""
    h = v.facts.qat_history
    trained = [r for r in h if r.epoch > 0]
    chosen = v.facts.qat_epoch if v.facts.qat_epoch is not None else trained[-1].epoch  # --qat-from may not say
    lines = [f"QAT `{v.name}`: {len(trained)} epoch(s) on {trained[-1].images} training images "
             f"({trained[-1].device}); returned the INT8 model of epoch {chosen}"
             + (" (the PTQ starting point: no trained epoch validated better)" if chosen == 0 else "") + ".", ""]
    for rt, p in v.facts.vs_ptq.items():
        lines += [f"Against `pt-ptq` ({rt}), same evaluation images: QAT alone right on {p.only_this}, PTQ alone "
                  f"right on {p.only_ref}; net {p.diff_pt:+.2f} pt, McNemar p = {p.p_value:.3f} "
                  f"({verdict(p)}).", ""]
    if any(r.val_top1 is not None for r in h):
        lines += ["| epoch | train loss | train acc % | val top-1 % | val agreement % | val KL(FP32‖INT8) | chosen |",
                  "|---|---|---|---|---|---|---|"]
        for r in h:
            tl = f"{r.train_loss:.4f}" if r.train_loss is not None else "– (PTQ start)"
            ta = f"{100 * r.train_acc:.2f}" if r.train_acc is not None else "–"
            lines.append(f"| {r.epoch} | {tl} | {ta} | {100 * r.val_top1:.2f} | {100 * r.val_agreement:.2f} | "
                         f"{r.val_kl_fp32:.5f} | {'✓' if r.epoch == chosen else ''} |")
        lines.append("")
    return lines


def _targets_note(a: SearchSummary) -> str:
    """A search over several targets: what each found, and which runtime the chosen file was picked for."""
    if len(a.targets) < 2:
        return ""
    found = "; ".join(f"{t}: `{p.chosen}` {p.p50_ms:.2f} ms" if p else f"{t}: none within budget"
                      for t, p in a.per_target.items())
    pick = f" The pick was timed and scored on **{a.chosen_target}**: deploy it there." if a.chosen_target else ""
    return f" Searched on {', '.join(a.targets)}, every candidate scored and timed on each ({found}).{pick}"


def _sensitive_nodes(a: SearchSummary) -> str:
    return "Every candidate: `search.json`. Most sensitive nodes: " + ", ".join(
        f"`{r.node}` ({r.kind or r.op}, +{r.added_error:.3f})" for r in a.top_sensitive)


def _image_auto_section(a: SearchSummary) -> list[str]:
    sizes = ", ".join(map(str, a.calib_sizes))
    head = (f"Budget: {a.floors} against the FP32 "
            f"outputs of {a.val_images} validation photos (disjoint from calibration and evaluation), and "
            f"faster than FP32 ({a.fp32_p50_ms or 0:.1f} ms); calibration sizes tried: {sizes} of "
            f"{a.calib_pool}; {a.candidates} candidates in {a.seconds:.0f} s. ")
    head += (f"Chose `{a.chosen}`: {a.chosen_psnr:.2f} dB mean, worst {a.chosen_psnr_min:.2f} dB, "
             f"{a.fp32_nodes_kept} node(s) kept in FP32." if a.met_budget else f"**{a.message}**")
    head += _targets_note(a)
    return ["## Auto-quantization", "", head, "", _sensitive_nodes(a), ""] + _kind_table(a.sensitivity_by_kind)


def auto_section(a: SearchSummary) -> list[str]:
    if a.metric == "psnr":
        return _image_auto_section(a)
    sizes = ", ".join(map(str, a.calib_sizes))
    return ["## Auto-quantization", "",
            f"Budget {a.budget_pt:.2f} pt, measured as {a.metric} on a validation split carved from the "
            + ("calibration split (label-free images: INT8/FP32 disagreement, an upper bound on the drop on any "
               "labelled set like them, is the measure" if a.label_free else
               f"calibration split (FP32 top-1 there {100 * a.fp32_val_top1:.2f} %"
               + ("; the model has seen these images, so INT8/FP32 disagreement, an upper bound on the drop, is "
                  "the measure" if a.metric == "disagreement" else ""))
            + f"); calibration sizes tried: {sizes} of {a.calib_pool}; {a.candidates} candidates measured in "
            f"{a.seconds:.0f} s. " + (f"Chose `{a.chosen}`: validation drop {a.chosen_drop_pt:.2f} pt, "
                                      f"{a.fp32_nodes_kept} node(s) kept in FP32." if a.met_budget
                                      else f"**{a.message}**") + _targets_note(a),
            _sensitive_nodes(a), ""] + _kind_table(a.sensitivity_by_kind) + _tensor_lines(a.top_tensors)


def _tensor_lines(rows: list[TensorError]) -> list[str]:
    """The activations that cost the output most when quantized alone (what the fallback kept float first)."""
    if not rows:
        return []
    return ["Costliest activations, each quantized alone in the FP32 graph (output rel-L2 vs FP32; top-1 flips "
            "on the sensitivity images): " + ", ".join(
                f"`{r.tensor}` ({r.kind}, {r.output_rel_error:.4f}"
                + (f", {100 * r.flips:.1f} % flips" if r.flips is not None else "") + ")" for r in rows), ""]


def _kind_table(rows: list[KindError]) -> list[str]:
    """Relative output error each kind of quantized node adds, on the search's sensitivity batch."""
    if not rows:
        return []
    return ["| node kind | nodes | mean added error | max added error |", "|---|---|---|---|"] + [
        f"| {r.kind} | {r.nodes} | {r.mean_added_error:.4f} | {r.max_added_error:.4f} |" for r in rows] + [""]


def power_difference_section(res: RunResult) -> list[str]:
    """Seed 003's three models, FP32 and INT8, against the original FP32 output."""
    st = res.power_difference
    if st is None:
        return []
    rows = st.rows
    base = rows["fp32"].p50_ms
    lines = ["## Seed 003's custom operator: original vs PowerDifference (native, NumPy)", "",
             f"Each `(x - y)^2` (Sub then Pow) rewritten into one `PowerDifference` node "
             f"({st.rewritten_nodes.get('fp32', 0)} in the FP32 graph). native = {st.native}; numpy = {st.numpy}. "
             f"Outputs compared with the original FP32 model's on {st.images} evaluation images; INT8 = "
             f"`{st.int8_variant or 'none'}`.", "",
             "| model | file | PSNR dB vs original FP32 | worst | SSIM | max abs err | NumPy calls | b1 p50 ms | p99 ms | "
             "vs original FP32 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        lines.append(f"| {k} | `{r.file}` | {fmt(r.psnr, '.2f')} | {fmt(r.psnr_min, '.2f')} | {fmt(r.ssim, '.4f')} | "
                     f"{r.max_abs_diff:.2e} | {r.numpy_calls} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
                     f"{base / r.p50_ms:.2f}x |")
    if st.int8_variant is None:
        lines += ["", "No INT8 variant kept its Sub->Pow pairs (the quantizer wrapped them in Q/DQ), so only FP32 "
                  "is compared."]
    return lines + [""]


def targets_table(res: RunResult) -> str | None:
    """Every variant on every target of the run, timed in one process: quality (on the images each row was scored
    on), latency, throughput at the run's batch sizes, load and cold start."""
    rows = [v for v in res.variants if v.measured and (v.on or v.target != DEFAULT_TARGET)]
    if not rows:
        return None
    fp32, task = res.fp32, get_task(res.task)
    entries = [(v.name, e) for v in rows for e in
               [(v.target, v.bench.runtime, v.metrics, v.bench, None, None, None)]
               + [(t, r.runtime, r.metrics, r.bench, r.load_s, r.first_ms, r.reference) for t, r in v.on.items()]
               if e[3] is not None]
    batches = sorted({b for _, e in entries for b in e[3].throughput})
    qual = " | ".join(c.head for c in task.brief)
    rates = "".join(f" img/s b{b} |" for b in batches)
    failed = res.gate_failures()
    head = (f"| variant | target | runtime | images | {qual} | gate | b1 p50 ms | p99 ms | vs ORT FP32 |{rates} "
            "load s | first run ms |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]   # one delimiter cell per header cell (GFM needs it)

    def quality(m, ref):
        return " | ".join("–" if m is None else c.cell(m, ref or fp32.metrics) for c in task.brief)

    for name, (target, runtime, m, b, load, first, ref) in entries:
        rate = "".join(f" {fmt(b.throughput.get(k), task.rate_format)} |" for k in batches)
        gate = ("reference" if name == fp32.name and target == fp32.target else
                "**FAILED**" if (name, target) in failed else "–" if m is None else "ok")
        lines.append(f"| {name} | {target} | {runtime} | {'–' if m is None else m.n} | {quality(m, ref)} | {gate} | "
                     f"{b.p50_ms:.2f} | {b.p99_ms:.2f} | {fp32.bench.p50_ms / b.p50_ms:.2f}x |{rate} "
                     f"{fmt(load, '.2f')} | {fmt(first, '.1f')} |")
    lines += [f"| {v.name} | {t} | not run: {r.unsupported} |" + " |" * (head.count("|") - 4)
              for v in rows for t, r in v.on.items() if r.unsupported]
    ref = next((e[6] for _, e in entries if e[6] is not None), None)
    if ref is not None and ref.n < res.data.eval_images:
        lines += ["", f"Rows on {ref.n} images ran on a stratified sample of the {res.data.eval_images} "
                  f"evaluation images (--verify-images; the same graph on another runtime); their gate compares them "
                  f"with ORT FP32 on the same images: {task.describe(ref)}."]
    return "\n".join(lines)

