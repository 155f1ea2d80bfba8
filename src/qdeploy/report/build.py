"""Turn report.json into the tables the seeds wrote by hand, plus plots, in Markdown and HTML."""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import QDeployError
from ..runtime import atomic_path
from . import plots


@dataclass
class ReportConfig:
    title: str = "qdeploy report"
    confusion_plots: bool = True


def _ok(rows):
    return [r for r in rows if r.get("status") == "ok" and r.get("metrics") and r.get("bench")]


def comparison_rows(data: dict) -> list[dict]:
    """One flat row per variant with sizes, accuracy and latency relative to FP32."""
    rows = _ok(data["variants"])
    fp32 = next((r for r in rows if r["kind"] == "fp32"), None)
    out = []
    for r in rows:
        m, b = r["metrics"], r["bench"]
        row = {"name": r["name"], "size_mb": b["size_bytes"] / 1e6, "top1": 100 * m["top1"], "top5": 100 * m["top5"],
               "agreement": None if m.get("agreement") is None else 100 * m["agreement"], "rel_l2": m.get("rel_l2"),
               "p50_ms": b["p50_ms"], "p90_ms": b["p90_ms"], "p99_ms": b["p99_ms"], "throughput": b["throughput"]}
        if fp32:
            row["compression"] = fp32["bench"]["size_bytes"] / b["size_bytes"]
            row["drop_pt"] = 100 * (fp32["metrics"]["top1"] - m["top1"])
            row["speedup"] = fp32["bench"]["p50_ms"] / b["p50_ms"]
        out.append(row)
    return out


def _f(v, fmt):
    return "–" if v is None else format(v, fmt)


def markdown_table(data: dict) -> str:
    head = ("| variant | size MB | compression | top-1 % | drop pt | agreement % | rel-L2 | "
            "b1 p50 ms | p99 ms | speedup | img/s b1 | img/s b32 | img/s b256 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in comparison_rows(data):
        t = {int(k): v for k, v in r["throughput"].items()}
        lines.append(
            f"| {r['name']} | {r['size_mb']:.2f} | {_f(r.get('compression'), '.2f')}x | {r['top1']:.2f} | "
            f"{_f(r.get('drop_pt'), '+.2f')} | {_f(r['agreement'], '.2f')} | {_f(r['rel_l2'], '.4f')} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {_f(r.get('speedup'), '.2f')}x | "
            + " | ".join(_f(t.get(b), ".0f") for b in (1, 32, 256)) + " |"
        )
    return "\n".join(lines)


def torch_table(data: dict) -> str | None:
    """PyTorch-native INT8 models measured in PyTorch itself, beside their ONNX exports in ORT."""
    rows = [v for v in data["variants"] if v.get("status") == "ok" and v.get("torch", {}).get("bench")]
    if not any(v["kind"] != "fp32" for v in rows):
        return None
    fp32 = next((v for v in rows if v["kind"] == "fp32"), None)
    base = fp32["torch"]["bench"]["p50_ms"] if fp32 else None
    lines = ["| variant | runtime | size MB | top-1 % | loss | agreement % | b1 p50 ms | speedup vs torch FP32 | "
             "same model in ORT: b1 p50 ms |", "|---|---|---|---|---|---|---|---|---|"]
    for v in rows:
        t, m = v["torch"], v["torch"].get("metrics") or v["metrics"]
        agree = "–" if m.get("agreement") is None else f"{100 * m['agreement']:.2f}"
        lines.append(f"| {v['name']} | {t['bench']['runtime']} | {t['bench']['size_bytes'] / 1e6:.2f} | "
                     f"{100 * m['top1']:.2f} | {m['loss']:.4f} | {agree} | {t['bench']['p50_ms']:.2f} | "
                     f"{_f(base / t['bench']['p50_ms'] if base else None, '.2f')}x | {v['bench']['p50_ms']:.2f} |")
    return "\n".join(lines)


def paired_table(data: dict) -> str | None:
    """Each INT8 variant against FP32 on the same images: how many it breaks and fixes, and whether the
    net top-1 change is more than chance (exact McNemar test)."""
    rows = [v for v in data["variants"] if v.get("status") == "ok" and (v.get("metrics") or {}).get("paired")]
    if not rows:
        return None
    lines = ["| variant | FP32 right, INT8 wrong | INT8 right, FP32 wrong | net top-1 pt | McNemar p | verdict |",
             "|---|---|---|---|---|---|"]
    for v in rows:
        p = v["metrics"]["paired"]
        lines.append(f"| {v['name']} | {p['only_ref']} | {p['only_this']} | {p['diff_pt']:+.2f} | {p['p_value']:.3f} | "
                     f"{_verdict(p)} |")
    return "\n".join(lines)


def _verdict(p: dict, alpha: float = 0.05) -> str:
    if p["p_value"] >= alpha:
        return "no detectable difference"
    return "better" if p["diff_pt"] > 0 else "worse"


def _warnings(data: dict) -> list[str]:
    notes = []
    rows = {r["name"]: r for r in comparison_rows(data)}
    for v in data["variants"]:
        if v.get("status") != "ok":
            notes.append(f"**{v['name']}: FAILED / NOT WRITTEN** — {v.get('error', 'unknown error')}")
    for name, r in rows.items():
        if name == "fp32":
            continue
        if r.get("speedup") is not None and r["speedup"] < 1:
            notes.append(f"**{name} is slower than FP32 on this machine**: {r['p50_ms']:.2f} ms vs FP32 "
                         f"({1 / r['speedup']:.1f}x slower at batch 1). Do not deploy it here for speed.")
        if r.get("agreement") is not None and r["agreement"] < 90:
            notes.append(f"**{name} collapsed**: agreement with FP32 only {r['agreement']:.1f} %.")
    return notes


def _plots(data: dict, out: Path, cfg: ReportConfig) -> dict[str, Path]:
    rows = _ok(data["variants"])
    pdir = out / "plots"
    made = {"size": plots.size_plot(rows, pdir / "size.png"),
            "latency": plots.latency_plot(rows, pdir / "latency.png"),
            "accuracy_vs_latency": plots.scatter_plot(rows, pdir / "accuracy_vs_latency.png")}
    for extra in ("search_pareto", "sensitivity"):
        if (pdir / f"{extra}.png").is_file():
            made[extra] = pdir / f"{extra}.png"
    if cfg.confusion_plots:
        for r in rows:
            made[f"confusion_{r['name']}"] = plots.confusion_plot(r, data["classes"], pdir / f"confusion_{r['name']}.png")
    return made


def _qat_section(v: dict) -> list[str]:
    """QAT's per-epoch table; epoch 0 is the PTQ starting point, and the chosen epoch is marked."""
    h = v["qat_history"]
    trained = [r for r in h if r["epoch"] > 0]
    chosen = v.get("qat_epoch", trained[-1]["epoch"])  # runs from --qat-from may not record it
    lines = [f"QAT `{v['name']}`: {len(trained)} epoch(s) on {trained[-1]['images']} training images "
             f"({trained[-1]['device']}); returned the INT8 model of epoch {chosen}"
             + (" (the PTQ starting point: no trained epoch validated better)" if chosen == 0 else "") + ".", ""]
    for rt, p in (v.get("vs_ptq") or {}).items():
        lines += [f"Against `pt-ptq` ({rt}), same evaluation images: QAT alone right on {p['only_this']}, PTQ alone "
                  f"right on {p['only_ref']}; net {p['diff_pt']:+.2f} pt, McNemar p = {p['p_value']:.3f} "
                  f"({_verdict(p)}).", ""]
    if any("val_top1" in r for r in h):
        lines += ["| epoch | train loss | train acc % | val top-1 % | val agreement % | val KL(FP32‖INT8) | chosen |",
                  "|---|---|---|---|---|---|---|"]
        for r in h:
            tl = f"{r['train_loss']:.4f}" if "train_loss" in r else "– (PTQ start)"
            ta = f"{100 * r['train_acc']:.2f}" if "train_acc" in r else "–"
            lines.append(f"| {r['epoch']} | {tl} | {ta} | {100 * r['val_top1']:.2f} | {100 * r['val_agreement']:.2f} | "
                         f"{r['val_kl_fp32']:.5f} | {'✓' if r['epoch'] == chosen else ''} |")
        lines.append("")
    return lines


def _markdown(data: dict, images: dict[str, Path], out: Path, cfg: ReportConfig) -> str:
    env = data.get("environment", {})
    parts = [f"# {cfg.title}", "",
             f"Evaluated on **{data['data']['eval_images']}** images of `{data['data']['eval_source']}`; "
             f"calibrated on {data['data']['calib_images']} class-balanced images of `{data['data']['calib_source']}`.",
             f"Machine: {env.get('cpu', '?')}, {env.get('threads', '?')} ORT threads, {env.get('runtime', '')} "
             f"({env.get('provider', '')}). Latency: batch 1, p50/p99 over {env.get('runs', '?')} runs after warm-up.",
             "", markdown_table(data), ""]
    warns = _warnings(data)
    if warns:
        parts += ["## Warnings", ""] + [f"- {w}" for w in warns] + [""]
    pt = paired_table(data)
    if pt:
        parts += ["## Accuracy change vs FP32, image by image", "",
                  "A top-1 difference between two models on the same images is only evidence when the images "
                  "one model alone gets right clearly outnumber the other's (exact McNemar test, p < 0.05).", "", pt, ""]
    best = data.get("recommended")
    if best:
        parts += [f"**Recommended INT8 variant on this machine: `{best}`** (fastest that keeps accuracy within "
                  f"{data.get('max_drop_pt', 1.0)} pt of FP32).", ""]
    tt = torch_table(data)
    if tt:
        parts += ["## PyTorch-native INT8 (measured in PyTorch, same process)", "", tt, ""]
        for v in data["variants"]:
            if v.get("qat_history"):
                parts += _qat_section(v)
            if v.get("pot_scales"):
                p = v["pot_scales"]
                parts += [f"PoT `{v['name']}`: all {p['count']} scales in the ONNX file are exact powers of two "
                          f"(2^{p['min_exp']} .. 2^{p['max_exp']}).", ""]
    auto = next((v for v in data["variants"] if v.get("search")), None)
    if auto:
        a = auto["search"]
        parts += ["## Auto-quantization", "",
                  f"Budget {a['budget_pt']:.2f} pt, measured as {a['metric']} on a validation split carved from the "
                  f"calibration split (FP32 top-1 there {100 * a['fp32_val_top1']:.2f} %"
                  + ("; the model has seen these images, so INT8/FP32 disagreement, an upper bound on the drop, is "
                     "the measure" if a["metric"] == "disagreement" else "") + f"); {a['candidates']} candidates measured in "
                  f"{a['seconds']:.0f} s. " + (f"Chose `{a['chosen']}`: validation drop {a['chosen_drop_pt']:.2f} pt, "
                                             f"{a['fp32_nodes_kept']} node(s) kept in FP32." if a["met_budget"]
                                             else f"**{a['message']}**"),
                  "Every candidate: `search.json`. Most sensitive nodes: " +
                  ", ".join(f"`{r['node']}` (+{r['added_error']:.3f})" for r in a["top_sensitive"]), ""]
    parts += ["## Plots", ""] + [f"![{k}]({p.relative_to(out).as_posix()})" for k, p in images.items()] + [""]
    parts += ["## Per-class top-1 (%)", "", _per_class_table(data), ""]
    return "\n".join(parts)


def _per_class_table(data: dict) -> str:
    rows = _ok(data["variants"])
    lines = ["| class | " + " | ".join(r["name"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for c in data["classes"]:
        vals = [_f(100 * r["metrics"]["per_class"][c], ".1f") if c in r["metrics"]["per_class"] else "–" for r in rows]
        lines.append(f"| {c} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _html(md_text: str, images: dict[str, Path], out: Path, title: str) -> str:
    """Minimal Markdown -> HTML for the shapes we write (headings, tables, bullets, images), images inlined."""
    body, table = [], []

    def flush():
        if table:
            cells = [[c.strip() for c in row.strip("|").split("|")] for row in table if not set(row) <= set("|-")]
            hdr = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(f"<table><thead><tr>{hdr}</tr></thead><tbody>{rows}</tbody></table>")
            table.clear()

    by_rel = {p.relative_to(out).as_posix(): p for p in images.values()}
    for line in md_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("- "):
            body.append(f"<p class='warn'>{_inline(line[2:])}</p>")
        elif line.startswith("!["):
            alt, rel = line[2:].split("](")
            data64 = base64.b64encode(by_rel[rel.rstrip(")")].read_bytes()).decode()
            body.append(f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data64}'></figure>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:14px;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}.warn{color:#a40000}"
             "figure{display:inline-block;margin:.5em}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>")


def _inline(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def report(report_json: str | Path, out: str | Path | None = None, cfg: ReportConfig | None = None) -> dict[str, Path]:
    """Write report.md, report.html and plots/ next to (or into `out` from) a report.json."""
    cfg = cfg or ReportConfig()
    report_json = Path(report_json)
    if report_json.is_dir():
        report_json = report_json / "report.json"
    if not report_json.is_file():
        raise QDeployError(f"{report_json} not found; run 'qdeploy run' (or evaluate + bench) first")
    data = json.loads(report_json.read_text())
    out = Path(out) if out else report_json.parent
    if not _ok(data.get("variants", [])):
        raise QDeployError(f"{report_json} has no evaluated and benchmarked variant to report")
    images = _plots(data, out, cfg)
    md = _markdown(data, images, out, cfg)
    paths = {"md": out / "report.md", "html": out / "report.html"}
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(md)
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(_html(md, images, out, cfg.title))
    return {**paths, **images}
